"""Fine-tuning on a selected subset: LoRA or full, response-only loss, seeded, length-grouped."""

from tuneset.finetune.sft import TRAINED_FIELDS, TrainResult, train

__all__ = ["TRAINED_FIELDS", "TrainResult", "train"]
