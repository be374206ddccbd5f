"""Incremental rescoring: what a scheduled run costs when 2% new rows arrive (issue 13).

    python benchmarks/incremental.py --shared ../shared --work-dir <dir> [--selectors a,b,...] [--rows N]

1. `first`: score pool_small without every 50th row (98%), each selector timed alone;
2. `grown`: score the whole pool_small (the 2% arrive), in the same store: row-local selectors
   score only the new rows; pool-wide ones reuse every per-row feature and redo their global step;
3. `scratch`: score the whole pool_small again in a fresh store, and compare: row-local scores
   must equal the incremental run's, pool-wide ones must agree within the stated tolerance.

`--rows N` runs on the first N rows of pool_small instead (an LM selector's three phases on all
of it take about an hour on these 2 cores). Writes `<work-dir>/incremental.json` (seconds per selector and phase, the ratios, the largest
score difference per selector) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench_args import parse_bench_args

SELECTORS = "perplexity,embedding_knn,got,label_quality"
TOLERANCE = 1e-4  # pool-wide scores: largest |incremental - scratch| allowed (float32 embeddings)


def score_phase(pool: Path, tasks: Path, work: Path, selectors: list[str]) -> tuple[dict[str, float], dict]:
    """Seconds per selector (each scored alone, in order) and the merged score table."""
    import polars as pl

    from tuneset.data.io import load_rows
    from tuneset.flows.common import save_rows
    from tuneset.flows.context import run_context
    from tuneset.flows.score import score_flow
    from tuneset.recipe import SelectorSpec, load_recipe

    recipe = load_recipe(None, [f"pool={pool}", f"tasks={tasks}", f"work_dir={work}",
                                "task_names=[banking77, sst2, arc_easy]", f"score.selectors=[{', '.join(selectors)}]"])
    rows = save_rows(run_context(recipe).store, load_rows(pool).rows)
    seconds, tables = {}, {}
    for name in selectors:
        t0 = time.perf_counter()
        ref = score_flow(recipe, rows, selectors=[SelectorSpec(name=name)])
        seconds[name] = time.perf_counter() - t0
        tables[name] = pl.read_parquet(ref.path)
        print(f"  {name}: {seconds[name]:.1f}s", flush=True)
    return seconds, tables


def max_diff(a, b, name: str) -> float:
    """Largest |a - b| over the selector's numeric score columns (`name`, `name.<part>`), rows by id."""
    import numpy as np
    import polars as pl

    cols = [c for c in a.columns if (c == name or c.startswith(name + ".")) and a[c].dtype.is_numeric()]
    joined = a.select("id", *cols).join(b.select("id", *cols), on="id", suffix="_b")
    assert joined.height == a.height == b.height, "the two runs scored different rows"
    return max(float(np.abs(joined[c].cast(pl.Float64).to_numpy() - joined[f"{c}_b"].cast(pl.Float64).to_numpy()).max())
               for c in cols)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--selectors", default=SELECTORS)
    ap.add_argument("--rows", type=int, default=None, help="the first N rows of pool_small (default: all)")
    args, bench = parse_bench_args(ap)
    if bench is None:
        return
    from tuneset.runtime import configure

    configure()
    work = args.work_dir.resolve()
    selectors = args.selectors.split(",")
    lines = (bench / "pool_small.jsonl").read_text().splitlines()[: args.rows]
    first_pool, grown_pool = work / "pool_98.jsonl", work / "pool_grown.jsonl"
    work.mkdir(parents=True, exist_ok=True)
    grown_pool.write_text("\n".join(lines) + "\n")
    first_pool.write_text("\n".join(line for i, line in enumerate(lines) if i % 50 != 49) + "\n")
    tasks = bench / "tasks.json"
    out: dict = {"rows_first": sum(1 for i in range(len(lines)) if i % 50 != 49), "rows_grown": len(lines)}
    from tuneset.flows.api import prefect_api

    phases = {}
    with prefect_api():  # a server that dies with this script, even on kill -9
        _run_phases(phases, out, first_pool, grown_pool, tasks, work, selectors)
    _report(out, phases, selectors, work)


def _run_phases(phases: dict, out: dict, first_pool: Path, grown_pool: Path, tasks: Path, work: Path, selectors: list[str]) -> None:
    for phase, pool, store in (("first", first_pool, work / "incremental"), ("grown", grown_pool, work / "incremental"),
                               ("scratch", grown_pool, work / "scratch")):
        print(f"{phase}: {pool.name} into {store}", flush=True)
        phases[phase] = score_phase(pool, tasks, store, selectors)
        out[phase] = phases[phase][0]
        (work / "incremental.json").write_text(json.dumps(out, indent=1))  # the timings survive a failed report


def _report(out: dict, phases: dict, selectors: list[str], work: Path) -> None:
    from tuneset.selectors import get_selector

    out["grown_over_first"] = {s: out["grown"][s] / out["first"][s] for s in selectors}
    local = [s for s in selectors if get_selector(s).row_local]
    out["grown_over_first_row_local"] = sum(out["grown"][s] for s in local) / max(sum(out["first"][s] for s in local), 1e-9)
    out["grown_over_first_total"] = sum(out["grown"].values()) / sum(out["first"].values())
    out["max_abs_diff_vs_scratch"] = {s: max_diff(phases["grown"][1][s], phases["scratch"][1][s], s) for s in selectors}
    out["tolerance_pool_wide"] = TOLERANCE
    (work / "incremental.json").write_text(json.dumps(out, indent=1))
    print("| selector | kind | first (98%) s | +2% rows s | ratio | max abs diff vs from scratch |\n|---|---|---|---|---|---|")
    for s in selectors:
        kind = "row-local" if s in local else "pool-wide"
        print(f"| {s} | {kind} | {out['first'][s]:.1f} | {out['grown'][s]:.1f} | {out['grown_over_first'][s]:.3f} | "
              f"{out['max_abs_diff_vs_scratch'][s]:.2e} |")
    print(f"row-local total ratio {out['grown_over_first_row_local']:.3f}; all selectors {out['grown_over_first_total']:.3f}")


if __name__ == "__main__":
    main()
