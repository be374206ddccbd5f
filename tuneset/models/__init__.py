"""Models: the embedded defaults (offline), user models, length-sorted batching, per-example losses,
per-example gradients. Import the submodules: the gradient math (`grads`, `lm`) needs only torch."""
