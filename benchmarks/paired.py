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
import math
from pathlib import Path

import numpy as np
import polars as pl
from bench_args import arm_source, test_split_examples

from tuneset.evaluate.metrics import get_metric, metric_names
from tuneset.evaluate.stats import seed_aware_diff


def arm_rows(examples: pl.DataFrame, strategy: str, task: str) -> pl.DataFrame:
    """One arm's test scores on one task: seed, id, score."""
    part = examples.filter((pl.col("strategy") == strategy) & (pl.col("task") == task))
    if part.is_empty():
        valid = sorted(examples.filter(pl.col("task") == task)["strategy"].unique().to_list())
        raise SystemExit(f"no arm '{strategy}' on task '{task}'; valid: {', '.join(valid)}")
    return part.select("seed", "id", "score")


def matrix(part: pl.DataFrame, seeds: list[str], ids: list[str], arm: str) -> np.ndarray:
    """(seeds, test rows) in the given orders, joined on id: every seed must hold exactly `ids`
    (two arms of equal row counts but other rows were paired by position before)."""
    out = []
    for seed in seeds:
        g = part.filter(pl.col("seed") == seed)
        if set(g["id"]) != set(ids) or g.height != len(ids):
            raise SystemExit(f"{arm} seed {seed} was evaluated on other test rows ({g.height} rows, "
                             f"{len(set(g['id']) & set(ids))} of the {len(ids)} compared): pair the same rows")
        out.append(pl.DataFrame({"id": ids}).join(g, on="id", how="left", maintain_order="left")["score"].to_numpy())
    return np.stack(out)


def span(folder: Path, task: str) -> float:
    """How far apart two means can be on the task's metric (its registered bounds), from the
    export's leaderboard; unbounded where it names none."""
    board = folder / "leaderboard.csv"
    if not board.exists():
        return math.inf
    metric = pl.read_csv(board).filter(pl.col("task") == task)["metric"]
    bounds = get_metric(metric[0]).bounds if metric.len() and metric[0] in metric_names() else None
    return math.inf if bounds is None else bounds[1] - bounds[0]


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
    part_a, part_b = arm_rows(ex_a, s_a, task), arm_rows(ex_b, s_b, task)
    # Only the seeds both arms finished on this task (a bench in progress has more seeds of some
    # arms); "-" is the seedless no-fine-tune arm, paired with any seed.
    seeds_a, seeds_b = set(part_a["seed"]), set(part_b["seed"])
    if "-" in seeds_a or "-" in seeds_b:
        common = (seeds_a | seeds_b) - {"-"}
    else:
        common = seeds_a & seeds_b
        if not common:
            raise SystemExit(f"{a} (seeds {', '.join(sorted(seeds_a))}) and {b} (seeds {', '.join(sorted(seeds_b))}) "
                             f"share no seed on {task}")
    order = sorted(common, key=lambda x: int(x) if x.isdigit() else x)  # seed k of one arm meets seed k of the other

    def own(seeds: set[str]) -> list[str]:
        return ["-"] if "-" in seeds else order

    ids = sorted(set(part_a["id"]))
    sa, sb = matrix(part_a, own(seeds_a), ids, a), matrix(part_b, own(seeds_b), ids, b)
    d, cap = seed_aware_diff(sa, sb), span(folder, task)
    lo, hi = max(d.lo, -cap), min(d.hi, cap)  # as the leaderboard cuts it: a difference cannot leave +-(hi - lo)
    detectable = f"detectable ±{d.mdd:.3f}" if d.mdd < cap else "no difference detectable"
    flag = "" if d.seed_aware or "-" in seeds_a | seeds_b and max(len(sa), len(sb)) > 1 else \
        "*  (one seed: the interval leaves out seed variance)"
    print(f"{a} vs {b} on {task} (seeds {', '.join(order) or '-'}): {d.mean:+.3f} [{lo:+.3f}, {hi:+.3f}] ({detectable}){flag}")
    per_seed = sa.mean(axis=1) - sb.mean(axis=1)  # a seedless arm (one row) broadcasts against the other's seeds
    if per_seed.size > 1:
        sd = per_seed.std(ddof=1)
        print(f"  per seed: {', '.join(f'{x:+.3f}' for x in per_seed)}; sd {sd:.3f}; mean / sd {per_seed.mean() / sd if sd else float('inf'):.1f}")
        if sa.shape[0] > 1:  # the other reading of the bar: A's own seed sd
            own_sd = sa.mean(axis=1).std(ddof=1)
            print(f"  {a}'s own seed sd {own_sd:.3f}; mean / own sd {per_seed.mean() / own_sd if own_sd else float('inf'):.1f}")


if __name__ == "__main__":
    main()
