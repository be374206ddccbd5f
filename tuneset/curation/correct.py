"""CLEAR's auto-correct for free-form responses: let the reference model answer low-confidence rows
itself and keep its answer only where the same confidence measure clearly prefers it."""

from __future__ import annotations

import numpy as np
import polars as pl

from tuneset.models.lm import generate_greedy
from tuneset.recipe import RewriteConfig
from tuneset.selectors.base import Selector
from tuneset.selectors.context import ScoringContext


def propose_rewrites(
    ctx: ScoringContext, rows: pl.DataFrame, confidence: Selector, old_scores: pl.DataFrame, cfg: RewriteConfig,
) -> dict[str, tuple[str, str]]:
    """id -> (model answer, reason) for rows whose confidence is below `cfg.below` and whose model
    answer scores at least `cfg.margin` higher under `confidence` (the same fitted selector)."""
    table = rows.select("id", "instruction").join(old_scores.select("id", pl.col("confidence").alias("old")), on="id")
    todo = table.filter(pl.col("old") < cfg.below)
    if todo.is_empty():
        return {}
    lm = ctx.lm()
    answers = generate_greedy(lm.model, lm.tokenizer, todo["instruction"].to_list(), cfg.max_new_tokens,
                              ctx.max_batch_tokens, ctx.max_length)
    cand = todo.select("id", "instruction").with_columns(pl.Series("response", [a.strip() for a in answers]))
    cand = cand.filter(pl.col("response") != "")
    if cand.is_empty():
        return {}
    new = confidence.fit(ctx).score(cand)["score"].to_numpy()
    old = cand.select("id").join(todo, on="id", maintain_order="left")["old"].to_numpy()
    better = np.flatnonzero(new >= old + cfg.margin)
    ids, texts = cand["id"].to_list(), cand["response"].to_list()
    return {ids[k]: (texts[k], f"rewritten: model answer confidence {new[k]:.2f} vs given {old[k]:.2f}") for k in better}
