"""Does a row's output depend on the rows batched with it? Padded length-sorted batches vs one row
a forward (tuneset on a CPU), same rows, same thread count, alternated:
- `losses`: SmolLM2's per-row response NLL (perplexity, ifd, confidence), batches under the
  4,096-token budget. Writes results/loss_batches.json.
- `embeddings`: MiniLM's embedding of each row's text (embedding_knn, got, semdedup, ...), batches of
  64 as sentence-transformers sorts them. Writes results/embedding_batches.json.

    OMP_NUM_THREADS=1 python benchmarks/batch_invariance.py --shared ../shared losses|embeddings [--rows 200] [--repeats 2] [--out F]

The first `--rows` rows of pool_small. Reports min and median seconds of each, the largest
difference between their outputs, and whether every third row computed on its own reproduces the
full run's output bit for bit (what a grown pool's from-scratch rerun needs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Callable

import numpy as np
from bench_args import ROOT, interleaved, parse_bench_args

Arms = dict[str, Callable[[list], np.ndarray]]


def batching_arms(module, setting: str, compute: Callable[[list], np.ndarray], padded: str, alone: str) -> Arms:
    """`compute` with `module.<setting>` (rows per forward, by device) empty, so padded batches,
    and with one row a forward on a CPU, as tuneset runs it."""
    def arm(value: dict[str, int]) -> Callable[[list], np.ndarray]:
        def run(items: list) -> np.ndarray:
            setattr(module, setting, value)
            return compute(items)
        return run

    return {padded: arm({}), alone: arm({"cpu": 1})}


def loss_arms(rows: list[dict]) -> tuple[list, Arms]:
    import tuneset.models.lm as lm_module
    from tuneset.models.loading import SMOLLM2, cached_lm

    lm = cached_lm(SMOLLM2, "cpu", None)
    enc = lm_module.encode(lm.tokenizer, [r["instruction"] for r in rows], [r["response"] for r in rows], 256)
    return enc, batching_arms(lm_module, "ROWS_PER_FORWARD",
                              lambda items: lm_module.response_nll(lm.model, items, lm.tokenizer.pad_token_id, 4096)[0],
                              "padded length-sorted batches", "one row a forward (tuneset on CPU)")


def embedding_arms(rows: list[dict]) -> tuple[list, Arms]:
    import polars as pl

    import tuneset.models.embed as embed_module
    from tuneset.selectors.base import row_text

    texts = row_text(pl.DataFrame(rows).select("instruction", "response"))
    embed_module.load_embedder(embed_module.MINILM).encode(texts[:8], 8)  # loaded before timing
    return texts, batching_arms(embed_module, "TEXTS_PER_FORWARD",
                                lambda items: embed_module.embed_texts(embed_module.MINILM, items, batch_size=64),
                                "padded length-sorted batches of 64", "one text a forward (tuneset on CPU)")


KINDS = {"losses": (loss_arms, "loss_batches.json"), "embeddings": (embedding_arms, "embedding_batches.json")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=sorted(KINDS))
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", help="results file name (default: the kind's)")
    args, bench = parse_bench_args(ap)
    if bench is None:
        return
    import torch

    n, repeats = args.rows, args.repeats
    make_arms, out_name = KINDS[args.what]
    rows = [json.loads(line) for line in (bench / "pool_small.jsonl").read_text().splitlines()[:n]]
    items, arms = make_arms(rows)
    seconds, outputs = interleaved({k: (lambda f=f: np.asarray(f(items))) for k, f in arms.items()}, repeats)
    seconds = {k: [round(s, 2) for s in v] for k, v in seconds.items()}
    base = min(next(iter(seconds.values())))
    out = {
        "rows": n, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "seconds": seconds,
        "min": {k: min(v) for k, v in seconds.items()}, "median": {k: statistics.median(v) for k, v in seconds.items()},
        "rows_per_s_at_min": {k: round(n / min(v), 1) for k, v in seconds.items()},
        "max_abs_diff_between_arms": float(np.abs(np.subtract(*outputs.values())).max()),
        "subset_reproduces_full_run": {k: bool(np.array_equal(np.asarray(f(items[::3])), outputs[k][::3])) for k, f in arms.items()},
        "min_ratio_vs_padded": {k: round(min(v) / base, 3) for k, v in seconds.items()},
    }
    (ROOT / "benchmarks" / "results" / (args.out or out_name)).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
