"""Evaluation on target tasks, and paired statistics for comparing strategies on the same rows."""

from tuneset.data.text import normalise_answer
from tuneset.evaluate.metrics import evaluate_task
from tuneset.evaluate.stats import seed_aware_diff

__all__ = ["evaluate_task", "normalise_answer", "seed_aware_diff"]
