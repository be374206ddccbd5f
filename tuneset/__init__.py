"""tuneset: choose the data a language model is fine-tuned on, by downstream evidence."""

__version__ = "0.1.0"
