"""Diversity and near-duplicate selectors on the shared embedding cache.

Both avoid all-pairs work: k-center greedy costs n per pick, SemDeDup compares rows only inside
their k-means cluster (faiss), so a million rows fit in minutes on a CPU.
"""

from __future__ import annotations

import math

import faiss
import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from tuneset.selectors.base import MapReduceSelector, Selector, id_order, register, row_text


def k_center_greedy(emb: np.ndarray, max_centers: int, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center (farthest-first traversal) in cosine distance.

    Returns (score, order): a picked row's score is its distance to the nearest earlier center when
    it was picked; other rows score their final distance to the nearest center. Picking distances
    never increase, so the top-k rows by score are exactly the first k centers."""
    n = len(emb)
    x = np.ascontiguousarray(emb, dtype=np.float32)
    dist = np.full(n, np.inf, dtype=np.float32)
    score = np.zeros(n)
    order = []
    cur = first
    for step in range(min(max_centers, n)):
        score[cur] = 3.0 if step == 0 else float(dist[cur])  # cosine distances lie in [0, 2]
        order.append(cur)
        np.minimum(dist, 1.0 - x @ x[cur], out=dist)
        dist[cur] = -1.0
        cur = int(np.argmax(dist))
    rest = dist >= 0
    score[rest] = dist[rest]
    return score, np.asarray(order)


class DiversityParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_centers: int = Field(default=20000, ge=1)  # greedy picks; rows beyond score their coverage distance


@register
class DiversitySelector(Selector):
    """k-center greedy on embeddings: high = far from everything picked before (covers new ground)."""

    name = "diversity"
    Params = DiversityParams
    uses = frozenset({"embedder", "seed"})
    row_local = False
    revision = 2  # the first center is drawn by row id, not position

    def _score(self, rows: pl.DataFrame) -> pl.DataFrame:
        # Visited in an order fixed by the ids, from the first of them: the same centers, ties
        # between equal rows included, whatever the pool's row order.
        perm = id_order(rows["id"], self.ctx.seed)
        score, order = k_center_greedy(self.ctx.embeddings(row_text(rows[perm])), self.params.max_centers, 0)
        pick = np.zeros(len(perm))
        pick[perm[order]] = np.arange(1, len(order) + 1)
        out = np.empty(len(perm))
        out[perm] = score
        return pl.DataFrame({"id": rows["id"], "score": out, "pick_order": pick})


def cluster_visit_order(emb: np.ndarray, n_clusters: int | None = None, seed: int = 0, niter: int = 10) -> list[np.ndarray]:
    """SemDeDup's clusters: spherical k-means (faiss), each cluster's rows farthest-from-centroid
    first, the paper's choice of which copy to keep (the prototypical ones go)."""
    n, d = emb.shape
    if n < 2:
        return [np.arange(n)]
    x = np.ascontiguousarray(emb, dtype=np.float32)
    k = n_clusters or max(1, min(n // 50, int(math.sqrt(n))))
    km = faiss.Kmeans(d, k, niter=niter, seed=seed, spherical=True, verbose=False, max_points_per_centroid=64)
    km.train(x)
    sim_c, assign = km.index.search(x, 1)
    assign, sim_c = assign.ravel(), sim_c.ravel()
    order = np.lexsort((sim_c, assign))  # by cluster, then least central first
    return np.split(order, np.flatnonzero(np.diff(assign[order])) + 1)


def greedy_duplicates(emb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """One cluster, rows in visit order: a row whose cosine to a row kept before it exceeds
    `threshold` duplicates that row. Returns (position of the row each duplicates or -1, max
    cosine to an earlier kept row)."""
    n = len(emb)
    dup_of, best = np.full(n, -1, dtype=np.int64), np.zeros(n)
    if n < 2:
        return dup_of, best
    x = np.ascontiguousarray(emb, dtype=np.float32)
    sims = x @ x.T
    kept: list[int] = []
    for j in range(n):
        if kept:
            col = sims[j, kept]
            b = int(np.argmax(col))
            best[j] = col[b]
            if col[b] > threshold:
                dup_of[j] = kept[b]
                continue
        kept.append(j)
    return dup_of, best


def semantic_duplicates(
    emb: np.ndarray, threshold: float = 0.95, n_clusters: int | None = None, seed: int = 0, niter: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """SemDeDup: k-means clusters, then inside each cluster every row whose cosine to a row kept
    before it exceeds `threshold` is a near-duplicate of that row. Returns (index of the row each
    duplicates or -1, max cosine to an earlier kept row)."""
    dup_of, best = np.full(len(emb), -1, dtype=np.int64), np.zeros(len(emb))
    for members in cluster_visit_order(emb, n_clusters, seed, niter):
        local, sim = greedy_duplicates(emb[members], threshold)
        dup_of[members] = np.where(local >= 0, members[np.maximum(local, 0)], -1)
        best[members] = sim
    return dup_of, best


class SemDedupParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(default=0.95, gt=0, le=1)  # cosine above which a row is a near-duplicate
    n_clusters: int | None = Field(default=None, ge=1)  # None: min(n / 50, sqrt(n))


@register
class SemDedupSelector(MapReduceSelector):
    """SemDeDup: 1 for rows to keep, 0 for near-duplicates; `duplicate_of` names the kept row.

    Map-reduce: k-means runs in the flow's process on the cached embeddings; each cluster's
    comparisons (the quadratic part) are a part a worker scores on its own."""

    name = "semdedup"
    Params = SemDedupParams
    uses = frozenset({"embedder", "seed"})
    revision = 2  # clusters and ties in an order fixed by the row ids, not their positions

    def plan(self, rows: pl.DataFrame, totals: dict[str, np.ndarray]) -> tuple[None, list[np.ndarray]]:
        perm = id_order(rows["id"], self.ctx.seed)  # k-means and ties see the same order in any pool order
        emb = self.ctx.embeddings(row_text(rows[perm]))
        return None, [perm[part] for part in cluster_visit_order(emb, self.params.n_clusters, self.ctx.seed)]

    def score_part(self, rows: pl.DataFrame, state: None) -> pl.DataFrame:
        dup_of, sim = greedy_duplicates(self.ctx.embeddings(row_text(rows)), self.params.threshold)
        ids = rows["id"].to_list()
        return pl.DataFrame({
            "id": ids, "score": (dup_of < 0).astype(np.float64), "max_similarity": sim,
            "duplicate_of": [ids[j] if j >= 0 else "" for j in dup_of],
        })
