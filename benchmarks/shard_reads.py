"""What a shard task pays to read its rows: the whole rows table then a slice (before) vs a parquet
scan with the slice pushed down (`tuneset.flows.common.read_rows`, now), on a synthetic table of
`--rows` rows shaped like a pool (id, instruction, response), one polars thread.

    POLARS_MAX_THREADS=1 python benchmarks/shard_reads.py [--rows 1000000] [--shard 1024] [--repeats 5]

Reads the middle shard, alternated, and writes results/shard_reads.json (min and median seconds,
the ratio at the min, and whether both read the same rows). Needs no shared data.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import polars as pl
from bench_args import ROOT, interleaved

from tuneset.flows.common import read_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shard", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    n, size = args.rows, args.shard
    offset = (n // 2 // size) * size
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "rows.parquet")
        pl.DataFrame({"id": [f"pool-{i}" for i in range(n)],
                      "instruction": [f"Classify this message into its intent.\nMessage: request number {i}" for i in range(n)],
                      "response": [f"intent_{i % 77}" for i in range(n)]}).write_parquet(path)
        runs = {"read whole table, then slice (before)": lambda: pl.read_parquet(path).slice(offset, size),
                "scan with the slice pushed down (read_rows)": lambda: read_rows(path, offset, size)}
        seconds, frames = interleaved(runs, args.repeats)
    before, now = (min(v) for v in seconds.values())
    whole, sliced = frames.values()
    out = {"rows": n, "shard": size, "offset": offset, "polars_threads": pl.thread_pool_size(),
           "seconds": {k: [round(s, 4) for s in v] for k, v in seconds.items()},
           "min": {k: round(min(v), 4) for k, v in seconds.items()},
           "median": {k: round(statistics.median(v), 4) for k, v in seconds.items()},
           "speedup_at_min": round(before / now, 1), "same_rows": whole.equals(sliced)}
    (ROOT / "benchmarks" / "results" / "shard_reads.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
