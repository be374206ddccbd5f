"""MiniLM embedding in same-length batches vs padded length-sorted batches (sentence-transformers'
own), same texts, same thread count, alternated.

    python benchmarks/embed_batches.py --shared ../shared [--rows 600] [--repeats 3]

The first `--rows` rows of pool_small. Reports min and median seconds of each, the largest
difference between their vectors, and whether a subset embedded on its own reproduces the full
run's vectors bit for bit (what a grown pool's from-scratch rerun needs). Writes
benchmarks/results/embed_batches.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
from bench_args import ROOT, parse_bench_args


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3)
    args, bench = parse_bench_args(ap)
    if bench is None:
        return
    import torch

    from tuneset.models.embed import MINILM, load_embedder

    rows = [json.loads(line) for line in (bench / "pool_small.jsonl").read_text().splitlines()[: args.rows]]
    texts = [f"{r['instruction']}\n{r['response']}" for r in rows]
    m = load_embedder(MINILM, "cpu")
    arms = {
        "padded length-sorted batches": lambda t: m.model.encode(t, batch_size=64, normalize_embeddings=True,
                                                                convert_to_numpy=True, show_progress_bar=False),
        "same-length batches (tuneset)": lambda t: m.encode(t, 64),
    }
    seconds: dict[str, list[float]] = {k: [] for k in arms}
    vectors = {}
    for _ in range(args.repeats):
        for name, f in arms.items():
            t0 = time.perf_counter()
            vectors[name] = np.asarray(f(texts))
            seconds[name].append(round(time.perf_counter() - t0, 2))
    subset = slice(None, None, 3)
    out = {
        "rows": args.rows, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "seconds": seconds,
        "min": {k: min(v) for k, v in seconds.items()}, "median": {k: statistics.median(v) for k, v in seconds.items()},
        "rows_per_s_at_min": {k: round(args.rows / min(v), 1) for k, v in seconds.items()},
        "max_abs_diff_between_arms": float(np.abs(np.subtract(*vectors.values())).max()),
        "subset_reproduces_full_run": {k: bool(np.array_equal(np.asarray(f(texts[subset])), vectors[k][subset]))
                                       for k, f in arms.items()},
    }
    base = out["min"]["padded length-sorted batches"]
    out["min_ratio_vs_padded"] = {k: round(v / base, 3) for k, v in out["min"].items()}
    (ROOT / "benchmarks" / "results" / "embed_batches.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
