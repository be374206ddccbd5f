"""Selection policies: choose a budget of rows from score columns (choosing is not curating)."""

from tuneset.selection.policy import apply_policy, budget_count, combined_score

__all__ = ["apply_policy", "budget_count", "combined_score"]
