"""Length-sorted vs arrival-order batching for per-example losses, in one run on one machine.

    python benchmarks/batching.py --rows 192 --repeats 3

Reports real/padded token ratio and forward seconds of each over `--repeats` runs (min and
median; the modes alternate, so a burst of load lands on both), and the speed-up as the ratio of
their medians and of their mins. The same rows (the first `--rows` of pool_small), model and token
budget are used for both. Writes results/batching.json with the command and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch
from bench_args import ROOT, interleaved, parse_bench_args

from tuneset.data import load_rows
from tuneset.data.io import write_json
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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=192)
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "batching.json"))
    args, bench = parse_bench_args(ap)
    if bench is None:
        return
    rows = load_rows(bench / "pool_small.jsonl").rows.head(args.rows)
    lm = load_lm("smollm2", "cpu")
    enc = encode(lm.tokenizer, rows["instruction"].to_list(), rows["response"].to_list(), 256)
    lengths = [len(e.ids) for e in enc]
    plans = {"arrival order": arrival_batches(lengths, args.max_tokens), "length-sorted": length_batches(lengths, args.max_tokens)}
    times, last = interleaved({name: (lambda b=b: run(lm.model, enc, b, lm.tokenizer.pad_token_id)) for name, b in plans.items()},
                              args.repeats)
    summary: dict = {"command": "python benchmarks/batching.py " + " ".join(sys.argv[1:]),
                     "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                                f"torch {torch.__version__}, {torch.get_num_threads()} threads, SmolLM2-135M fp32"}
    for name, secs in times.items():
        _, real, padded = last[name]
        summary[name] = {"seconds": [round(s, 2) for s in secs], "min_s": round(min(secs), 2),
                         "median_s": round(float(np.median(secs)), 2), "real_tokens": real, "padded_tokens": padded,
                         "real_share": round(real / padded, 3), "real_tokens_per_s_median": round(real / float(np.median(secs)), 1)}
    a, s = summary["arrival order"], summary["length-sorted"]
    summary["speedup_median"] = round(a["median_s"] / s["median_s"], 2)
    summary["speedup_min"] = round(a["min_s"] / s["min_s"], 2)
    write_json(args.out, summary)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
