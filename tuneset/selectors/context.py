"""What a selector may read: the reference model, the embedder, target dev rows, the seed, a
warm-up, and the cache they share. A selector sees a view limited to the inputs it declares in
`uses`, so an input it reads always enters its cache key (a selector that read embeddings without
declaring `embedder` would keep its key when the embedder changed, and reuse stale scores)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from tuneset.data.fingerprint import dataset_fingerprint, fingerprint, row_keys, text_keys
from tuneset.errors import TunesetError
from tuneset.models.embed import MINILM, embed_texts, embedder_identity, runs_on_device
from tuneset.models.lm import encode, response_nll, text_features
from tuneset.models.loading import SMOLLM2, LoadedLM, cached_lm, model_identity, resolve_device
from tuneset.progress import ProgressLog
from tuneset.store import ArtifactStore

EMBED_CHUNK = 8192
ROW_CHUNK = 1024  # rows per stored part of per-row LM losses

# The inputs a selector may declare, and the context members each one opens.
USES: dict[str, frozenset[str]] = {
    "lm": frozenset({"model", "adapter", "model_identity", "lm", "response_losses", "lm_features"}),
    # The base model alone, without `adapter`: LESS, whose own warm-up adapters sit on the base.
    "base_lm": frozenset({"model", "base_identity"}),
    "embedder": frozenset({"embedder", "embedder_identity", "embeddings", "missing_embeddings"}),
    "targets": frozenset({"targets", "targets_fingerprint"}),
    "seed": frozenset({"seed"}),
    "warmup": frozenset({"warmup", "warmup_identity"}),
    # Tokens per padded batch, for a selector that generates or reads next-token probabilities in
    # batches: a row's logits move with its batch mates, so its scores are keyed by the size.
    "batches": frozenset({"max_batch_tokens"}),
}


class UndeclaredInput(TunesetError):
    """A selector read an input it did not declare in `uses`: a bug in the selector, named."""


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
    # The identities below are read afresh at each use, not remembered: they are what the caches
    # key on, and a folder retrained in place while a context lives (a notebook's next round) must
    # not store its new losses under the old weights' key. `model_identity` memoises file hashes.

    @property
    def warmup_identity(self) -> str | None:
        """A warm-up the store built is named by its key, which hashes the rows, config and model it
        was trained from; any other folder by its files' contents (two warm-ups in folders named
        `run` were one, and the second was served the first's gradients)."""
        if self.warmup is None:
            return None
        folder = Path(self.warmup)
        if folder.parent.name == "warmup" and re.fullmatch(r"[0-9a-f]{24}", folder.name):  # store/warmup/<key>
            return folder.name
        return model_identity(str(folder))

    @property
    def model_identity(self) -> str:
        return model_identity(self.model, self.adapter, self.device)

    @property
    def base_identity(self) -> str:
        return model_identity(self.model, None, self.device)

    @property
    def embedder_identity(self) -> str:
        """The embedder, and off a CPU the device it embeds on: a GPU embeds in batches, whose
        vectors differ in the last bits from a CPU's one text a forward, so neither serves the other
        (as the LM caches' precision tag keeps losses apart). On a CPU the key is as it always was."""
        device = resolve_device(self.device).type
        on_device = device != "cpu" and runs_on_device(self.embedder)  # ONNX and static tiers run on the CPU anyway
        return embedder_identity(self.embedder) + (f"@{device}" if on_device else "")

    @cached_property
    def targets_fingerprint(self) -> str:
        return fingerprint({k: dataset_fingerprint(v) for k, v in sorted(self.targets.items())})

    def lm(self) -> LoadedLM:
        return cached_lm(self.model, self.device, self.adapter)

    def response_losses(self, rows: pl.DataFrame, conditioned: bool = True, add_eos: bool = False) -> pl.DataFrame:
        """Per-row summed response NLL, token count and last-token NLL, cached per row (by its
        prompt and response) + model + variant: perplexity and IFD reuse one forward pass, and a
        grown pool forwards only its new rows. `add_eos` scores the end-of-sequence token too (its
        NLL is then `nll_last`)."""
        variant = (conditioned, self.max_length) + (("eos",) if add_eos else ())
        meta = {"model": self.model_identity, "conditioned": conditioned, "add_eos": add_eos}
        cache = self.store.rows("losses", (self.model_identity, *variant), meta)

        def make(idx: list[int], progress: ProgressLog | None) -> pl.DataFrame:
            lm, part = self.lm(), rows[idx]
            prompts = part["instruction"].to_list() if conditioned else [None] * part.height
            enc = encode(lm.tokenizer, prompts, part["response"].to_list(), self.max_length, add_eos=add_eos)
            total, count, last = response_nll(lm.model, enc, lm.tokenizer.pad_token_id, self.max_batch_tokens, progress)
            return pl.DataFrame({"nll_sum": total, "n_tokens": count, "nll_last": last})

        keys = row_keys(rows, ["instruction", "response"] if conditioned else ["response"])
        what = f"LM loss ({'given the instruction' if conditioned else 'response alone'})"
        return cache.fetch(keys, make, ROW_CHUNK, what).insert_column(0, rows["id"])

    def embeddings(self, texts: list[str]) -> np.ndarray:
        """Embeddings cached per text + embedder, stored `EMBED_CHUNK` texts a part: every
        embedding selector shares them, a grown pool embeds only its new texts, and a killed run
        resumes at the first missing part. On a CPU a text is embedded on its own
        (`TEXTS_PER_FORWARD`), so a cached vector equals a from-scratch one bit for bit."""
        return self._features("embeddings", texts)

    def missing_embeddings(self, texts: list[str]) -> int:
        """How many distinct texts `embeddings` would still have to embed (reads keys only)."""
        return len(self._feature_cache("embeddings").missing(text_keys(texts)))

    def lm_features(self, texts: list[str]) -> np.ndarray:
        """The reference model's `text_features` of each text, cached like the embeddings."""
        return self._features("lm_features", texts)

    def _feature_cache(self, kind: str):
        source = (self.embedder_identity,) if kind == "embeddings" else (self.model_identity, self.max_length)
        return self.store.rows(kind, source, {"source": list(source)})

    def _features(self, kind: str, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)

        def make(idx: list[int], _progress: ProgressLog | None) -> pl.DataFrame:
            part = [texts[i] for i in idx]
            if kind == "embeddings":
                emb = embed_texts(self.embedder, part, device=str(resolve_device(self.device)))
            else:
                lm = self.lm()
                emb = text_features(lm.model, lm.tokenizer, part, self.max_length, self.max_batch_tokens)
            return pl.DataFrame({"emb": np.asarray(emb, dtype=np.float32)})

        return self._feature_cache(kind).fetch(text_keys(texts), make, EMBED_CHUNK)["emb"].to_numpy()


class DeclaredView:
    """A ScoringContext that lets a selector touch only the inputs it declared; the rest (store,
    device, lengths) is open to all."""

    def __init__(self, ctx: ScoringContext, uses: frozenset[str], selector: str):
        self._ctx, self._uses, self._selector = ctx, uses, selector

    def __getattr__(self, name: str):
        if name.startswith("_"):  # copy/pickle probe dunders before __init__ ran: no recursion
            raise AttributeError(name)
        owners = [use for use, members in USES.items() if name in members]
        if owners and not set(owners) & self._uses:
            raise UndeclaredInput(f"selector '{self._selector}' reads ctx.{name} but does not declare "
                                  f"'{' or '.join(owners)}' in uses ({', '.join(sorted(self._uses)) or 'nothing'}); "
                                  "add it, so it enters the cache key")
        return getattr(self._ctx, name)
