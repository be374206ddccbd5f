"""A million candidates on one CPU machine: `got`, `embedding_knn` and `semdedup` on 1,000,000
cached 384-d embeddings against the benchmark's targets; each runs in its own process so its wall
time and peak memory (max RSS, embeddings included) are its own.

    python benchmarks/scale.py --shared ../shared [--rows 1000000] [--work-dir .tuneset/bench]

The embeddings: the 8,366 real pool rows embedded by all-MiniLM-L6-v2, plus synthetic rows, each
a real pool embedding plus isotropic Gaussian noise (norm 0.75, so cosine ~0.8 to its source),
renormalised: the same topics and density structure as the pool, at 120x its size. Embedding
throughput (rows/s) is measured separately on real pool text. Writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
TASKS = ["banking77", "sst2", "arc_easy"]


def build(args) -> dict:
    from tuneset.models.embed import MINILM
    from tuneset.selectors.base import row_text
    from tuneset.selectors.context import ScoringContext
    from tuneset.store import ArtifactStore

    bench = args.shared / "bench"
    pool = pl.read_ndjson(bench / "pool.jsonl")
    ctx = ScoringContext(store=ArtifactStore(args.work_dir / "store"), embedder=MINILM, device="cpu")
    real = ctx.embeddings(row_text(pool))
    tgt = np.concatenate([ctx.embeddings(row_text(pl.read_ndjson(bench / "targets" / t / "dev.jsonl"))) for t in TASKS])
    # Throughput on fresh text: the first 2,000 pool rows with a suffix, so nothing is cached.
    sample = [t + " (fresh)" for t in row_text(pool)[:2000]]
    from tuneset.models.embed import embed_texts

    t = time.perf_counter()
    embed_texts(MINILM, sample, device="cpu")
    rate = len(sample) / (time.perf_counter() - t)
    rng = np.random.default_rng(0)
    n_syn = args.rows - len(real)
    out = np.lib.format.open_memmap(args.work_dir / "scale_emb.npy", mode="w+", dtype=np.float32, shape=(args.rows, real.shape[1]))
    out[: len(real)] = real
    for s in range(0, n_syn, 100_000):
        m = min(100_000, n_syn - s)
        x = real[rng.integers(len(real), size=m)] + rng.normal(scale=0.75 / np.sqrt(real.shape[1]), size=(m, real.shape[1]))
        out[len(real) + s: len(real) + s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()
    np.save(args.work_dir / "scale_tgt.npy", tgt)
    return {"real_rows": len(real), "synthetic_rows": n_syn, "embed_rows_per_s": round(rate, 1)}


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: reset at exec, unlike ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(name: str, work: Path) -> dict:
    """Child process: load the embeddings, run one selector core, report time and peak RSS."""
    import torch

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    emb = np.load(work / "scale_emb.npy")
    tgt = np.load(work / "scale_tgt.npy")
    load_s = time.perf_counter() - t0
    t = time.perf_counter()
    if name == "got":
        from tuneset.selectors.distribution import calibrated_gradient, sinkhorn_potentials

        f, _, iters = sinkhorn_potentials(emb, tgt)
        extra = {"iterations": iters, "score_std": float(calibrated_gradient(f).std())}
    elif name == "embedding_knn":
        from tuneset.selectors.index import build_index

        sims, _ = build_index(tgt).search(emb, 5)
        extra = {"mean_sim": float(sims.mean())}
    else:
        from tuneset.selectors.diversity import semantic_duplicates

        dup_of, _ = semantic_duplicates(emb, threshold=0.95)
        extra = {"near_duplicates": int((dup_of >= 0).sum())}
    wall = time.perf_counter() - t
    peak = peak_rss_mib()
    return {"selector": name, "rows": len(emb), "wall_s": round(wall, 1), "load_s": round(load_s, 1),
            "peak_rss_mib": round(peak), **extra}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--work-dir", type=Path, default=ROOT / ".tuneset" / "bench")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        print(json.dumps(run_one(args.run, args.work_dir)))
        return
    if not (args.shared / "bench" / "pool.jsonl").exists():
        print(f"skipped: no benchmark at {args.shared / 'bench'}")
        return
    args.work_dir.mkdir(parents=True, exist_ok=True)
    result = {"cpu": "this machine (2 cores)", "data": build(args), "selectors": []}
    for name in ["got", "embedding_knn", "semdedup"]:
        out = subprocess.run([sys.executable, __file__, "--run", name, "--work-dir", str(args.work_dir)],
                             capture_output=True, text=True, check=True)
        result["selectors"].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(result["selectors"][-1], flush=True)
    (ROOT / "benchmarks" / "results" / "scale.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
