"""What benchmark scripts share: the arguments every shared-benchmark script takes (with its clean
skip where the data is absent), and reading an exported compare run back (see export_run.py)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parent.parent


def parse_bench_args(ap: argparse.ArgumentParser) -> tuple[argparse.Namespace, Path | None]:
    """Adds --shared and --work-dir to `ap` and parses; returns the bench folder, or None (and says
    the benchmark is skipped) where `<shared>/bench/pool.jsonl` is absent."""
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--work-dir", type=Path, default=ROOT / ".tuneset" / "bench")
    args = ap.parse_args()
    bench = args.shared / "bench"
    if not (bench / "pool.jsonl").exists():
        print(f"skipped: no benchmark at {bench}")
        return args, None
    return args, bench


def export_examples(folder: Path) -> pl.DataFrame:
    """An export's per-example results with their `split` (exports made before dev results were
    kept hold test rows only)."""
    ex = pl.read_parquet(folder / "examples.parquet")
    return ex if "split" in ex.columns else ex.with_columns(split=pl.lit("test"))


def arm_source(folder: Path, spec: str) -> tuple[Path, str]:
    """The export folder and strategy an arm names: `strategy` in `folder`, or `EXPORT:strategy`
    in another export of the same bench (EXPORT relative to `folder`'s parent)."""
    other, _, strategy = spec.rpartition(":")
    return (folder.parent / other if other else folder), strategy


def test_split_examples(folder: Path) -> pl.DataFrame:
    """An export's per-example test scores: what every paired comparison is made on."""
    return export_examples(folder).filter(pl.col("split") == "test")


def export_runs(folder: Path, strategies: list[str] | None, tmp: Path) -> list[dict]:
    """Leaderboard inputs (one per strategy, seed and task, with their recorded train/eval seconds)
    from an export's runs.csv and examples.parquet; each run's test scores are written under `tmp`."""
    ex = export_examples(folder)
    meta = pl.read_csv(folder / "runs.csv", schema_overrides={"seed": pl.String, "budget": pl.String})
    out = []
    for r in meta.iter_rows(named=True):
        if strategies is not None and r["strategy"] not in strategies:
            continue
        keep = ("strategy", "budget", "n_rows", "seed", "task", "metric", "train_s", "eval_s")
        run = {k: r[k] for k in keep if k in r}
        arm = ex.filter((pl.col("strategy") == r["strategy"]) & (pl.col("seed") == r["seed"]) & (pl.col("task") == r["task"]))
        for split, column in (("test", "examples"), ("dev", "dev_examples")):
            part = arm.filter(pl.col("split") == split)
            if not part.is_empty():
                path = tmp / f"{folder.name}-{r['strategy']}-{r['budget']}-{r['seed']}-{r['task']}-{split}.parquet"
                part.select("id", "score", *(["prediction"] if "prediction" in part.columns else [])).write_parquet(path)
                run[column] = str(path)
        out.append(run)
    return out


def interleaved(runs: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Runs each callable `repeats` times, alternating between them (a, b, c, a, b, c, ...), so a
    burst of load from another job lands on every implementation rather than on one. Returns the
    seconds of every run per name, and each name's last result."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    out: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in runs.items():
            t = time.perf_counter()
            out[name] = fn()
            times[name].append(time.perf_counter() - t)
    return times, out
