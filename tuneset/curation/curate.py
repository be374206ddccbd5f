"""Curation: dedup, decontaminate and rule filters over scored rows, all recorded in the audit."""

from __future__ import annotations

import polars as pl

from tuneset.curation.audit import audit_frame
from tuneset.curation.dedup import contaminated, exact_duplicates
from tuneset.errors import TunesetError, UnknownNameError
from tuneset.recipe import CurateConfig


def curate_rows(
    rows: pl.DataFrame,
    cfg: CurateConfig,
    eval_rows: dict[str, pl.DataFrame],
    scores: pl.DataFrame | None = None,
    quarantined: list[dict] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (curated rows, audit). The first reason that applies to a row is the one recorded."""
    reasons: dict[str, str] = {}
    if cfg.decontaminate:
        for i, where in contaminated(rows, eval_rows, cfg.decontaminate_ngram).items():
            reasons.setdefault(i, f"contaminated: matches evaluation row {where}")
    if cfg.dedup:
        for i, first in exact_duplicates(rows).items():
            reasons.setdefault(i, f"duplicate of {first}")
    if cfg.filters:
        table = rows.select("id").join(scores, on="id", how="left") if scores is not None else rows.select("id")
        for rule in cfg.filters:
            if rule.column not in table.columns:
                raise UnknownNameError("filter column", rule.column, [c for c in table.columns if c != "id"])
            for i, v in table.select("id", rule.column).iter_rows():
                if v is None or v != v:
                    raise TunesetError(f"filter column '{rule.column}' has no value for row '{i}'; score the same rows you curate")
                if rule.min is not None and v < rule.min:
                    reasons.setdefault(i, f"{rule.column}={v:.4g} below min {rule.min}")
                elif rule.max is not None and v > rule.max:
                    reasons.setdefault(i, f"{rule.column}={v:.4g} above max {rule.max}")
    records = [
        {"id": i, "source": s, "action": "dropped" if i in reasons else "kept",
         "reason": reasons.get(i, "passed all checks"), "old_response": r, "new_response": None}
        for i, s, r in rows.select("id", "source", "response").iter_rows()
    ]
    records += [
        {"id": q.get("id"), "source": None, "action": "quarantined",
         "reason": f"{q['file']}:{q['line']}: field '{q['field']}': {q['reason']}", "old_response": None, "new_response": None}
        for q in quarantined or []
    ]
    kept = rows.filter(~pl.col("id").is_in(list(reasons)))
    return kept, audit_frame(records)
