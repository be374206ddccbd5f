"""The strategy to recommend from an exported bench run, chosen on dev rows alone.

    python benchmarks/recommend.py benchmarks/results/bench_downstream

The rule:
- Candidates are the selection strategies: not the baselines (none, full), not the references.
- Their score is the dev score pooled over every dev row of the *target* tasks and every seed, so
  each dev row weighs the same. A mean of per-task means would let sst2's 20 dev rows (one row =
  0.05) weigh as much as banking77's 77.
- The control task (arc_easy: the pool holds no data for it) is a constraint, not part of the
  score. A strategy is out if its control dev score is below no fine-tune's by more than two
  standard errors of the paired difference. On 25 control rows this catches only a large harm; the
  test rows show the small ones. A tie on the score goes to the higher control dev score.
- Only seeds every candidate has finished count, so a run in progress compares like with like.
Test scores are printed beside the choice and never used. Writes `<export>/recommended.md`.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import polars as pl
from bench_args import export_examples

CONTROL = "arc_easy"
NOT_CANDIDATES = ("none", "full")


def _paired_vs_none(dev: pl.DataFrame, strategy: str) -> tuple[float, float]:
    """Mean and standard error of (strategy - none) on the control's dev rows, seeds averaged per row."""
    rows = (dev.filter(pl.col("task") == CONTROL, pl.col("strategy").is_in([strategy, "none"]))
            .group_by("strategy", "id").agg(pl.col("score").mean())
            .pivot(on="strategy", index="id", values="score").drop_nulls())
    d = (rows[strategy] - rows["none"]).to_numpy()
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.inf


def recommend(export: Path) -> str:
    ex = export_examples(export)
    candidates = sorted(s for s in ex["strategy"].unique() if s not in NOT_CANDIDATES and "reference" not in s)
    seeds = sorted(set.intersection(*(set(ex.filter(pl.col("strategy") == s)["seed"]) for s in candidates)))
    ex = ex.filter(pl.col("seed").is_in([*seeds, "-"]))  # "-": the seedless no-fine-tune arm
    dev, test = ex.filter(pl.col("split") == "dev"), ex.filter(pl.col("split") == "test")
    lines = ["| strategy | target dev rows (pooled) | control dev vs none (± 2 se) | eligible | mean test score, target tasks | control test vs none |",
             "|---|---|---|---|---|---|"]
    none_control = test.filter(pl.col("strategy") == "none", pl.col("task") == CONTROL)["score"].mean()
    ranked = []
    for s in candidates:
        target_dev = dev.filter(pl.col("strategy") == s, pl.col("task") != CONTROL)
        diff, se = _paired_vs_none(dev, s)
        eligible = diff + 2 * se >= 0
        target_test = test.filter(pl.col("strategy") == s, pl.col("task") != CONTROL).group_by("task").agg(pl.col("score").mean())
        control_test = test.filter(pl.col("strategy") == s, pl.col("task") == CONTROL)["score"].mean()
        ranked.append((eligible, float(target_dev["score"].mean()), s, target_dev.height, diff, se,
                       float(target_test["score"].mean()), control_test - none_control))
    ranked.sort(key=lambda r: (r[0], round(r[1], 9), r[4]), reverse=True)
    for eligible, score, s, n, diff, se, t_test, c_test in ranked:
        lines.append(f"| {s} | {score:.3f} ({n} rows) | {diff:+.3f} ± {2 * se:.3f} | {'yes' if eligible else 'no'} "
                     f"| {t_test:.3f} | {c_test:+.3f} |")
    text = (f"Chosen on dev rows: **{ranked[0][2]}** (seeds {', '.join(seeds)}; rule: `benchmarks/recommend.py`)\n\n"
            + "\n".join(lines) + "\n")
    (export / "recommended.md").write_text(text)
    return text


if __name__ == "__main__":
    print(recommend(Path(sys.argv[1])))
