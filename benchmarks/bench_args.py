"""The arguments every shared-benchmark script takes, and its clean skip where the data is absent."""

from __future__ import annotations

import argparse
from pathlib import Path

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
