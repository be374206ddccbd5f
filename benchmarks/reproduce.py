"""Does a fresh run reproduce a committed leaderboard? Per arm, seed and task, how many test rows
get the same prediction and score as the committed export.

    python benchmarks/reproduce.py RUNS_CSV [RUNS_CSV ...] --against benchmarks/results/bench_seeds

RUNS_CSV: a compare's `runs.csv` (`<work_dir>/runs/<name>/compare/runs.csv`), whose `examples`
column names each arm's per-example test results in its store. The committed side is an
`export_run.py` folder's `examples.parquet`. Arms and seeds the committed side lacks are skipped,
and said so. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl


def agreement(runs_csv: Path, committed: pl.DataFrame) -> list[dict]:
    runs = pl.read_csv(runs_csv, infer_schema_length=0)
    out = []
    for arm, seed, task, path in runs.select("strategy", "seed", "task", "examples").iter_rows():
        theirs = committed.filter((pl.col("strategy") == arm) & (pl.col("seed") == seed) & (pl.col("task") == task))
        if theirs.is_empty():
            print(f"skipped: {arm} seed {seed} {task} is not in the committed export")
            continue
        ours = pl.read_parquet(path).select("id", pl.col("score").alias("ours"), pl.col("prediction").alias("ours_pred"))
        j = theirs.join(ours, on="id", how="inner")
        out.append({"arm": arm, "seed": seed, "task": task, "rows": j.height,
                    "same_prediction": int((j["prediction"] == j["ours_pred"]).sum()),
                    "same_score": int((j["score"] == j["ours"]).sum()),
                    "committed": float(j["score"].mean()), "fresh": float(j["ours"].mean())})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--against", type=Path, required=True, help="an export_run.py folder")
    args = ap.parse_args()
    committed = pl.read_parquet(args.against / "examples.parquet").filter(pl.col("split") == "test")
    rows = [r for p in args.runs for r in agreement(p, committed)]
    print("| arm | seed | task | test rows | same prediction | same score | committed mean | fresh mean |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arm']} | {r['seed']} | {r['task']} | {r['rows']} | {r['same_prediction']} | {r['same_score']} | "
              f"{r['committed']:.3f} | {r['fresh']:.3f} |")


if __name__ == "__main__":
    main()
