"""Curation: decontaminate, dedup, correct and filter scored rows, every decision in the audit.

Order matters and is fixed: a row leaves for the first reason that applies (contamination, exact
duplicate, near-duplicate, unfixable label), then corrections (relabel, rewrite) apply to the rest,
and rule filters judge only rows that were not corrected (their scores describe the old response).
"""

from __future__ import annotations

import polars as pl

from tuneset.curation.audit import audit_frame
from tuneset.curation.dedup import contaminated, exact_duplicates
from tuneset.errors import TunesetError, UnknownNameError
from tuneset.recipe import CurateConfig, RelabelConfig


def curate_rows(
    rows: pl.DataFrame,
    cfg: CurateConfig,
    eval_rows: dict[str, pl.DataFrame],
    scores: pl.DataFrame | None = None,
    quarantined: list[dict] | None = None,
    rewrites: dict[str, tuple[str, str]] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (curated rows, audit). `rewrites`: id -> (new response, reason), from `propose_rewrites`."""
    table = rows.select("id").join(scores, on="id", how="left", maintain_order="left") if scores is not None else rows.select("id")
    drops: dict[str, str] = {}
    fixes: dict[str, tuple[str, str]] = {}
    if cfg.decontaminate:
        for i, where in contaminated(rows, eval_rows, cfg.decontaminate_ngram).items():
            drops.setdefault(i, f"contaminated: matches evaluation row {where}")
    if cfg.dedup:
        for i, first in exact_duplicates(rows).items():
            drops.setdefault(i, f"duplicate of {first}")
    if cfg.near_dedup is not None:
        need(table, "semdedup.duplicate_of", "semdedup.max_similarity")
        for i, of, sim in table.select("id", "semdedup.duplicate_of", "semdedup.max_similarity").iter_rows():
            if of and sim > cfg.near_dedup:
                drops.setdefault(i, f"near-duplicate of {of} (cosine {sim:.3f})")
    if cfg.relabel is not None:
        need(table, "label_quality.label_issue", "label_quality.suggested", "label_quality.suggested_prob", "label_quality.given_prob")
        _relabel(rows, table, cfg.relabel, drops, fixes)
    for i, (new, why) in (rewrites or {}).items():
        if i not in drops:
            fixes.setdefault(i, (new, why))
    for rule in cfg.filters:
        need(table, rule.column)
        for i, v in table.select("id", rule.column).iter_rows():
            if i in fixes:
                continue
            if v is None or v != v:
                raise TunesetError(f"filter column '{rule.column}' has no value for row '{i}'; score the same rows you curate")
            if rule.min is not None and v < rule.min:
                drops.setdefault(i, f"{rule.column}={v:.4g} below min {rule.min}")
            elif rule.max is not None and v > rule.max:
                drops.setdefault(i, f"{rule.column}={v:.4g} above max {rule.max}")
    records = []
    for r in rows.iter_rows(named=True):
        i = r["id"]
        action, reason, new = "kept", "passed all checks", None
        if i in drops:
            action, reason = "dropped", drops[i]
        elif i in fixes:
            (new, reason), action = fixes[i], "corrected"
        records.append({"id": i, "source": r["source"], "action": action, "reason": reason, "old_response": r["response"],
                        "new_response": new, "instruction": r["instruction"], "choices": r.get("choices"), "metadata": r.get("metadata")})
    records += [
        {"id": q.get("id"), "source": None, "action": "quarantined",
         "reason": f"{q['file']}:{q['line']}: field '{q['field']}': {q['reason']}"}
        for q in quarantined or []
    ]
    audit = audit_frame(records)
    if scores is not None:
        audit = audit.join(scores, on="id", how="left", maintain_order="left")
    curated = rows.filter(~pl.col("id").is_in(list(drops))).with_columns(
        pl.col("id").replace_strict({i: new for i, (new, _) in fixes.items() if i not in drops},
                                    default=pl.col("response"), return_dtype=pl.String).alias("response"))
    return curated, audit


def _relabel(rows: pl.DataFrame, table: pl.DataFrame, cfg: RelabelConfig, drops: dict, fixes: dict) -> None:
    cols = ["id", "label_quality.label_issue", "label_quality.suggested", "label_quality.suggested_prob", "label_quality.given_prob"]
    given = dict(rows.select("id", "response").iter_rows())
    for i, issue, new, p_new, p_old in table.select(cols).iter_rows():
        if not issue or i in drops:
            continue
        why = f"label issue: given '{given[i]}' (p={p_old:.2f}), model suggests '{new}' (p={p_new:.2f})"
        if p_new >= cfg.min_prob and new != given[i]:
            fixes[i] = (new, f"relabelled: {why}")
        elif cfg.drop_unsure:
            drops[i] = f"{why}, below min_prob {cfg.min_prob} to relabel"


def need(table: pl.DataFrame, *cols: str) -> None:
    for c in cols:
        if c not in table.columns:
            raise UnknownNameError("score column", c, [x for x in table.columns if x != "id"])
