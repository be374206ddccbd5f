"""Copy a compare run's results into the repo, with every per-example test score in one file.

    python benchmarks/export_run.py <work_dir>/runs/<recipe>/compare benchmarks/results/<name> [--add]

Copies leaderboard.{md,csv,png}, runs.csv and timings.json, and gathers the per-run test (and,
where the run kept them, dev) results named in runs.csv into one examples.parquet (strategy, seed,
task, split, id, score, loss, prediction), so any paired comparison, and the leaderboard with its
dev means, can be recomputed without the store.

`--add` adds the run's arms to the export already there instead: an arm (strategy, seed, task) the
run holds replaces its earlier copy, every other arm stays, and timings add up stage by stage. Use
it for seeds run later by another invocation (another day, another store); then
`python benchmarks/figures.py` rebuilds the leaderboard from the merged scores. The source may also
be another export (a folder with examples.parquet), and `--only NAME` (repeatable) takes just those
strategies from it, e.g. one arm's seed 0 from an earlier export that shares the test rows.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import polars as pl
from bench_args import export_examples

ARM = ["strategy", "seed", "task"]
COLUMNS = [*ARM, "split", "id", "score", "loss", "prediction"]


def gather(run: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The run's runs.csv and the per-example scores it names, in the export's layout."""
    runs = pl.read_csv(run / "runs.csv", schema_overrides={"seed": pl.String, "budget": pl.String})
    if (run / "examples.parquet").exists():  # already an export (an old one has no split column)
        return runs, export_examples(run).select(COLUMNS)
    splits = [("test", "examples")] + ([("dev", "dev_examples")] if "dev_examples" in runs.columns else [])
    parts = [
        pl.read_parquet(p).select("id", "score", "loss", "prediction")
        .with_columns(strategy=pl.lit(s), seed=pl.lit(str(seed)), task=pl.lit(t), split=pl.lit(split))
        for split, column in splits
        for s, seed, t, p in runs.select("strategy", "seed", "task", column).iter_rows() if p
    ]
    return runs, pl.concat(parts).select(COLUMNS)


def export(run: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ["leaderboard.md", "leaderboard.csv", "leaderboard.png", "runs.csv", "timings.json"]:
        if (run / name).exists():
            shutil.copy2(run / name, dest / name)
    out = dest / "examples.parquet"
    gather(run)[1].write_parquet(out)
    return out


def add(run: Path, dest: Path, only: list[str] | None = None) -> Path:
    """Merge the run's arms (or only the strategies named) into the export at `dest` (see the
    module docstring)."""
    if not (dest / "runs.csv").exists():
        raise SystemExit(f"{dest}: no export to add to (runs.csv missing); export without --add first")
    runs, examples = gather(run)
    if only:
        unknown = sorted(set(only) - set(runs["strategy"]))
        if unknown:
            raise SystemExit(f"{run}: no strategy {unknown}; it holds {sorted(set(runs['strategy']))}")
        runs, examples = runs.filter(pl.col("strategy").is_in(only)), examples.filter(pl.col("strategy").is_in(only))
    old_runs, old_examples = gather(dest)
    new_arms = runs.select(ARM).unique()
    merged_runs = pl.concat([old_runs.join(new_arms, on=ARM, how="anti"), runs.select(old_runs.columns)])
    merged_examples = pl.concat([old_examples.join(new_arms, on=ARM, how="anti"), examples])
    merged_runs.write_csv(dest / "runs.csv")
    merged_examples.write_parquet(dest / "examples.parquet")
    if (run / "timings.json").exists() and not only:  # a part of a run has no stage times of its own
        times = json.loads((dest / "timings.json").read_text()) if (dest / "timings.json").exists() else {}
        for k, v in json.loads((run / "timings.json").read_text()).items():
            times[k] = times.get(k, 0.0) + v
        (dest / "timings.json").write_text(json.dumps(times, indent=1))
    return dest / "examples.parquet"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--add", action="store_true", help="add the run's arms to the export at dest")
    ap.add_argument("--only", action="append", help="with --add: just this strategy (repeatable)")
    args = ap.parse_args()
    if args.only and not args.add:
        ap.error("--only needs --add")
    print(add(args.run, args.dest, args.only) if args.add else export(args.run, args.dest))


if __name__ == "__main__":
    main()
