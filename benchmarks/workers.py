"""Wall time of scoring on the local runner vs a two-worker Dask cluster, same rows, same store kind.

    python benchmarks/workers.py --shared ../shared --work-dir .tuneset/workers [--rows 200] [--repeats 2]
        [--selectors perplexity,embedding_knn] [--out workers.json]

The first `--rows` rows of pool_small, scored with `--selectors` (by default `perplexity`, an LM
pass, and `embedding_knn`, MiniLM), in shards of 50 rows, each run into a fresh store (nothing
cached but the converted model): `score.runner: local` with one worker and torch on every core,
then `score.runner: dask` with two single-thread worker processes. Reports min and median wall
time per runner and checks the two score tables are equal. Writes benchmarks/results/<--out>.
With `--selectors dsir,semdedup` it checks the map-reduced global steps (n-gram counts per shard,
near-duplicates per cluster) on the workers against the local runner.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from bench_args import ROOT, parse_bench_args

RESULTS = ROOT / "benchmarks" / "results"
RUNNERS = {"local, 1 worker": ["score.runner=local", "score.workers=1"],
           "dask, 2 workers": ["score.runner=dask", "score.workers=2"]}


def one_run(pool: Path, tasks: Path, work: Path, selectors: list[str], overrides: list[str]):
    from tuneset.flows.score import score_flow
    from tuneset.recipe import load_recipe

    shutil.rmtree(work, ignore_errors=True)  # a fresh store: every run computes everything
    recipe = load_recipe(None, [f"pool={pool}", f"tasks={tasks}", f"work_dir={work}", "task_names=[banking77, sst2, arc_easy]",
                                f"score.selectors=[{', '.join(selectors)}]", "score.shard_size=50", *overrides])
    t0 = time.perf_counter()
    table = score_flow(recipe).read()
    return time.perf_counter() - t0, table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--selectors", default="perplexity,embedding_knn")
    ap.add_argument("--out", default="workers.json")
    args, bench = parse_bench_args(ap)
    if bench is None:
        return
    from polars.testing import assert_frame_equal

    from tuneset.flows.api import prefect_api
    from tuneset.runtime import configure

    configure()
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    pool = work / "pool.jsonl"
    pool.write_text("\n".join((bench / "pool_small.jsonl").read_text().splitlines()[: args.rows]) + "\n")
    selectors = args.selectors.split(",")
    seconds: dict[str, list[float]] = {name: [] for name in RUNNERS}
    tables = {}
    with prefect_api():
        for rep in range(args.repeats):
            for name, overrides in RUNNERS.items():  # alternate, so drift in machine load hits both
                s, tables[name] = one_run(pool, bench / "tasks.json", work / f"{name.split(',')[0]}-{rep}", selectors, overrides)
                seconds[name].append(round(s, 1))
                print(f"{name}, run {rep + 1}: {s:.1f} s", flush=True)
    first, second = tables.values()
    assert_frame_equal(first, second)
    out = {"rows": args.rows, "selectors": selectors, "shard_size": 50,
           "cpu_count": os.cpu_count(), "seconds": seconds,
           "min": {k: min(v) for k, v in seconds.items()}, "median": {k: statistics.median(v) for k, v in seconds.items()},
           "scores_equal": True}
    base = out["min"]["local, 1 worker"]
    out["min_ratio_vs_local"] = {k: round(v / base, 3) for k, v in out["min"].items()}
    (RESULTS / args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
