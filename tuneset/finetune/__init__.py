"""Fine-tuning on a selected subset: LoRA or full, response-only loss, seeded, length-grouped."""

from tuneset.finetune.sft import TrainResult, train

__all__ = ["TrainResult", "train"]
