"""Downstream effect of confident curation: the same fine-tuning on curated vs raw pool_small.

    python benchmarks/curated_vs_raw.py --raw benchmarks/results/bench_pool_small \
        --curated benchmarks/results/bench_curated

Both folders hold a compare run's `examples.parquet` (per-example test scores). The runs share test
rows, seeds and fine-tuning settings, so every difference is paired row by row; the CI is a
bootstrap over test rows of the seed-averaged scores. Writes <curated>/vs_raw.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

from tuneset.evaluate.stats import paired_bootstrap


def scores(frame: pl.DataFrame, strategy: str, task: str) -> tuple[np.ndarray, list[str]]:
    sub = frame.filter((pl.col("strategy") == strategy) & (pl.col("task") == task)).sort("seed", "id")
    seeds = sub["seed"].unique().sort().to_list()
    mat = np.stack([sub.filter(pl.col("seed") == s)["score"].to_numpy() for s in seeds])
    return mat, seeds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", type=Path, required=True)
    ap.add_argument("--curated", type=Path, required=True)
    args = ap.parse_args()
    raw = pl.read_parquet(args.raw / "examples.parquet")
    cur = pl.read_parquet(args.curated / "examples.parquet")
    lines = ["| task | arm | raw pool_small | curated pool_small | Δ curated − raw (95% CI) | seeds |", "|---|---|---|---|---|---|"]
    for task in sorted(cur["task"].unique()):
        for arm in ["random", "full"]:
            if cur.filter((pl.col("strategy") == arm) & (pl.col("task") == task)).is_empty():
                continue
            c, seeds = scores(cur, arm, task)
            r, rseeds = scores(raw, arm, task)
            common = sorted(set(seeds) & set(rseeds))
            c = c[[seeds.index(s) for s in common]]
            r = r[[rseeds.index(s) for s in common]]
            d = paired_bootstrap(c, r)
            fmt = lambda m: f"{m.mean(1).mean():.3f}" + (f" ± {m.mean(1).std(ddof=1):.3f}" if len(m) > 1 else "")  # noqa: E731
            lines.append(f"| {task} | {arm} | {fmt(r)} | {fmt(c)} | {d} | {', '.join(common)} |")
    text = "\n".join(lines) + "\n"
    (args.curated / "vs_raw.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
