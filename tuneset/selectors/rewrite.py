"""CLEAR's auto-correct as a producer of proposals: the reference model answers each low-confidence
row itself, and both answers are scored by the same confidence measure. Like `label_quality`'s
`suggested`, the proposal is a column; whether it replaces the response is curation's decision
(`curate.rewrite.margin`), so the model runs here, where scores are sharded and cached.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from tuneset.models.lm import generate_greedy
from tuneset.selectors.base import Selector, register
from tuneset.selectors.confidence import ConfidenceParams, ConfidenceSelector


class RewriteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    confidence: ConfidenceParams = Field(default_factory=ConfidenceParams)  # the measure both answers are scored by
    below: float = Field(default=0.3, ge=0, le=1)  # answer rows whose given confidence is under this
    max_new_tokens: int = Field(default=128, ge=1)


@register
class RewriteSelector(Selector):
    """score: the given response's confidence. `proposed`: the model's answer ('' where the row was
    not tried or the answer is empty), `proposed_confidence` and `gain` (proposed minus given; 0
    without a proposal)."""

    name = "rewrite"
    judges = True
    Params = RewriteParams
    uses = ConfidenceSelector.uses
    revision = ConfidenceSelector.revision  # scored by its measure: re-keyed with it

    def _score(self, rows: pl.DataFrame) -> pl.DataFrame:
        measure = ConfidenceSelector(self.params.confidence).fit(self.ctx)
        given = measure.score(rows)["score"].to_numpy()
        proposed, new = [""] * rows.height, np.zeros(rows.height)
        todo = np.flatnonzero(given < self.params.below)
        if len(todo):
            lm = self.ctx.lm()
            # The answer is scored within max_length beside its instruction: leave the prompt half.
            cap = min(self.params.max_new_tokens, self.ctx.max_length // 2)
            answers = generate_greedy(lm.model, lm.tokenizer, [rows["instruction"][int(k)] for k in todo],
                                      cap, self.ctx.max_batch_tokens, self.ctx.max_length, what="rewrite: model answers")
            tried = [(int(k), a.strip()) for k, a in zip(todo, answers) if a.strip()]
            if tried:
                cand = rows[[k for k, _ in tried]].with_columns(pl.Series("response", [a for _, a in tried]))
                for (k, a), c in zip(tried, measure.score(cand)["score"].to_list()):
                    proposed[k], new[k] = a, c
        has = np.array([p != "" for p in proposed])
        return pl.DataFrame({"id": rows["id"], "score": given, "proposed": proposed, "proposed_confidence": new,
                             "gain": np.where(has, new - given, 0.0)})
