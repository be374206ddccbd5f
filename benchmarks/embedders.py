"""Embedding tiers against MiniLM: throughput on real pool rows, and how much of MiniLM's selection
each tier keeps, computed with the selectors' own math on each tier's embeddings.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/embedders.py --shared ../shared [--rows 2000] [--repeats 3]

- Rows: the first `--rows` rows of the bench pool, text = instruction + "\\n" + response (what every
  embedding selector embeds); targets: the dev rows of banking77, sst2 and arc_easy.
- Throughput: rows/s of `embed_texts` per tier, model already loaded, runs alternated between tiers
  (so load from other jobs hits all alike), min and median over `--repeats`. One thread each.
- Fidelity vs `minilm`, on the same rows: top-15% overlap of `got` (Sinkhorn potentials to the
  target mixture, calibrated gradient) and of `embedding_knn` (mean cosine to the 5 nearest dev
  rows, best task); SemDeDup's near-duplicate pairs at the selector's cosine 0.95, and at the
  tier's own threshold that flags as many rows as MiniLM at 0.95 (a static model's cosines run on
  another scale).
- `--full-pool-tiers`: the same fidelity on the whole pool (8,366 rows) for the listed tiers, through
  the store's embeddings cache (MiniLM's is reused where present).
Builds each tier into the user cache first (timed once). Writes benchmarks/results/embedders.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from bench_args import parse_bench_args

from tuneset.models import embed
from tuneset.selectors.base import row_text
from tuneset.selectors.context import ScoringContext
from tuneset.selectors.distribution import calibrated_gradient, sinkhorn_potentials
from tuneset.selectors.diversity import semantic_duplicates
from tuneset.store import ArtifactStore

ROOT = Path(__file__).resolve().parent.parent
TASKS = ["banking77", "sst2", "arc_easy"]
TIERS = [embed.MINILM, embed.MINILM_ONNX, embed.MINILM_ONNX_INT8, embed.MINILM_STATIC]


def top_overlap(a: np.ndarray, b: np.ndarray, frac: float = 0.15) -> float:
    k = int(round(len(a) * frac))
    return len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k


def got_scores(cand: np.ndarray, tgts: list[np.ndarray]) -> np.ndarray:
    """`got`'s score: transport to the equal-weight mixture of the tasks' dev rows."""
    weights = np.concatenate([np.full(len(t), 1.0 / (len(tgts) * len(t))) for t in tgts])
    f, _, _ = sinkhorn_potentials(cand, np.concatenate(tgts), weights)
    return -calibrated_gradient(f)


def knn_scores(cand: np.ndarray, tgts: list[np.ndarray], k: int = 5) -> np.ndarray:
    """`embedding_knn`'s score: mean cosine to the k nearest dev rows of each task, best task."""
    per_task = [np.sort(cand @ t.T, axis=1)[:, -min(k, len(t)):].mean(1) for t in tgts]
    return np.max(np.stack(per_task), axis=0)


def dup_pairs(emb: np.ndarray, threshold: float) -> set[frozenset[int]]:
    dup_of, _ = semantic_duplicates(emb, threshold)
    return {frozenset((int(i), int(j))) for i, j in enumerate(dup_of) if j >= 0}


def matched_threshold(emb: np.ndarray, n_flagged: int) -> float:
    """The cosine threshold at which SemDeDup on `emb` flags about `n_flagged` rows: the tier's
    `max_similarity` quantile (each row's best cosine to an earlier kept row in its cluster)."""
    _, best = semantic_duplicates(emb, 1.0)
    return float(np.sort(best)[::-1][max(n_flagged - 1, 0)]) if n_flagged else 1.0


def fidelity(ref: np.ndarray, emb: np.ndarray, ref_tgts: list[np.ndarray], tgts: list[np.ndarray]) -> dict[str, Any]:
    ref_pairs = dup_pairs(ref, 0.95)
    pairs = dup_pairs(emb, 0.95)
    n_ref_flagged = len(ref_pairs)
    thr = matched_threshold(emb, n_ref_flagged)
    pairs_m = dup_pairs(emb, thr)

    def pair_stats(p: set) -> dict[str, Any]:
        hit = len(p & ref_pairs)
        return {"pairs": len(p), "shared_with_minilm": hit, "recall_of_minilm_pairs": round(hit / max(len(ref_pairs), 1), 3),
                "precision": round(hit / max(len(p), 1), 3)}

    return {"rows": len(ref), "got_top15_overlap": round(top_overlap(got_scores(ref, ref_tgts), got_scores(emb, tgts)), 4),
            "embedding_knn_top15_overlap": round(top_overlap(knn_scores(ref, ref_tgts), knn_scores(emb, tgts)), 4),
            "semdedup_minilm_pairs_at_0.95": len(ref_pairs), "semdedup_at_0.95": pair_stats(pairs),
            "semdedup_at_matched_threshold": {"threshold": round(thr, 4), **pair_stats(pairs_m)}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tiers", default=",".join(TIERS))
    ap.add_argument("--full-pool-tiers", default=embed.MINILM_STATIC, help="comma-separated; '' for none")
    args, bench = parse_bench_args(ap)
    if bench is None:
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(1)
    tiers = [t for t in args.tiers.split(",") if t]
    pool = pl.read_ndjson(bench / "pool.jsonl")
    devs = [pl.read_ndjson(bench / "targets" / t / "dev.jsonl") for t in TASKS]
    texts = row_text(pool.head(args.rows))
    dev_texts = [row_text(d) for d in devs]

    builds: dict[str, Any] = {}
    for tier in tiers:
        t = time.perf_counter()
        cached = tier in embed.TIERS and embed.tier_built(tier)
        if tier in embed.TIERS:
            embed.build_tier(tier)
        embed.load_embedder(tier, "cpu").encode(texts[:16], 16)  # load and warm up, untimed below
        builds[tier] = {"build_and_load_s": round(time.perf_counter() - t, 1), "was_cached": cached,
                        "build_id": embed.build_id(embed.TIERS[tier]) if tier in embed.TIERS else None}
        print(tier, builds[tier], flush=True)

    times: dict[str, list[float]] = {t: [] for t in tiers}
    embs: dict[str, np.ndarray] = {}
    for rep in range(args.repeats):
        for tier in tiers:
            t = time.perf_counter()
            embs[tier] = embed.embed_texts(tier, texts)
            times[tier].append(time.perf_counter() - t)
            print(f"repeat {rep} {tier}: {len(texts) / times[tier][-1]:.1f} rows/s", flush=True)
    tgt_embs = {tier: [embed.embed_texts(tier, d) for d in dev_texts] for tier in tiers}

    ref = embed.MINILM
    result: dict[str, Any] = {"cpu": f"this machine ({os.cpu_count()} cores, shared with a fine-tuning job)",
                              "threads": {"torch": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
                              "rows": len(texts), "repeats": args.repeats, "tiers": {}}
    for tier in tiers:
        s = times[tier]
        row = {**builds[tier], "dims": int(embs[tier].shape[1]), "min_s": round(min(s), 2), "median_s": round(statistics.median(s), 2),
               "runs_s": [round(x, 2) for x in s], "rows_per_s_best": round(len(texts) / min(s), 1),
               "rows_per_s_median": round(len(texts) / statistics.median(s), 1)}
        if ref in embs and tier != ref:
            row["speedup_vs_minilm_min"] = round(min(times[ref]) / min(s), 1)
            row["speedup_vs_minilm_median"] = round(statistics.median(times[ref]) / statistics.median(s), 1)
            if embs[tier].shape[1] == embs[ref].shape[1]:
                row["cosine_to_minilm_mean"] = round(float((embs[tier] * embs[ref]).sum(1).mean()), 4)
                row["cosine_to_minilm_min"] = round(float((embs[tier] * embs[ref]).sum(1).min()), 4)
            row["fidelity"] = fidelity(embs[ref], embs[tier], tgt_embs[ref], tgt_embs[tier])
        result["tiers"][tier] = row

    full = [t for t in args.full_pool_tiers.split(",") if t]
    if full:
        all_texts = row_text(pool)
        store = ArtifactStore(args.work_dir / "store")
        ctx_ref = ScoringContext(store=store, embedder=ref, device="cpu")
        t = time.perf_counter()
        ref_all, ref_tgts = ctx_ref.embeddings(all_texts), [ctx_ref.embeddings(d) for d in dev_texts]
        result["full_pool"] = {"minilm_embed_s_or_cached": round(time.perf_counter() - t, 1)}
        for tier in full:
            ctx = ScoringContext(store=store, embedder=tier, device="cpu")
            t = time.perf_counter()
            emb_all, tgts = ctx.embeddings(all_texts), [ctx.embeddings(d) for d in dev_texts]
            result["full_pool"][tier] = {"embed_s_or_cached": round(time.perf_counter() - t, 1),
                                         **fidelity(ref_all, emb_all, ref_tgts, tgts)}
    out = ROOT / "benchmarks" / "results" / "embedders.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
