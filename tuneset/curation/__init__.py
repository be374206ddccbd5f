"""Curation: dedup, decontaminate, filter (every drop with a reason)."""

from tuneset.curation.audit import check_accounting
from tuneset.curation.curate import curate_rows

__all__ = ["check_accounting", "curate_rows"]
