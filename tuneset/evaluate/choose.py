"""Choosing on dev rows: one rule for the fine-tune sweep's settings and for the strategy a bench
recommends, so what is tuned and what is recommended answer the same question.

- The score pools every dev row of the *target* tasks (seeds averaged per row), so each row weighs
  the same: a mean of per-task means would let 20 sst2 rows (one row = 0.05) weigh as much as 77
  banking77 rows.
- Control tasks are a constraint, never part of the score: a candidate is out when its control dev
  score falls below the no-fine-tune model's by more than two standard errors of the paired
  difference. Scoring the control would aim at it, and the do-no-harm check would stop being one.
- Ties go to the lower mean gold-response loss on the same target rows (finer than accuracy on a
  few rows), then to the order given.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

DEV_COLUMNS = ("candidate", "task", "id", "score", "loss")


@dataclass(frozen=True)
class DevStanding:
    """One candidate on dev rows. `control_diff`/`control_se` are None without a control or base."""

    name: str
    score: float  # target tasks' dev rows pooled
    loss: float  # mean gold-response loss on those rows: the tie-break
    rows: int
    control_diff: float | None
    control_se: float | None

    @property
    def eligible(self) -> bool:
        return self.control_diff is None or self.control_diff + 2 * (self.control_se or 0.0) >= 0

    def control_words(self) -> str:
        if self.control_diff is None:
            return "-"
        se = "n/a" if self.control_se is None or math.isinf(self.control_se) else f"{2 * self.control_se:.3f}"
        return f"{self.control_diff:+.3f} ± {se}"


def dev_frame(candidate: str, examples: Mapping[str, str | Path]) -> pl.DataFrame:
    """One model's per-row dev results (task -> its examples.parquet) in the shape `rank_on_dev` reads."""
    return pl.concat([pl.read_parquet(p, columns=["id", "score", "loss"])
                      .select(candidate=pl.lit(candidate), task=pl.lit(task), id="id", score="score", loss="loss")
                      for task, p in examples.items()])


def per_row_means(dev: pl.DataFrame) -> pl.DataFrame:
    """`dev` with seeds (or any repeat of a row) averaged per row, so a row weighs the same in every candidate."""
    missing = [c for c in DEV_COLUMNS if c not in dev.columns]
    if missing:
        raise ValueError(f"dev results lack column(s) {missing}; need {list(DEV_COLUMNS)}")
    return dev.group_by("candidate", "task", "id", maintain_order=True).agg(pl.col("score", "loss").mean())


def paired_diff(rows: pl.DataFrame, a: str, b: str) -> tuple[float, float]:
    """Mean and standard error of a - b over the rows (of `per_row_means`) both candidates have."""
    paired = (rows.filter(pl.col("candidate") == a).select("task", "id", a=pl.col("score"))
              .join(rows.filter(pl.col("candidate") == b).select("task", "id", b=pl.col("score")), on=["task", "id"]))
    if paired.is_empty():
        raise ValueError(f"no dev rows shared by '{a}' and '{b}' (tasks: {sorted(set(rows['task']))})")
    d = (paired["a"] - paired["b"]).to_numpy()
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.inf


def rank_on_dev(dev: pl.DataFrame, controls: Collection[str] = (), base: str | None = None) -> list[DevStanding]:
    """Every candidate in `dev` but `base`, best first: eligible ones, by pooled target score, then
    lower loss. `dev` holds one row per (candidate, task, id[, seed]) with `score` and `loss`;
    `base` names the no-fine-tune candidate the controls are checked against (None: no check)."""
    per_row = per_row_means(dev)
    names = [n for n in per_row["candidate"].unique(maintain_order=True) if n != base]
    if base is not None and controls and base not in per_row["candidate"]:
        raise ValueError(f"base '{base}' has no dev rows; candidates: {names}")
    standings = []
    for name in names:
        target = per_row.filter(pl.col("candidate") == name, ~pl.col("task").is_in(list(controls)))
        if target.is_empty():
            raise ValueError(f"'{name}' has no dev rows on a target task (controls: {sorted(controls)})")
        diff, se = (paired_diff(per_row.filter(pl.col("task").is_in(list(controls))), name, base)
                    if base is not None and controls else (None, None))
        standings.append(DevStanding(name, float(target["score"].mean()), float(target["loss"].mean()),
                                     target.height, diff, se))
    order = sorted(range(len(standings)), key=lambda i: (not standings[i].eligible, -round(standings[i].score, 9),
                                                         round(standings[i].loss, 9), i))
    return [standings[i] for i in order]
