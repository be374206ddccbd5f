"""Regenerate every committed leaderboard from its export's per-example scores, and say which files
moved.

    python benchmarks/figures.py

Each folder of benchmarks/results with runs.csv and examples.parquet (written by export_run.py)
gets leaderboard.{csv,md,png} rebuilt by the current `tuneset.evaluate.leaderboard`: the header
sentence (the run's setup, which the export does not keep) and timings.json are carried over from
the committed files. A folder with leaderboard_merged.md is merged again from the folders its
header names (merge_runs.py). Prints one line per file: unchanged, or moved. `git diff` shows how.

Not regenerated here: benchmarks/results/curation/{report.md,scores.png}, which need that run's
audit.parquet (not committed: it holds pool text); rerun benchmarks/curation.py for them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from pathlib import Path

from bench_args import ROOT, export_runs
from merge_runs import merge

from tuneset.evaluate.leaderboard import build_leaderboard, leaderboard_markdown, plot, to_markdown

RESULTS = ROOT / "benchmarks" / "results"
LEADERBOARD = ("leaderboard.csv", "leaderboard.md", "leaderboard.png")
MERGED = ("leaderboard_merged.csv", "leaderboard_merged.md", "leaderboard_merged.png", "rerun.md")


def regenerate(folder: Path) -> None:
    """leaderboard.{csv,md,png} of one export, from its runs.csv and examples.parquet."""
    lines = (folder / "leaderboard.md").read_text().splitlines()
    name, header = lines[0].removeprefix("# Leaderboard: "), lines[2]
    timings = json.loads((folder / "timings.json").read_text()) if (folder / "timings.json").exists() else {}
    with tempfile.TemporaryDirectory() as t:
        results = export_runs(folder, None, Path(t))
        board = build_leaderboard(results)
        board.write_csv(folder / "leaderboard.csv")
        md = leaderboard_markdown(name, header, to_markdown(board), results, timings)
        (folder / "leaderboard.md").write_text(md)
        plot(board, folder / "leaderboard.png")


def merged_sources(folder: Path) -> list[str]:
    """The `--add` specs a merged leaderboard was built with, from its own header."""
    head = (folder / "leaderboard_merged.md").read_text().splitlines()[2]
    adds = re.match(r"From \S+ plus (.+?); every", head)
    if not adds:
        raise ValueError(f"{folder / 'leaderboard_merged.md'}:3: no 'From <folder> plus <folder:arms>' header")
    return adds.group(1).split(", ")


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    os.chdir(ROOT)  # merged headers name their folders relative to the repo
    snapshot = {p: p.read_bytes() for p in RESULTS.glob("*/*") if p.name in LEADERBOARD + MERGED}
    for folder in sorted(p.parent for p in RESULTS.glob("*/examples.parquet")):
        if (folder / "runs.csv").exists() and (folder / "leaderboard.md").exists():
            regenerate(folder)
        if (folder / "leaderboard_merged.md").exists():
            merge(folder.relative_to(ROOT), merged_sources(folder))
    for path, before in sorted(snapshot.items()):
        print(f"{'unchanged' if path.read_bytes() == before else 'moved    '}  {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
