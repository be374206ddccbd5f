"""Evaluation on target tasks, and paired statistics for comparing strategies on the same rows."""

from tuneset.evaluate.metrics import evaluate_task, normalise_answer
from tuneset.evaluate.stats import paired_bootstrap

__all__ = ["evaluate_task", "normalise_answer", "paired_bootstrap"]
