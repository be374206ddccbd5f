"""Curation: run the recipe's steps over scored rows, every decision in the audit.

The built-in steps, in their default order: a row leaves for the first reason that applies
(contamination, exact duplicate, near-duplicate, unfixable label), then corrections (relabel,
rewrite) apply to the rest, and rule filters judge only rows that were not corrected (their scores
describe the old response). Steps only decide: proposals (a suggested label, a model's answer) are
score columns that selectors produced.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from tuneset.curation.audit import audit_frame
from tuneset.curation.dedup import contaminated, exact_duplicates
from tuneset.curation.judge import REWRITE, applied_filters, gate
from tuneset.curation.steps import CurationInput, CurationStep, Decisions, need, register_step, resolve_steps
from tuneset.data.labels import label_sets, same_format, to_answer_space
from tuneset.data.text import normalise
from tuneset.errors import TunesetError
from tuneset.recipe import CurateConfig

LABEL_COLUMNS = ("label_quality.label_issue", "label_quality.suggested", "label_quality.suggested_prob", "label_quality.given_prob")
REWRITE_COLUMNS = ("rewrite", "rewrite.proposed", "rewrite.proposed_confidence", "rewrite.gain")


def curate_rows(
    rows: pl.DataFrame,
    cfg: CurateConfig,
    eval_rows: dict[str, pl.DataFrame],
    scores: pl.DataFrame | None = None,
    quarantined: list[dict] | None = None,
    judge: dict[str, float] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (curated rows, audit). `judge`: AUROC per judging column on known answers; steps
    reading a column below `cfg.judge_min_auroc` are skipped (`curation.judge.gate_notes`)."""
    table = rows.select("id").join(scores, on="id", how="left", maintain_order="left") if scores is not None else rows.select("id")
    steps = resolve_steps(cfg)
    need(table, *(c for step in steps for c in step.columns(cfg)))
    data, decisions = CurationInput(rows, eval_rows, table, cfg, judge or {}), Decisions()
    for step in steps:
        step.run(data, decisions)
    decisions.settle()
    if cfg.dedup:
        _copies_made_by_corrections(rows, decisions)
    drops, fixes = decisions.drops, decisions.fixes
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
        pl.col("id").replace_strict({i: new for i, (new, _) in fixes.items()},
                                    default=pl.col("response"), return_dtype=pl.String).alias("response"))
    return curated, audit


def _copies_made_by_corrections(rows: pl.DataFrame, decisions: Decisions) -> None:
    """Exact dedup runs before corrections: a relabelled or rewritten row can become a copy of a
    row kept beside it (the same question, now the same answer), and both would train. The later
    of two such rows in input order leaves, as exact dedup would have dropped it."""
    kept = rows.filter(~pl.col("id").is_in(list(decisions.drops))).with_columns(
        pl.col("id").replace_strict({i: new for i, (new, _) in decisions.fixes.items()},
                                    default=pl.col("response"), return_dtype=pl.String).alias("response"))
    for i, first in exact_duplicates(kept).items():
        if i in decisions.fixes or first in decisions.fixes:
            decisions.fixes.pop(i, None)
            decisions.drops[i] = f"duplicate of {first} once corrected"


@register_step
class Decontaminate(CurationStep):
    """Rows that repeat an evaluation row's instruction (or, with `decontaminate_ngram`, share an n-gram)."""

    name, setting = "decontaminate", "decontaminate"

    def run(self, data: CurationInput, decisions: Decisions) -> None:
        for i, where in contaminated(data.rows, data.eval_rows, data.cfg.decontaminate_ngram).items():
            decisions.drop(i, f"contaminated: matches evaluation row {where}")


@register_step
class Dedup(CurationStep):
    """Exact duplicates (normalised instruction and response); the first row stays."""

    name, setting = "dedup", "dedup"

    def run(self, data: CurationInput, decisions: Decisions) -> None:
        for i, first in exact_duplicates(data.rows).items():
            decisions.drop(i, f"duplicate of {first}")
            decisions.copy_kept[i] = first


@register_step
class NearDedup(CurationStep):
    """SemDeDup near-duplicates above the `near_dedup` cosine, naming the row they copy."""

    name, setting = "near_dedup", "near_dedup"

    def columns(self, cfg: CurateConfig) -> list[str]:
        return ["semdedup.duplicate_of", "semdedup.max_similarity"]

    def selector_params(self, cfg: CurateConfig) -> dict[str, dict[str, Any]]:
        # SemDeDup's greedy pass decides which rows stay to be compared against, so a duplicate at
        # one cosine cannot be re-cut at another afterwards: the pass itself runs at near_dedup.
        return {"semdedup": {"threshold": cfg.near_dedup}}

    def run(self, data: CurationInput, decisions: Decisions) -> None:
        for i, of, sim in data.table.select("id", *self.columns(data.cfg)).iter_rows():
            if not of or sim <= data.cfg.near_dedup:  # scores made at another threshold still obey this one
                continue
            # Exact dedup keeps the first copy in input order, SemDeDup the first in id order: where
            # exact dedup dropped this row's original, the copy it kept stands in for it, and the
            # row that is that copy stays. An original another step drops, before or after this
            # one, leaves the row to be judged on its own (`Decisions.drop_copy`).
            kept = decisions.copy_kept.get(of, of)
            if kept == i or kept in decisions.drops:
                continue
            via = f", a copy of {of}" if kept != of else ""
            decisions.drop_copy(i, kept, f"near-duplicate of {kept} (cosine {sim:.3f}{via})")


@register_step
class Relabel(CurationStep):
    """Label issues: take `label_quality`'s suggestion when it is confident enough, else drop (`drop_unsure`)."""

    name, setting = "relabel", "relabel"

    def columns(self, cfg: CurateConfig) -> list[str]:
        return list(LABEL_COLUMNS)

    def run(self, data: CurationInput, decisions: Decisions) -> None:
        cfg = data.cfg.relabel
        given = dict(data.rows.select("id", "response").iter_rows())
        for i, issue, new, p_new, p_old in data.table.select("id", *LABEL_COLUMNS).iter_rows():
            if not issue or decisions.decided(i):
                continue
            why = f"label issue: given '{given[i]}' (p={p_old:.2f}), model suggests '{new}' (p={p_new:.2f})"
            if p_new >= cfg.min_prob and new != given[i]:
                decisions.fix(i, new, f"relabelled: {why}")
            elif cfg.drop_unsure:
                decisions.drop(i, f"{why}, below min_prob {cfg.min_prob} to relabel")


@register_step
class Rewrite(CurationStep):
    """Take the `rewrite` selector's model answer when its confidence beats the given one's by
    `margin` and it is an answer the row could have: one of its `choices`, one of its source's
    labels (closed-label sources), or else text in the original's format."""

    name, setting = "rewrite", "rewrite"

    def columns(self, cfg: CurateConfig) -> list[str]:
        return list(REWRITE_COLUMNS)

    def run(self, data: CurationInput, decisions: Decisions) -> None:
        if gate(data.cfg, data.judge, REWRITE):
            return
        margin = data.cfg.rewrite.margin
        rows = data.rows
        labels = label_sets(rows["source"].to_list(), rows["response"].to_list())
        choices = rows["choices"].to_list() if "choices" in rows.columns else [None] * rows.height
        given = {i: (src, resp, ch) for i, src, resp, ch in zip(rows["id"], rows["source"], rows["response"], choices)}
        for i, old, new, p_new, gain in data.table.select("id", *REWRITE_COLUMNS).iter_rows():
            if not new or gain < margin or decisions.decided(i):
                continue
            src, resp, ch = given[i]
            answer = in_answer_space(new, resp, ch, labels.get(src))
            if answer is not None and normalise(answer) != normalise(resp):  # "Positive" for "positive" is no fix
                decisions.fix(i, answer, f"rewritten: model answer confidence {p_new:.2f} vs given {old:.2f}")


def in_answer_space(proposal: str, original: str, choices: list[str] | None, labels: list[str] | None) -> str | None:
    """The proposal as an answer of the row's space, or None if it is not one."""
    if choices:
        return to_answer_space(proposal, choices)
    if labels:
        return to_answer_space(proposal, labels)
    return proposal if same_format(original, proposal) else None


@register_step
class Filters(CurationStep):
    """Rule filters: drop rows outside [min, max] of a score column; corrected rows are not judged."""

    name, setting = "filters", "filters"

    def columns(self, cfg: CurateConfig) -> list[str]:
        return [rule.column for rule in cfg.filters]

    def run(self, data: CurationInput, decisions: Decisions) -> None:
        for rule in applied_filters(data.cfg, data.judge):
            for i, v in data.table.select("id", rule.column).iter_rows():
                if i in decisions.fixes:
                    continue
                if v is None or v != v:
                    raise TunesetError(f"filter column '{rule.column}' has no value for row '{i}'; score the same rows you curate")
                if rule.min is not None and v < rule.min:
                    decisions.drop(i, f"{rule.column}={v:.4g} below min {rule.min}")
                elif rule.max is not None and v > rule.max:
                    decisions.drop(i, f"{rule.column}={v:.4g} above max {rule.max}")
