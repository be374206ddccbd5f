"""tuneset's `dsir` and `got` against their references, same rows, same target, one run, this CPU.

    python benchmarks/distribution.py --shared ../shared [--work-dir .tuneset/bench]

- DSIR: the `data-selection` package (HashedNgramDSIR: nltk WordPunct tokens, sha256 bucket hashing
  in Python, 10k buckets) vs tuneset's vectorised featuriser (same tokens, murmur3 hashing in C):
  rows per second of fit + importance weights, and the overlap of the two top-15% by weight.
- GOT-D: POT's log-domain Sinkhorn on the dense cost vs tuneset's chunked torch kernel, same reg:
  time, and the overlap of the top-15% by calibrated gradient.
Both use the benchmark's full pool (8,366 rows) and the dev rows of banking77, sst2 and arc_easy as
one target. Needs `pip install 'tuneset[bench]'`. Writes benchmarks/results/distribution.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from bench_args import parse_bench_args

from tuneset.models.embed import MINILM
from tuneset.selectors.base import row_text
from tuneset.selectors.context import ScoringContext
from tuneset.selectors.distribution import calibrated_gradient, dsir_log_weights, sinkhorn_potentials
from tuneset.store import ArtifactStore

ROOT = Path(__file__).resolve().parent.parent
TASKS = ["banking77", "sst2", "arc_easy"]


def top_overlap(a: np.ndarray, b: np.ndarray, frac: float = 0.15) -> float:
    k = int(round(len(a) * frac))
    return len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k


def bench_dsir(cand: list[str], target: list[str], repeats: int = 3) -> dict:
    from data_selection import HashedNgramDSIR

    ours_t = []
    for _ in range(repeats):
        t = time.perf_counter()
        ours = dsir_log_weights(cand, [target])
        ours_t.append(time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as tmp:
        raw_p, tgt_p = Path(tmp) / "raw.jsonl", Path(tmp) / "target.jsonl"
        raw_p.write_text("\n".join(json.dumps({"text": x}) for x in cand) + "\n")
        tgt_p.write_text("\n".join(json.dumps({"text": x}) for x in target) + "\n")
        t = time.perf_counter()
        ref = HashedNgramDSIR([str(raw_p)], [str(tgt_p)], cache_dir=str(Path(tmp) / "cache"), num_proc=1,
                              min_example_length=0, raw_parse_example_fn=lambda e: e["text"],
                              target_parse_example_fn=lambda e: e["text"])
        ref.fit_importance_estimator(num_tokens_to_fit="all")
        ref.compute_importance_weights()
        ref_t = time.perf_counter() - t
        ref_w = np.concatenate([np.load(p) for p in sorted(Path(ref.log_importance_weights_dir).glob("*.npy"),
                                                             key=lambda p: int(p.stem))])
    best = min(ours_t)
    return {"rows": len(cand), "reference_s": round(ref_t, 3), "tuneset_s": round(best, 3),
            "reference_rows_per_s": round(len(cand) / ref_t), "tuneset_rows_per_s": round(len(cand) / best),
            "speedup": round(ref_t / best, 1), "top15_overlap": round(top_overlap(ours, ref_w), 4),
            "weight_spearman": round(float(pl.DataFrame({"a": ours, "b": ref_w}).select(pl.corr("a", "b", method="spearman")).item()), 4)}


def bench_got(cand: np.ndarray, tgt: np.ndarray, weights: np.ndarray, reg: float = 0.1) -> dict:
    import ot

    t = time.perf_counter()
    f, _, iters = sinkhorn_potentials(cand, tgt, weights, reg=reg)
    ours_t = time.perf_counter() - t
    t = time.perf_counter()
    cost = 1.0 - cand.astype(np.float64) @ tgt.T.astype(np.float64)
    a = np.full(len(cand), 1.0 / len(cand))
    _, log = ot.sinkhorn(a, weights, cost, reg, method="sinkhorn_log", log=True, numItermax=10000, stopThr=1e-9)
    ref_t = time.perf_counter() - t
    ref_f = reg * log["log_u"]
    ours_s, ref_s = -calibrated_gradient(f), -calibrated_gradient(ref_f)
    return {"rows": len(cand), "targets": len(tgt), "reg": reg, "tuneset_iters": iters, "reference_iters": int(log["niter"]),
            "reference_s": round(ref_t, 3), "tuneset_s": round(ours_t, 3), "speedup": round(ref_t / ours_t, 2),
            "top15_overlap": round(top_overlap(ours_s, ref_s), 4),
            "potential_max_abs_diff": round(float(np.abs((f - f.mean()) - (ref_f - ref_f.mean())).max()), 6)}


def main() -> None:
    ap = argparse.ArgumentParser()
    args, bench = parse_bench_args(ap)
    if bench is None:
        return
    pool = pl.read_ndjson(bench / "pool.jsonl")
    devs = [pl.read_ndjson(bench / "targets" / t / "dev.jsonl") for t in TASKS]
    cand_text, tgt_text = row_text(pool), [x for d in devs for x in row_text(d)]
    weights = np.concatenate([np.full(d.height, 1.0 / (len(devs) * d.height)) for d in devs])
    ctx = ScoringContext(store=ArtifactStore(args.work_dir / "store"), embedder=MINILM, device="cpu")
    t = time.perf_counter()
    cand, tgt = ctx.embeddings(cand_text), ctx.embeddings(tgt_text)
    result = {"cpu": "this machine (2 cores)", "embed_s_or_cached": round(time.perf_counter() - t, 1),
              "dsir": bench_dsir(cand_text, tgt_text), "got": bench_got(cand, tgt, weights)}
    out = ROOT / "benchmarks" / "results" / "distribution.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
