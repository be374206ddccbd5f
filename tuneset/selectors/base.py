"""The one selector contract: score every candidate row, validated, cacheable by fingerprint.

Scoring is separate from deciding: a selector returns a number per row and a direction
(`higher_is_better`); policies in `tuneset.curation` turn score columns into a selection.
Selectors read models and cached artifacts through the `ScoringContext`; they never train.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

from tuneset import __version__
from tuneset.data.fingerprint import dataset_fingerprint, fingerprint
from tuneset.data.store import ArtifactStore, write_npy, write_parquet
from tuneset.errors import TunesetError, UnknownNameError
from tuneset.models.embed import MINILM, embed_texts
from tuneset.models.lm import encode, response_nll, text_features
from tuneset.models.loading import SMOLLM2, LoadedLM, cached_lm, model_identity
from tuneset.recipe import WarmupConfig

EMBED_CHUNK = 8192


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScoreError(TunesetError):
    """A selector broke the contract (missing ids, NaN...): a bug in the selector, named."""


@dataclass
class ScoringContext:
    """What selectors may read: the reference model, the embedder, target dev rows, the cache."""

    store: ArtifactStore
    model: str = SMOLLM2
    embedder: str = MINILM
    device: str = "auto"
    targets: dict[str, pl.DataFrame] = field(default_factory=dict)
    seed: int = 0
    max_length: int = 512
    max_batch_tokens: int = 4096
    warmup: str | None = None  # warm-up run folder (checkpoints/epoch-<k>/), for selectors that use "warmup"
    adapter: str | None = None  # a LoRA adapter merged into `model` before scoring

    @property
    def warmup_identity(self) -> str | None:
        """The warm-up folder's store key: it hashes the rows, config and model it was trained from."""
        return None if self.warmup is None else Path(self.warmup).name

    @cached_property
    def model_identity(self) -> str:
        return model_identity(self.model, self.adapter)

    @cached_property
    def targets_fingerprint(self) -> str:
        return fingerprint({k: dataset_fingerprint(v) for k, v in sorted(self.targets.items())})

    def lm(self) -> LoadedLM:
        return cached_lm(self.model, str(self.store.root), self.device, self.adapter)

    def response_losses(self, rows: pl.DataFrame, conditioned: bool = True, add_eos: bool = False) -> pl.DataFrame:
        """Per-row summed response NLL, token count and last-token NLL, cached by rows + model +
        variant. Shared by every loss-based selector: perplexity and IFD reuse one forward pass;
        `add_eos` scores the end-of-sequence token too (its NLL is then `nll_last`)."""
        variant = (conditioned, self.max_length) + (("eos",) if add_eos else ())
        key = self.store.key("losses", self.model_identity, dataset_fingerprint(rows), *variant)
        path = self.store.dir("losses", key) / "losses.parquet"
        if self.store.is_complete("losses", key):
            return pl.read_parquet(path)
        lm = self.lm()
        prompts = rows["instruction"].to_list() if conditioned else [None] * rows.height
        enc = encode(lm.tokenizer, prompts, rows["response"].to_list(), self.max_length, add_eos=add_eos)
        total, count, last = response_nll(lm.model, enc, lm.tokenizer.pad_token_id, self.max_batch_tokens)
        out = pl.DataFrame({"id": rows["id"], "nll_sum": total, "n_tokens": count, "nll_last": last})
        self.store.begin("losses", key, {"model": self.model_identity, "conditioned": conditioned,
                                         "add_eos": add_eos, "rows": rows.height})
        write_parquet(out, path)
        self.store.finish("losses", key)
        return out

    def embeddings(self, texts: list[str]) -> np.ndarray:
        """Embeddings cached by text content + embedder, in chunks of `EMBED_CHUNK` texts: every
        embedding selector shares them, and a killed run resumes at the first missing chunk.
        (sentence-transformers sorts each chunk by length, so batches carry little padding.)"""
        return self._chunked("embeddings", texts)

    def lm_features(self, texts: list[str]) -> np.ndarray:
        """The reference model's `text_features` of each text, cached like the embeddings."""
        return self._chunked("lm_features", texts)

    def _chunked(self, kind: str, texts: list[str]) -> np.ndarray:
        parts = [self._features_chunk(kind, texts[s:s + EMBED_CHUNK]) for s in range(0, len(texts), EMBED_CHUNK)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    def _features_chunk(self, kind: str, texts: list[str]) -> np.ndarray:
        source = (self.embedder,) if kind == "embeddings" else (self.model_identity, self.max_length)
        key = self.store.key(kind, *source, fingerprint(texts))
        path = self.store.dir(kind, key) / "emb.npy"
        if self.store.is_complete(kind, key):
            return np.load(path)
        if kind == "embeddings":
            emb = embed_texts(self.embedder, texts, device="cpu" if self.device == "auto" else self.device)
        else:
            lm = self.lm()
            emb = text_features(lm.model, lm.tokenizer, texts, self.max_length, self.max_batch_tokens)
        self.store.begin(kind, key, {"source": list(source), "n": len(texts)})
        write_npy(emb, path)
        self.store.finish(kind, key)
        return emb


def row_text(rows: pl.DataFrame) -> list[str]:
    return [f"{i}\n{r}" for i, r in zip(rows["instruction"].to_list(), rows["response"].to_list())]


class Selector(ABC):
    """Subclass, set `name` and `Params`, implement `_score(rows) -> DataFrame[id, score, ...]`."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams
    higher_is_better: ClassVar[bool] = True
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
        self.ctx = ctx
        return self

    def fingerprint(self) -> str:
        ctx = self._need_ctx()
        deps = {
            "lm": ctx.model_identity if "lm" in self.uses else None,
            "max_length": ctx.max_length if "lm" in self.uses else None,
            "embedder": ctx.embedder if "embedder" in self.uses else None,
            "targets": ctx.targets_fingerprint if "targets" in self.uses else None,
            "seed": ctx.seed if "seed" in self.uses else None,
            "warmup": ctx.warmup_identity if "warmup" in self.uses else None,
        }
        revision = [self.revision] if self.revision != 1 else []
        return fingerprint(self.name, self.params.model_dump(mode="json"), deps, __version__, *revision)

    def score(self, rows: pl.DataFrame) -> pl.DataFrame:
        self._need_ctx()
        out = self._score(rows)
        return validate_scores(self.name, rows, out)

    @abstractmethod
    def _score(self, rows: pl.DataFrame) -> pl.DataFrame: ...

    def warmup_config(self) -> WarmupConfig | None:
        """Settings of the warm-up fine-tune this selector reads (selectors using "warmup"); the
        score flow trains it before scoring."""
        return None

    def _need_ctx(self) -> ScoringContext:
        if self.ctx is None:
            raise ScoreError(f"selector '{self.name}': call fit(ctx) before scoring")
        return self.ctx


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


_REGISTRY: dict[str, type[Selector]] = {}


def register(cls: type[Selector]) -> type[Selector]:
    if cls.name in _REGISTRY:
        raise ValueError(f"selector name '{cls.name}' registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def selector_names() -> list[str]:
    return sorted(_REGISTRY)


def get_selector(name: str) -> type[Selector]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError("selector", name, selector_names()) from None


def make_selector(name: str, params: dict[str, Any] | None = None) -> Selector:
    cls = get_selector(name)
    from pydantic import ValidationError

    try:
        return cls(cls.Params.model_validate(params or {}))
    except ValidationError as e:
        valid = ", ".join(cls.Params.model_fields) or "none"
        raise TunesetError(f"selector '{name}': bad params: {e.errors()[0]['msg']} at {e.errors()[0]['loc']}; valid params: {valid}") from None


def safe_exp(x: np.ndarray) -> np.ndarray:
    return np.exp(np.minimum(x, math.log(np.finfo(np.float64).max) - 1))
