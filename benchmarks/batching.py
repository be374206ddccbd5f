"""Length-sorted vs arrival-order batching for per-example losses, in one run on one machine.

    python benchmarks/batching.py --pool ../shared/bench/pool_small.jsonl --rows 256

Reports real/padded token ratio and forward throughput (real tokens/s) of each, and their ratio.
The same rows, model and token budget are used for both; modes alternate to even out noise.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from tuneset.data import load_rows
from tuneset.models.lm import encode, length_batches, pad_batch, token_nll
from tuneset.models.loading import load_lm


def arrival_batches(lengths: list[int], max_tokens: int, max_batch: int = 64) -> list[list[int]]:
    """The naive way: batches in file order, same padded-token budget."""
    out, cur, width = [], [], 0
    for i, n in enumerate(lengths):
        w = max(width, n)
        if cur and (w * (len(cur) + 1) > max_tokens or len(cur) >= max_batch):
            out.append(cur)
            cur, w = [], n
        cur.append(i)
        width = w
    return out + ([cur] if cur else [])


@torch.inference_mode()
def run(model, enc, batches, pad_id) -> tuple[float, int, int]:
    t = time.perf_counter()
    real = padded = 0
    for b in batches:
        ids, mask, labels = pad_batch([enc[i] for i in b], pad_id, torch.device("cpu"))
        token_nll(model(input_ids=ids, attention_mask=mask).logits, labels)
        real += int(mask.sum())
        padded += mask.numel()
    return time.perf_counter() - t, real, padded


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", default="../shared/bench/pool_small.jsonl")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--store", default=".tuneset/store")
    args = ap.parse_args()
    if not Path(args.pool).exists():
        print(f"skipped: {args.pool} not found")
        return
    rows = load_rows(args.pool).rows.head(args.rows)
    lm = load_lm("smollm2", "cpu")
    enc = encode(lm.tokenizer, rows["instruction"].to_list(), rows["response"].to_list(), 256)
    lengths = [len(e.ids) for e in enc]
    plans = {"arrival order": arrival_batches(lengths, args.max_tokens), "length-sorted": length_batches(lengths, args.max_tokens)}
    res: dict[str, list[tuple[float, int, int]]] = {k: [] for k in plans}
    for _ in range(args.repeats):
        for name, batches in plans.items():
            res[name].append(run(lm.model, enc, batches, lm.tokenizer.pad_token_id))
    summary = {}
    for name, runs in res.items():
        secs = float(np.median([r[0] for r in runs]))
        real, padded = runs[0][1], runs[0][2]
        summary[name] = {"seconds": secs, "real_tokens": real, "padded_tokens": padded,
                         "real_share": real / padded, "real_tokens_per_s": real / secs}
    summary["speedup"] = summary["length-sorted"]["real_tokens_per_s"] / summary["arrival order"]["real_tokens_per_s"]
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
