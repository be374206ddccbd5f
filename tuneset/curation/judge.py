"""The judge-competence gate: curation trusts the reference model's verdicts (confidence filters,
rewrites) only where it has shown it can tell right answers from wrong ones.

The flow scores rows whose answers are known (`data.labels.known_answer_pairs`: the target tasks'
dev rows, given and spoiled) with each judging column and hands curation one AUROC per column.
Below `curate.judge_min_auroc` the step that reads that column is skipped, and the report says why.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from tuneset.recipe import CurateConfig, FilterRule

REWRITE = "rewrite"  # the rewrite step's verdict: its measure of the given response's confidence


def auroc(scores: np.ndarray, correct: np.ndarray) -> float:
    """P(a correct answer outscores a spoiled one), ties counting half: 0.5 is a coin."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(correct.astype(int), scores)) if 0 < correct.sum() < len(correct) else float("nan")


def judge_report(pairs: pl.DataFrame, scores: pl.DataFrame, columns: dict[str, str]) -> dict[str, float]:
    """AUROC on the known pairs of each gated column; `columns` maps the gated column to the
    column of `scores` that measures it (the same selector scored on the pairs)."""
    table = pairs.select("id", "correct").join(scores, on="id", how="left", maintain_order="left")
    return {gated: auroc(table[col].to_numpy(), table["correct"].to_numpy()) for gated, col in columns.items()}


def gate(cfg: CurateConfig, judge: dict[str, float], column: str) -> str | None:
    """Why a step must not act on `column`, or None when the judge passed (or was not measured)."""
    bar, score = cfg.judge_min_auroc, judge.get(column)
    if bar is None or score is None or score >= bar:
        return None
    return (f"skipped: on rows with known answers '{column}' tells right from wrong at AUROC {score:.2f}, "
            f"below curate.judge_min_auroc {bar}")


def applied_filters(cfg: CurateConfig, judge: dict[str, float]) -> list[FilterRule]:
    """The rule filters the gate lets act: the filter step applies these and the plot draws only
    their thresholds (a skipped filter's line read as if it had dropped the rows past it)."""
    return [rule for rule in cfg.filters if not gate(cfg, judge, rule.column)]


def gate_notes(cfg: CurateConfig, judge: dict[str, float]) -> list[str]:
    """Every step the gate turned off, for the report and the log."""
    used = [rule.column for rule in cfg.filters] + ([REWRITE] if cfg.rewrite is not None else [])
    return [f"{col}: {why}" for col in dict.fromkeys(used) if (why := gate(cfg, judge, col))]


def gate_lines(cfg: CurateConfig, judge: dict[str, float]) -> list[str]:
    """The report's judge-gate section: every measured column, skipped or applied, with its AUROC."""
    return [f"{col}: {why}" if (why := gate(cfg, judge, col)) else
            f"{col}: AUROC {score:.2f} on known answers, at or above {cfg.judge_min_auroc}: applied"
            for col, score in judge.items()]
