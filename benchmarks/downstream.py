"""The downstream bench with its reference arms: `tuneset bench` (recipes/bench.yaml) plus two
upper references built here from the bench's injected-noise truth, which product code never reads.

    python benchmarks/downstream.py --work-dir <dir> [--set key=value ...]

- `oracle`: the budget filled from the target tasks' own pool sources (banking77, sst2), clean
  rows only (truth: no noise), split equally between the tasks;
- `source`: the same sources and split with their noise left in.

Both are rows files handed to the compare as `compare.references`, so they fine-tune with the same
settings, seeds and test rows as every strategy and show up marked "(reference)". Then
`python benchmarks/export_run.py <dir>/runs/bench/compare benchmarks/results/bench_downstream` and
`python benchmarks/recommend.py benchmarks/results/bench_downstream` (the choice, on dev rows).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from bench_args import ROOT, parse_bench_args

# Pool sources that are a target task's own data (arc_easy has none in the pool).
TASK_SOURCES = {"banking77": "banking77", "sst2": "sst2"}


def reference_rows(pool: Path, truth: Path, budget: int, clean_only: bool, seed: int = 0) -> list[dict]:
    """`budget` rows from the target tasks' sources, split equally (a task short of rows leaves its
    share to the others), sampled with `seed`."""
    noise = {r["id"]: r["noise"] for r in map(json.loads, truth.open())}
    rows = [r for r in map(json.loads, pool.open()) if r["source"] in TASK_SOURCES.values()]
    if clean_only:
        rows = [r for r in rows if noise[r["id"]] is None]
    rng = random.Random(seed)
    by_source = {s: sorted((r for r in rows if r["source"] == s), key=lambda r: r["id"]) for s in TASK_SOURCES.values()}
    for group in by_source.values():
        rng.shuffle(group)
    share = {s: budget // len(by_source) + (i < budget % len(by_source)) for i, s in enumerate(sorted(by_source))}
    short = sorted(by_source, key=lambda s: len(by_source[s]))
    chosen: list[dict] = []
    for i, s in enumerate(short):  # smallest first: what it cannot fill goes to the next
        take = min(share[s], len(by_source[s]))
        chosen += by_source[s][:take]
        if i + 1 < len(short):
            share[short[i + 1]] += share[s] - take
    return chosen


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override key=value")
    args, bench = parse_bench_args(ap)
    if bench is None:
        return
    work = args.work_dir.resolve()
    pool, truth = bench / "pool_small.jsonl", bench / "pool_truth.jsonl"
    refs = {name: write_jsonl(reference_rows(pool, truth, args.budget, clean), work / "references" / f"{name}.jsonl")
            for name, clean in (("oracle", True), ("source", False))}
    from tuneset.runtime import configure

    configure()
    from tuneset.flows.compare import compare_flow
    from tuneset.recipe import load_recipe

    overrides = [f"pool={pool.resolve()}", f"tasks={(bench / 'tasks.json').resolve()}", f"work_dir={work}",
                 "compare.references={" + ", ".join(f"{k}: {v}" for k, v in refs.items()) + "}", *args.overrides]
    from tuneset.flows.api import prefect_api

    with prefect_api():  # a server that dies with this script, even on kill -9
        out = compare_flow(load_recipe(ROOT / "recipes" / "bench.yaml", overrides))
    print(out)
    print(f"then: python benchmarks/export_run.py {Path(out['csv']).parent} <export dir> && "
          "python benchmarks/recommend.py <export dir>")


if __name__ == "__main__":
    main()
