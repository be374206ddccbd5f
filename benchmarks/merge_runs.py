"""One leaderboard from several exported compare runs that share test rows, seeds and fine-tuning.

    python benchmarks/merge_runs.py benchmarks/results/bench_less \
        --add benchmarks/results/bench_pool_small:perplexity,ifd,embedding_knn

The first folder's runs are kept whole; `--add FOLDER:s1,s2` brings strategies s1, s2 from another
export (see export_run.py). Every arm is paired with the first folder's `random` on the same test
rows. Strategies both runs hold (random, none) are compared and reported: a rerun on another day
repeats the selection exactly, but fine-tuning is not bit-identical across thread counts, so the
two random arms show how much a rerun moves a score. Writes leaderboard_merged.{md,csv,png} and
rerun.md into the first folder.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from tuneset.evaluate.leaderboard import build_leaderboard, plot, to_markdown


def runs_of(folder: Path, strategies: list[str] | None, tmp: Path) -> list[dict]:
    """Leaderboard inputs (one per strategy, seed and task) from an export's examples.parquet."""
    ex = pl.read_parquet(folder / "examples.parquet")
    meta = pl.read_csv(folder / "runs.csv", schema_overrides={"seed": pl.String})
    out = []
    for r in meta.iter_rows(named=True):
        if strategies is not None and r["strategy"] not in strategies:
            continue
        part = ex.filter((pl.col("strategy") == r["strategy"]) & (pl.col("seed") == r["seed"]) & (pl.col("task") == r["task"]))
        path = tmp / f"{folder.name}-{r['strategy']}-{r['seed']}-{r['task']}.parquet"
        part.select("id", "score").write_parquet(path)
        out.append({**{k: r[k] for k in ("strategy", "budget", "n_rows", "seed", "task", "metric")}, "examples": str(path)})
    return out


def rerun_table(a: list[dict], b: list[dict]) -> str:
    """Mean score per seed of each (strategy, task) both run lists hold: how far a rerun moves it."""
    index = {(r["strategy"], r["seed"], r["task"]): r["examples"] for r in a}
    lines = ["| strategy | task | seed | this run | earlier run | rows that differ |", "|---|---|---|---|---|---|"]
    for r in sorted(b, key=lambda r: (r["strategy"], r["task"], str(r["seed"]))):
        other = index.get((r["strategy"], r["seed"], r["task"]))
        if other:
            x = pl.read_parquet(other).sort("id")["score"].to_numpy()
            y = pl.read_parquet(r["examples"]).sort("id")["score"].to_numpy()
            lines.append(f"| {r['strategy']} | {r['task']} | {r['seed']} | {x.mean():.3f} | {y.mean():.3f} | {int((np.abs(x - y) > 1e-9).sum())} of {len(x)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base", type=Path)
    ap.add_argument("--add", action="append", default=[], help="FOLDER:strategy,strategy")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        runs = runs_of(args.base, None, tmp)
        reruns = []
        for spec in args.add:
            folder, names = spec.rsplit(":", 1)
            wanted = names.split(",")
            extra = runs_of(Path(folder), wanted + ["random", "none"], tmp)
            reruns.append(f"## {folder}\n\n{rerun_table(runs, extra)}")
            runs += [r for r in extra if r["strategy"] in wanted]
        (args.base / "rerun.md").write_text("# The same arms in both runs\n\n" + "\n".join(reruns))
        print("\n".join(reruns))
        board = build_leaderboard(runs)
        md = to_markdown(board)
        (args.base / "leaderboard_merged.md").write_text(
            f"# Merged leaderboard\n\nFrom {args.base} plus {', '.join(args.add)}; every Δ pairs with this run's "
            f"random on the same test rows (rerun.md compares the arms both runs hold).\n\n{md}\n")
        board.write_csv(args.base / "leaderboard_merged.csv")
        plot(board, args.base / "leaderboard_merged.png")
    print(md)


if __name__ == "__main__":
    main()
