"""Copy a compare run's results into the repo, with every per-example test score in one file.

    python benchmarks/export_run.py <work_dir>/runs/<recipe>/compare benchmarks/results/<name>

Copies leaderboard.{md,csv,png}, runs.csv and timings.json, and gathers the per-run test (and,
where the run kept them, dev) results named in runs.csv into one examples.parquet (strategy, seed,
task, split, id, score, loss, prediction), so any paired comparison, and the leaderboard with its
dev means, can be recomputed without the store.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import polars as pl


def export(run: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ["leaderboard.md", "leaderboard.csv", "leaderboard.png", "runs.csv", "timings.json"]:
        if (run / name).exists():
            shutil.copy2(run / name, dest / name)
    runs = pl.read_csv(run / "runs.csv", schema_overrides={"seed": pl.String})
    splits = [("test", "examples")] + ([("dev", "dev_examples")] if "dev_examples" in runs.columns else [])
    parts = [
        pl.read_parquet(p).select("id", "score", "loss", "prediction")
        .with_columns(strategy=pl.lit(s), seed=pl.lit(str(seed)), task=pl.lit(t), split=pl.lit(split))
        for split, column in splits
        for s, seed, t, p in runs.select("strategy", "seed", "task", column).iter_rows() if p
    ]
    out = dest / "examples.parquet"
    pl.concat(parts).select("strategy", "seed", "task", "split", "id", "score", "loss", "prediction").write_parquet(out)
    return out


if __name__ == "__main__":
    print(export(Path(sys.argv[1]), Path(sys.argv[2])))
