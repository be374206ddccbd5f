"""Curation: dedup, decontaminate, filter (every drop with a reason) and selection policies."""

from tuneset.curation.audit import check_accounting
from tuneset.curation.curate import curate_rows
from tuneset.curation.policy import apply_policy, budget_count, combined_score

__all__ = ["apply_policy", "budget_count", "check_accounting", "combined_score", "curate_rows"]
