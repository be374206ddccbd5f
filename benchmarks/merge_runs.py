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
from bench_args import export_runs

from tuneset.evaluate.leaderboard import build_leaderboard, plot, to_markdown


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


def merge(base: Path, adds: list[str]) -> str:
    """Writes rerun.md and leaderboard_merged.{md,csv,png} into `base`; returns the merged tables."""
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        runs = export_runs(base, None, tmp)
        reruns = []
        for spec in adds:
            folder, names = spec.rsplit(":", 1)
            wanted = names.split(",")
            extra = export_runs(Path(folder), wanted + ["random", "none"], tmp)
            reruns.append(f"## {folder}\n\n{rerun_table(runs, extra)}")
            runs += [r for r in extra if r["strategy"] in wanted]
        (base / "rerun.md").write_text("# The same arms in both runs\n\n" + "\n".join(reruns))
        board = build_leaderboard(runs)
        md = to_markdown(board)
        (base / "leaderboard_merged.md").write_text(
            f"# Merged leaderboard\n\nFrom {base} plus {', '.join(adds)}; every Δ pairs with this run's "
            f"random on the same test rows (rerun.md compares the arms both runs hold).\n\n{md}\n")
        board.write_csv(base / "leaderboard_merged.csv")
        plot(board, base / "leaderboard_merged.png")
    return md


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base", type=Path)
    ap.add_argument("--add", action="append", default=[], help="FOLDER:strategy,strategy")
    args = ap.parse_args()
    print(merge(args.base, args.add))


if __name__ == "__main__":
    main()
