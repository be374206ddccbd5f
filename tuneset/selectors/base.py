"""The one selector contract: score every candidate row, validated, cacheable by fingerprint.

Scoring is separate from deciding: a selector returns a number per row and a direction
(`higher_is_better`); policies in `tuneset.selection` turn score columns into a selection.
Selectors read models and cached artifacts through the `ScoringContext`; they never train.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl
from pydantic import BaseModel

from tuneset import __version__
from tuneset.data.fingerprint import fingerprint
from tuneset.errors import TunesetError
from tuneset.recipe import WarmupConfig
from tuneset.registry import NoParams, Registry, check_params_model, validate_params
from tuneset.selectors.context import USES, DeclaredView, ScoringContext


class ScoreError(TunesetError):
    """A selector broke the contract (missing ids, NaN...): a bug in the selector, named."""


def row_uniforms(ids: list[str] | pl.Series, seed: int, stream: str = "") -> np.ndarray:
    """A uniform draw in [0, 1) per row from a hash of (stream, seed, id): a selector's randomness
    that follows the row, not its position, so a reordered or resharded pool scores the same. A
    selector other than `random` names its own `stream`, so its draws at a seed are not the random
    baseline's draws at that seed."""
    return np.array([int.from_bytes(hashlib.sha256(f"{stream}{seed}:{i}".encode()).digest()[:8], "big") / 2**64
                     for i in ids])


def id_order(ids: list[str] | pl.Series, seed: int) -> np.ndarray:
    """Positions in an order fixed by the rows' ids: a selector whose result depends on visit
    order (k-means, a greedy pass, which of two equal rows wins a tie) visits rows in it."""
    return np.argsort(row_uniforms(ids, seed), kind="stable")


def row_text(rows: pl.DataFrame) -> list[str]:
    return [f"{i}\n{r}" for i, r in zip(rows["instruction"].to_list(), rows["response"].to_list())]


class Selector(ABC):
    """Subclass, set `name` and `Params`, implement `_score(rows) -> DataFrame[id, score, ...]`."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams
    higher_is_better: ClassVar[bool] = True
    # Scores that say whether a response is *right* (the reference model as a judge): curation acts
    # on them only after the judge-competence gate (tuneset.curation.judge) measured them.
    judges: ClassVar[bool] = False
    # A row's score depends only on that row (and the fitted context): the pool can be sharded.
    row_local: ClassVar[bool] = True
    # Which parts of the context the scores depend on; they enter the cache key.
    uses: ClassVar[frozenset[str]] = frozenset()
    # Bump when a change to `_score` changes the scores, so caches written by older code are
    # recomputed, not reused (the cache key otherwise sees only params, inputs and the package
    # version). Revision 1 adds nothing to the key: caches from before revisions stay valid.
    revision: ClassVar[int] = 1

    def __init__(self, params: BaseModel | dict[str, Any] | None = None):
        self.params = params if isinstance(params, BaseModel) else self.Params.model_validate(params or {})
        self.ctx: ScoringContext | None = None

    def fit(self, ctx: ScoringContext) -> Self:
        if "targets" in self.uses and not ctx.targets:
            raise TunesetError(f"selector '{self.name}' needs target dev rows; give the recipe at least one task")
        self._full_ctx = ctx
        self.ctx = DeclaredView(ctx, self.uses, self.name)  # type: ignore[assignment]
        return self

    def fingerprint(self) -> str:
        self._need_ctx()
        ctx = self._full_ctx
        deps = {
            "lm": ctx.model_identity if "lm" in self.uses else None,
            "max_length": ctx.max_length if "lm" in self.uses else None,
            "embedder": ctx.embedder_identity if "embedder" in self.uses else None,
            "targets": ctx.targets_fingerprint if "targets" in self.uses else None,
            "seed": ctx.seed if "seed" in self.uses else None,
            "warmup": ctx.warmup_identity if "warmup" in self.uses else None,
        }
        if "base_lm" in self.uses:  # only where declared: every other selector's key stays as it was
            deps["base_lm"], deps["max_length"] = ctx.base_identity, ctx.max_length
        if "batches" in self.uses:
            deps["max_batch_tokens"] = ctx.max_batch_tokens
        revision = [self.revision] if self.revision != 1 else []
        return fingerprint(self.name, self.params.model_dump(mode="json"), deps, __version__, *revision)

    def score(self, rows: pl.DataFrame) -> pl.DataFrame:
        self._need_ctx()
        out = self._score(rows)
        return validate_scores(self.name, rows, out)

    @abstractmethod
    def _score(self, rows: pl.DataFrame) -> pl.DataFrame: ...

    def prepare(self, rows: pl.DataFrame) -> None:
        """Fill the context's per-row caches with what `_score` will read for `rows`. Row-local by
        contract: the score flow runs it shard by shard on its task runner (so a Dask or Ray
        cluster spreads the embedding and LM passes) before a pool-wide selector's global step,
        which then finds every feature cached. Default: the row embeddings a pool-wide selector
        that uses the embedder reads."""
        if not self.row_local and "embedder" in self.uses:
            self.ctx.embeddings(row_text(rows))

    def needs_prepare(self, rows: pl.DataFrame) -> bool:
        """Whether `prepare` would compute anything for `rows`: a rerun over a pool whose features
        are all cached skips the shard fan-out (with its per-shard model loads) entirely. An
        override of `prepare` overrides this too."""
        return not self.row_local and "embedder" in self.uses and self.ctx.missing_embeddings(row_text(rows)) > 0

    def warmup_config(self) -> WarmupConfig | None:
        """Settings of the warm-up fine-tune this selector reads (selectors using "warmup"); the
        score flow trains it before scoring."""
        return None

    def _need_ctx(self) -> ScoringContext:
        if self.ctx is None:
            raise ScoreError(f"selector '{self.name}': call fit(ctx) before scoring")
        return self.ctx


class MapReduceSelector(Selector):
    """A pool-wide selector whose global step splits into sharded work, so a Dask or Ray runner
    spreads it too: `partial` of each row shard, summed (map, reduce); `plan` in the flow's process
    from the totals, naming the parts of the pool (row indices) that can be scored apart; then
    `score_part` on each part (map) and `finish_scores` on the joined scores.

    `_score` runs the same steps in one process, so a runner changes where work runs, not the
    scores. For that, `partial` must sum exactly whatever the shard split (counts, in float64)."""

    row_local = False

    def partial(self, rows: pl.DataFrame) -> dict[str, np.ndarray]:
        """Statistics of one shard that add up to the pool's; none by default."""
        return {}

    @abstractmethod
    def plan(self, rows: pl.DataFrame, totals: dict[str, np.ndarray]) -> tuple[Any, list[np.ndarray]]:
        """(state every part needs, row index arrays of the parts), from the pool and its totals."""

    @abstractmethod
    def score_part(self, rows: pl.DataFrame, state: Any) -> pl.DataFrame:
        """Scores (id, score, ...) of one part's rows, given the plan's state."""

    def finish_scores(self, scores: pl.DataFrame) -> pl.DataFrame:
        """The last pool-wide touch on the joined scores (in pool order); none by default."""
        return scores

    def _score(self, rows: pl.DataFrame) -> pl.DataFrame:
        state, parts = self.plan(rows, self.partial(rows))
        return self.join_parts(rows, [self.score_part(rows[p], state) for p in parts])

    def join_parts(self, rows: pl.DataFrame, frames: list[pl.DataFrame]) -> pl.DataFrame:
        joined = rows.select("id").join(pl.concat(frames), on="id", how="left", maintain_order="left")
        return self.finish_scores(joined)


def add_partials(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: a[k] + b[k] if k in a else b[k] for k in b} | {k: v for k, v in a.items() if k not in b}


def contiguous_parts(n: int, size: int) -> list[np.ndarray]:
    return [np.arange(s, min(s + size, n)) for s in range(0, n, size)]


def validate_scores(name: str, rows: pl.DataFrame, out: pl.DataFrame) -> pl.DataFrame:
    """Exactly one finite, non-null score per input id, in input order. Extra columns explain the
    score: numeric ones must be finite too; text ones (e.g. a suggested label) non-null."""
    if "id" not in out.columns or "score" not in out.columns:
        raise ScoreError(f"selector '{name}' must return columns id and score, got {out.columns}")
    if out.height != rows.height or out["id"].n_unique() != out.height:
        raise ScoreError(f"selector '{name}' returned {out.height} rows ({out['id'].n_unique()} unique ids) for {rows.height} inputs")
    out = rows.select("id").join(out, on="id", how="left", maintain_order="left")
    for col in out.columns[1:]:
        if col != "score" and out[col].dtype == pl.String:
            if out[col].null_count():
                raise ScoreError(f"selector '{name}' column '{col}': {out[col].null_count()} missing values")
            continue
        s = out[col].cast(pl.Float64, strict=False)
        bad = s.is_null() | ~s.is_finite()
        if bad.any():
            first = out.filter(bad)["id"][0]
            raise ScoreError(f"selector '{name}' column '{col}': {int(bad.sum())} missing or non-finite values (first id {first})")
        out = out.with_columns(s.alias(col))
    return out


def _check_selector(cls: type[Selector]) -> None:
    """Registration checks: `uses` is a closed set, and `prepare` and `needs_prepare` change
    together (a new `prepare` with the default check would skip, or always run, the wrong pass);
    the direction is a bool, and Params refuse unknown keys."""
    check_params_model(f"selector '{cls.name}'", cls.Params)
    if not isinstance(cls.higher_is_better, bool):
        raise ValueError(f"selector '{cls.name}': higher_is_better must be True or False, not {cls.higher_is_better!r}")
    unknown = set(cls.uses) - set(USES)
    if unknown:
        raise ValueError(f"selector '{cls.name}' declares unknown uses {sorted(unknown)}; valid: {', '.join(USES)}")
    if (cls.prepare is Selector.prepare) != (cls.needs_prepare is Selector.needs_prepare):
        raise ValueError(f"selector '{cls.name}' overrides one of prepare / needs_prepare but not the other; "
                         "override both, so a cached pool skips exactly the work prepare would do")


SELECTORS: Registry[type[Selector]] = Registry("selector", _check_selector)
register, selector_names, get_selector = SELECTORS.add, SELECTORS.names, SELECTORS.get


def make_selector(name: str, params: dict[str, Any] | None = None) -> Selector:
    cls = get_selector(name)
    return cls(validate_params(f"selector '{name}'", cls.Params, params))


def safe_exp(x: np.ndarray) -> np.ndarray:
    return np.exp(np.minimum(x, math.log(np.finfo(np.float64).max) - 1))
