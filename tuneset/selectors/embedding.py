"""Embedding selectors: similarity of each candidate to the target dev examples."""

from __future__ import annotations

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from tuneset.selectors.base import Selector, register, row_text
from tuneset.selectors.index import build_index


class KnnParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: int = Field(default=5, ge=1)


@register
class EmbeddingKnnSelector(Selector):
    """Mean cosine similarity to the k nearest dev examples of each target task (faiss, exact
    inner product on normalised vectors); the row's score is its best task, as in LESS's max.
    Columns `vs_<task>` let a policy split the budget across tasks (`select.targets`)."""

    name = "embedding_knn"
    Params = KnnParams
    uses = frozenset({"embedder", "targets"})

    revision = 2  # adds nearest_dev

    def _score(self, rows: pl.DataFrame) -> pl.DataFrame:
        cand = self.ctx.embeddings(row_text(rows))
        cols: dict[str, np.ndarray] = {}
        for task, dev in sorted(self.ctx.targets.items()):
            tgt = self.ctx.embeddings(row_text(dev))
            index = build_index(tgt)
            k = min(self.params.k, tgt.shape[0])
            sims, _ = index.search(cand, k)
            cols[f"vs_{task}"] = sims.mean(axis=1).astype(np.float64)
        best = np.max(np.stack(list(cols.values())), axis=0)
        return pl.DataFrame({"id": rows["id"], "score": best, **cols, "nearest_dev": nearest_dev(self.ctx, cand)})


def nearest_dev(ctx, cand: np.ndarray) -> list[str]:
    """Each candidate's most similar dev row over all target tasks, as `task/id (cos 0.83)`: the
    reason a similarity-based selector picked it, in words a user can check."""
    names = [(task, i) for task, dev in sorted(ctx.targets.items()) for i in dev["id"].to_list()]
    tgt = np.concatenate([ctx.embeddings(row_text(dev)) for _, dev in sorted(ctx.targets.items())])
    sims, idx = build_index(tgt).search(np.ascontiguousarray(cand, dtype=np.float32), 1)
    return [f"{names[j][0]}/{names[j][1]} (cos {s:.2f})" for s, j in zip(sims[:, 0], idx[:, 0])]
