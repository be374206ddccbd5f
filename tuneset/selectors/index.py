"""faiss index choice by size, for every nearest-neighbour search over embeddings.

Up to `IVF_MIN_ROWS` vectors: exact inner-product search (`IndexFlatIP`) — exact, no training, and
on 384-d vectors faster than building anything smarter. Above: `IndexIVFFlat` with ~4 sqrt(n)
lists trained on a sample and `nprobe` lists searched, so a query costs ~n / sqrt(n) distance
evaluations instead of n, for a small recall loss (raise `nprobe` to trade speed back for recall).
"""

from __future__ import annotations

import math

import faiss
import numpy as np

IVF_MIN_ROWS = 200_000


def build_index(vectors: np.ndarray, nprobe: int = 16, seed: int = 0) -> faiss.Index:
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    if n < IVF_MIN_ROWS:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = int(4 * math.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(seed).choice(n, size=min(n, 64 * nlist), replace=False)
        index.train(x[np.sort(sample)])
        index.nprobe = nprobe
    index.add(x)
    return index
