"""Downstream effect of confident curation: fine-tuning on the curated pool vs the raw pool, and
vs the 300-row selections of every selector on the raw pool.

    python benchmarks/curated_vs_raw.py --curated benchmarks/results/bench_curated \
        --raw benchmarks/results/bench_raw_full --selections benchmarks/results/bench_pool_small

Each folder holds a compare run's `examples.parquet` (per-example test scores, from
`benchmarks/export_run.py`). All runs share the test rows, so differences are paired row by row;
the CI counts test rows and seeds (`seed_aware_diff`, the leaderboard's interval). Arms of the
same name are compared on the seeds both have. Writes <curated>/vs_raw.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl
from bench_args import test_split_examples

from tuneset.evaluate.stats import seed_aware_diff


def scores(frame: pl.DataFrame, strategy: str, task: str) -> tuple[np.ndarray, list[str]]:
    """(seeds, test rows) scores of one arm on one task, rows in id order."""
    sub = frame.filter((pl.col("strategy") == strategy) & (pl.col("task") == task)).sort("seed", "id")
    seeds = sub["seed"].unique().sort().to_list()
    return np.stack([sub.filter(pl.col("seed") == s)["score"].to_numpy() for s in seeds]), seeds


def summary(m: np.ndarray) -> str:
    per_seed = m.mean(1)
    return f"{per_seed.mean():.3f}" + (f" ± {per_seed.std(ddof=1):.3f}" if len(m) > 1 else "")


def task_table(task: str, cur: pl.DataFrame, raw: pl.DataFrame, sel: pl.DataFrame | None) -> list[str]:
    c, c_seeds = scores(cur, "full", task)
    r_all, r_seeds = scores(raw, "full", task)
    common = [s for s in c_seeds if s in r_seeds]
    lines = [f"### {task}", "", "| arm | seeds | mean ± sd over seeds | per seed | Δ curated full − arm [95% CI] |",
             "|---|---|---|---|---|",
             f"| **curated pool_small, all rows** | {', '.join(c_seeds)} | {summary(c)} | {' '.join(f'{v:.3f}' for v in c.mean(1))} | |"]
    r = r_all[[r_seeds.index(s) for s in common]]
    d = seed_aware_diff(c[[c_seeds.index(s) for s in common]], r)
    lines.append(f"| raw pool_small, all rows | {', '.join(r_seeds)} | {summary(r_all)} | {' '.join(f'{v:.3f}' for v in r_all.mean(1))} | "
                 f"{d} (seeds {', '.join(common)}) |")
    if sel is not None:
        for arm in sel.filter((pl.col("task") == task) & ~pl.col("strategy").is_in(["full", "none"]))["strategy"].unique().sort():
            a, a_seeds = scores(sel, arm, task)
            lines.append(f"| raw, 300 rows by `{arm}` | {', '.join(a_seeds)} | {summary(a)} | {' '.join(f'{v:.3f}' for v in a.mean(1))} | "
                         f"{seed_aware_diff(c, a)} |")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--curated", type=Path, required=True)
    ap.add_argument("--raw", type=Path, required=True)
    ap.add_argument("--selections", type=Path, help="a compare export of 300-row selections on the raw pool")
    args = ap.parse_args()
    cur, raw = test_split_examples(args.curated), test_split_examples(args.raw)
    sel = test_split_examples(args.selections) if args.selections else None
    lines: list[str] = []
    for task in sorted(cur.filter(pl.col("strategy") == "full")["task"].unique()):
        lines += task_table(task, cur, raw, sel)
    text = "\n".join(lines)
    (args.curated / "vs_raw.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
