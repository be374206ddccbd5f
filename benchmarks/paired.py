"""The paired difference between any two arms of an exported compare, on one task.

    python benchmarks/paired.py benchmarks/results/bench_downstream less full banking77
    python benchmarks/paired.py benchmarks/results/bench_downstream got bench_static:got_static sst2

The leaderboard pairs every arm with random and with no fine-tune; this pairs any two (a strategy
against the full pool, a curated arm against its raw one), with the same seed-and-row interval.
An arm written `EXPORT:strategy` comes from another export of the same bench (same test rows and
seeds; EXPORT relative to the first folder's parent). Only seeds both arms finished are compared.
With two or more seeds it also prints each seed's difference and their sd: the issue's test is a
mean difference above 3x the seed sd. The mean over A's own seed sd is printed too, the other
reading of that bar.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl
from bench_args import arm_source, test_split_examples

from tuneset.evaluate.stats import seed_aware_diff


def scores(examples: pl.DataFrame, strategy: str, task: str) -> np.ndarray:
    """(seeds, test rows) of one arm on one task, rows aligned by id."""
    part = examples.filter((pl.col("strategy") == strategy) & (pl.col("task") == task))
    if part.is_empty():
        valid = sorted(examples.filter(pl.col("task") == task)["strategy"].unique().to_list())
        raise SystemExit(f"no arm '{strategy}' on task '{task}'; valid: {', '.join(valid)}")
    part = part.sort(pl.col("seed").cast(pl.Int64, strict=False))  # seed k of one arm meets seed k of the other
    return np.stack([g.sort("id")["score"].to_numpy() for _, g in part.group_by("seed", maintain_order=True)])


def arm_examples(folder: Path, spec: str) -> tuple[pl.DataFrame, str]:
    source, strategy = arm_source(folder, spec)
    return test_split_examples(source), strategy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, what in (("export", "an export folder (examples.parquet)"), ("arm_a", "an arm, or EXPORT:arm"),
                       ("arm_b", "the arm it is compared with"), ("task", "the task")):
        parser.add_argument(name, help=what)
    args = parser.parse_args()
    folder, a, b, task = Path(args.export), args.arm_a, args.arm_b, args.task
    (ex_a, s_a), (ex_b, s_b) = arm_examples(folder, a), arm_examples(folder, b)
    # Only the seeds both arms finished (a bench in progress has more seeds of some arms); "-" is
    # the seedless no-fine-tune arm, paired with any seed.
    seeds_a = set(ex_a.filter(pl.col("strategy") == s_a)["seed"]) - {"-"}
    seeds_b = set(ex_b.filter(pl.col("strategy") == s_b)["seed"]) - {"-"}
    common = (seeds_a & seeds_b) or seeds_a or seeds_b
    keep = pl.col("seed").is_in([*common, "-"])
    sa, sb = scores(ex_a.filter(keep), s_a, task), scores(ex_b.filter(keep), s_b, task)
    d = seed_aware_diff(sa, sb)
    print(f"{a} vs {b} on {task} (seeds {', '.join(sorted(common)) or '-'}): "
          f"{d.mean:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}] (detectable ±{d.mdd:.3f})")
    per_seed = sa.mean(axis=1) - sb.mean(axis=1)  # a seedless arm (one row) broadcasts against the other's seeds
    if per_seed.size > 1:
        sd = per_seed.std(ddof=1)
        print(f"  per seed: {', '.join(f'{x:+.3f}' for x in per_seed)}; sd {sd:.3f}; mean / sd {per_seed.mean() / sd if sd else float('inf'):.1f}")
        if sa.shape[0] > 1:  # the other reading of the bar: A's own seed sd
            own = sa.mean(axis=1).std(ddof=1)
            print(f"  {a}'s own seed sd {own:.3f}; mean / own sd {per_seed.mean() / own if own else float('inf'):.1f}")


if __name__ == "__main__":
    main()
