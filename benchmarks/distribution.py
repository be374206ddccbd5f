"""tuneset's `dsir` and `got` against their references: same rows, same target, matched settings,
runs alternated, min and median over repeats, on this CPU with one thread per process.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/distribution.py --shared ../shared [--work-dir .tuneset/bench] [--repeats 7]

- DSIR: the `data-selection` package (HashedNgramDSIR: nltk WordPunct tokens, sha256 bucket hashing
  in Python, 10k buckets, num_proc=1) vs tuneset's vectorised featuriser (same tokens, murmur3
  hashing in C, 10k buckets, same 1e-8 smoothing): seconds for fit + log importance weights, and
  the overlap of the two top-15% by weight.
- GOT-D: POT's `sinkhorn_log` (numpy float64, its default backend; and torch float32, tuneset's
  precision and library) vs tuneset's chunked torch kernel, same reg, same cost, same stopping
  criterion (L2 norm of the column-marginal violation < tol; POT's `stopThr`), at tuneset's
  default tol and at POT's: seconds including building the cost, iterations, and the overlap of
  the top-15% by calibrated gradient.
Each run of one implementation is followed by a run of the next, so load from other jobs on the
cores hits all alike. Both use the benchmark's full pool (8,366 rows) and the dev rows of
banking77, sst2 and arc_easy as one target. Needs `pip install 'tuneset[bench]'`. Writes
benchmarks/results/distribution.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from bench_args import interleaved, parse_bench_args

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


def summary(seconds: list[float]) -> dict[str, Any]:
    return {"min_s": round(min(seconds), 3), "median_s": round(statistics.median(seconds), 3),
            "runs_s": [round(s, 3) for s in seconds]}


def bench_dsir(cand: list[str], target: list[str], repeats: int) -> dict:
    from data_selection import HashedNgramDSIR

    with tempfile.TemporaryDirectory() as tmp:
        raw_p, tgt_p = Path(tmp) / "raw.jsonl", Path(tmp) / "target.jsonl"
        raw_p.write_text("\n".join(json.dumps({"text": x}) for x in cand) + "\n")
        tgt_p.write_text("\n".join(json.dumps({"text": x}) for x in target) + "\n")
        counter = iter(range(10**6))

        def reference() -> np.ndarray:
            """Fit + weights from scratch: a fresh cache folder each run, so nothing is reused."""
            cache = Path(tmp) / f"cache{next(counter)}"
            ref = HashedNgramDSIR([str(raw_p)], [str(tgt_p)], cache_dir=str(cache), num_proc=1,
                                  min_example_length=0, raw_parse_example_fn=lambda e: e["text"],
                                  target_parse_example_fn=lambda e: e["text"])
            ref.fit_importance_estimator(num_tokens_to_fit="all")
            ref.compute_importance_weights()
            return np.concatenate([np.load(p) for p in sorted(Path(ref.log_importance_weights_dir).glob("*.npy"),
                                                                key=lambda p: int(p.stem))])

        times, out = interleaved({"reference": reference, "tuneset": lambda: dsir_log_weights(cand, [target])}, repeats)
    ours, ref_w = out["tuneset"], out["reference"]
    ref_s, our_s = summary(times["reference"]), summary(times["tuneset"])
    return {"rows": len(cand), "buckets": 10000, "repeats": repeats, "reference": ref_s, "tuneset": our_s,
            "reference_rows_per_s_at_min": round(len(cand) / ref_s["min_s"]), "tuneset_rows_per_s_at_min": round(len(cand) / our_s["min_s"]),
            "speedup_min": round(ref_s["min_s"] / our_s["min_s"], 1), "speedup_median": round(ref_s["median_s"] / our_s["median_s"], 1),
            "top15_overlap": round(top_overlap(ours, ref_w), 4),
            "weight_spearman": round(float(pl.DataFrame({"a": ours, "b": ref_w}).select(pl.corr("a", "b", method="spearman")).item()), 4)}


def bench_got(cand: np.ndarray, tgt: np.ndarray, weights: np.ndarray, repeats: int, reg: float = 0.1,
              tols: tuple[float, ...] = (1e-6, 1e-7)) -> dict:
    """Every implementation builds its own cost inside the timed call: POT takes a dense matrix,
    tuneset builds it in chunks (`tuneset`: kept between iterations, as below 1 GiB;
    `tuneset_recompute`: rebuilt every iteration, its path once the cost exceeds `cache_bytes`).
    Tolerances stop at 1e-7: in float32 the marginal violation floors near 3e-8 (both tuneset and
    POT's torch backend then run to the iteration cap)."""
    import ot

    a64 = np.full(len(cand), 1.0 / len(cand))
    c64, t64 = cand.astype(np.float64), tgt.astype(np.float64)
    c32, t32 = torch.from_numpy(cand.copy()), torch.from_numpy(tgt.copy())
    a32, b32 = torch.from_numpy(a64).float(), torch.from_numpy(weights).float()
    result: dict[str, Any] = {"rows": len(cand), "targets": len(tgt), "reg": reg, "repeats": repeats,
                              "pot": ot.__version__, "torch": torch.__version__}
    for tol in tols:
        def pot_numpy(tol: float = tol) -> tuple[np.ndarray, int]:
            cost = 1.0 - c64 @ t64.T
            _, log = ot.sinkhorn(a64, weights, cost, reg, method="sinkhorn_log", log=True, numItermax=10000, stopThr=tol)
            return reg * np.asarray(log["log_u"]), int(log["niter"]) + 1  # POT logs its 0-based loop index

        def pot_torch(tol: float = tol) -> tuple[np.ndarray, int]:
            cost = 1.0 - c32 @ t32.T
            _, log = ot.sinkhorn(a32, b32, cost, reg, method="sinkhorn_log", log=True, numItermax=10000, stopThr=tol)
            return reg * log["log_u"].double().numpy(), int(log["niter"]) + 1

        def tuneset(tol: float = tol) -> tuple[np.ndarray, int]:
            f, _, iters = sinkhorn_potentials(cand, tgt, weights, reg=reg, max_iter=10000, tol=tol, backend="chunked")
            return f, iters

        def tuneset_recompute(tol: float = tol) -> tuple[np.ndarray, int]:
            f, _, iters = sinkhorn_potentials(cand, tgt, weights, reg=reg, max_iter=10000, tol=tol, chunk=4096, cache_bytes=0, backend="chunked")
            return f, iters

        times, out = interleaved({"pot_numpy_f64": pot_numpy, "pot_torch_f32": pot_torch, "tuneset": tuneset,
                                  "tuneset_recompute": tuneset_recompute}, repeats)
        ours_f = out["tuneset"][0]
        row: dict[str, Any] = {}
        for name, (f, iters) in out.items():
            s = summary(times[name])
            row[name] = {**s, "iterations": iters, "ms_per_iteration_at_min": round(1000 * s["min_s"] / iters, 2)}
            if name != "tuneset":
                row[name]["top15_overlap_vs_tuneset"] = round(top_overlap(-calibrated_gradient(ours_f), -calibrated_gradient(f)), 4)
                row[name]["potential_max_abs_diff_vs_tuneset"] = float(f"{np.abs((ours_f - ours_f.mean()) - (f - f.mean())).max():.2e}")
        for name in ("pot_numpy_f64", "pot_torch_f32", "tuneset_recompute"):
            row[name]["tuneset_speedup_min"] = round(row[name]["min_s"] / row["tuneset"]["min_s"], 2)
            row[name]["tuneset_speedup_median"] = round(row[name]["median_s"] / row["tuneset"]["median_s"], 2)
        result[f"tol_{tol:g}"] = row
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args, bench = parse_bench_args(ap)
    if bench is None:
        return
    torch.set_num_threads(1)
    pool = pl.read_ndjson(bench / "pool.jsonl")
    devs = [pl.read_ndjson(bench / "targets" / t / "dev.jsonl") for t in TASKS]
    cand_text, tgt_text = row_text(pool), [x for d in devs for x in row_text(d)]
    weights = np.concatenate([np.full(d.height, 1.0 / (len(devs) * d.height)) for d in devs])
    ctx = ScoringContext(store=ArtifactStore(args.work_dir / "store"), embedder=MINILM, device="cpu")
    t = time.perf_counter()
    cand, tgt = ctx.embeddings(cand_text), ctx.embeddings(tgt_text)
    result = {"cpu": f"this machine ({os.cpu_count()} cores, shared with a fine-tuning job)",
              "threads": {"torch": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
              "embed_s_or_cached": round(time.perf_counter() - t, 1),
              "got": bench_got(cand, tgt, weights, args.repeats), "dsir": bench_dsir(cand_text, tgt_text, args.repeats)}
    out = ROOT / "benchmarks" / "results" / "distribution.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
