"""How much the fine-tune's seed alone moves an arm: per-seed scores, mean and sd, on dev and test.

    python benchmarks/seed_spread.py benchmarks/results/bench_lr5e4 less bench_seeds:less
    python benchmarks/seed_spread.py benchmarks/results/bench_seeds less full random --split dev

For arms that train on the same rows at every seed (a deterministic selection, the full pool), the
spread is the fine-tune's own noise, which caps how small a difference between strategies a bench
of a few seeds can show. Fine-tune settings that shrink it are chosen on the dev split; the test
split is printed for the record. Besides the score it prints the mean loss of the gold answer (a
finer signal than 20 dev rows' accuracy) and the share of the most frequent prediction, which
shows a class bias moving with the seed (sst2: 178 of 300 "positive" at one seed, 132 at another).
An arm written `EXPORT:strategy` comes from another export of the same bench.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl
from bench_args import arm_source, export_examples


def sd(x: np.ndarray) -> str:
    return f"{np.std(x, ddof=1):.3f}" if len(x) > 1 else "n/a"


def spread(ex: pl.DataFrame) -> pl.DataFrame:
    """One row per (task, seed): score, gold-answer loss and top prediction share (`top_answer`)."""
    from tuneset.evaluate.leaderboard import top_answer

    rows = [{"task": task, "seed": seed, "score": g["score"].mean(), "loss": g["loss"].mean(),
             "top_share": (top_answer(g) or ("", None))[1]} for (task, seed), g in ex.group_by("task", "seed")]
    return pl.DataFrame(rows).sort("task", pl.col("seed").cast(pl.Int64, strict=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("arms", nargs="+")
    ap.add_argument("--split", choices=["dev", "test", "both"], default="both")
    args = ap.parse_args()
    splits = ["dev", "test"] if args.split == "both" else [args.split]
    print("| arm | split | task | seeds | score mean ± sd | per seed | loss mean ± sd | top prediction share |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.arms:
        source, strategy = arm_source(args.folder, spec)
        ex = export_examples(source)
        arm = ex.filter(pl.col("strategy") == strategy)
        if arm.is_empty():
            raise SystemExit(f"no arm '{strategy}' in {source}; valid: {', '.join(sorted(ex['strategy'].unique()))}")
        for split in splits:
            for task, g in spread(arm.filter(pl.col("split") == split)).group_by("task", maintain_order=True):
                s, lo = g["score"].to_numpy(), g["loss"].to_numpy()
                print(f"| {spec} | {split} | {task[0]} | {', '.join(g['seed'])} | {s.mean():.3f} ± {sd(s)} | "
                      f"{' '.join(f'{x:.3f}' for x in s)} | {lo.mean():.3f} ± {sd(lo)} | "
                      f"{' '.join('n/a' if x is None else f'{x:.2f}' for x in g['top_share'])} |")  # n/a: no answers (target_loss)


if __name__ == "__main__":
    main()
