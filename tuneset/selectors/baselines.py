"""Baselines every strategy must beat: uniform random, and response length."""

from __future__ import annotations

import polars as pl
from pydantic import BaseModel, ConfigDict

from tuneset.selectors.base import Selector, register, row_uniforms


class RandomParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int | None = None  # None: the run's seed, so each compare seed draws a new subset


@register
class RandomSelector(Selector):
    """Uniform scores from a hash of (seed, id): stable per row, independent of row order and sharding."""

    name = "random"
    Params = RandomParams
    uses = frozenset({"seed"})

    def _score(self, rows: pl.DataFrame) -> pl.DataFrame:
        seed = self.params.seed if self.params.seed is not None else self.ctx.seed
        return pl.DataFrame({"id": rows["id"], "score": row_uniforms(rows["id"], seed)})


@register
class LengthSelector(Selector):
    """Response length in characters: longer responses often carry more to learn from."""

    name = "length"

    def _score(self, rows: pl.DataFrame) -> pl.DataFrame:
        return pl.DataFrame({
            "id": rows["id"],
            "score": rows["response"].str.len_chars().cast(pl.Float64),
            "instruction_chars": rows["instruction"].str.len_chars().cast(pl.Float64),
        })
