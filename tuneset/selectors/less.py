"""LESS (Xia et al., 2024): score a candidate by how well its Adam-aware gradient lines up with the
target tasks' dev gradients, over the warm-up checkpoints.

score(row) = max over tasks of mean over the task's dev rows of
             sum over checkpoints c of w_c * cos(P A_c(g_c(row)), P g_c(dev))
with g_c the LoRA gradient at checkpoint c, A_c Adam's update direction from c's optimizer state,
P a seeded random projection to `dim` numbers and w_c the epoch's mean learning rate (normalised).

The warm-up is trained by the score flow (`tuneset.flows.warmup`), never by this selector; the
selector reads its checkpoints. Projected features live in the store's per-row cache (fp16), one
entry per row's prompt and response under a key of the checkpoints, path, projection seed and
dimension: a killed run keeps every finished part of 256 rows, a new target task computes only its
own dev gradients, and a reordered or grown table under the same warm-up only its new rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from tuneset.data.fingerprint import row_keys
from tuneset.errors import TunesetError, UnknownNameError
from tuneset.models.grads import (
    Checkpoint,
    CheckpointState,
    CountSketch,
    GaussianProjector,
    adam_transform,
    fast_chunk,
    load_trainable,
    lora_factors,
    reference_chunk,
)
from tuneset.models.lm import encode, training_pairs
from tuneset.models.loading import TRAIN_RECORD, load_lm, resolve_device, train_record, turn_end
from tuneset.progress import ProgressLog
from tuneset.recipe import WarmupConfig
from tuneset.selectors.base import Selector, register
from tuneset.selectors.context import ScoringContext

GRAD_CHUNK = 256


class LessParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    dim: int = Field(default=8192, ge=16)
    seed: int = 0  # projection seed
    # fast: batched per-example gradients, one forward/backward per batch. reference: LESS's per-example loop +
    # dense Gaussian projection (the anchor the fast path is measured against).
    path: Literal["fast", "reference"] = "fast"
    # Fast path's projection. gaussian: the reference's own (seeded blocks, applied once per 256-row
    # chunk, never held whole), so the fast path reproduces LESS's features exactly; measured 5.2x
    # the reference. countsketch: O(D) with no matrix, 7.6x, but at this pool's crowded top-15% cut
    # it kept 0.86 of the exact (unprojected) selection where the Gaussian kept 0.91.
    projection: Literal["gaussian", "countsketch"] = "gaussian"
    # Padded tokens per backward pass (fast path); None: 512 on a CPU, 8192 on a GPU. On a 2-core
    # CPU, 512 ran as fast as batch size 1 and 2048 ran 1.6x slower (activations leave the cache);
    # on an H100, 8192 ran 7.7x faster than 512 (benchmarks/results/less_gpu.json).
    batch_tokens: int | None = Field(default=None, ge=64)
    tasks: list[str] | None = None  # target tasks (default: every task of the recipe)
    explain: int = Field(default=3, ge=0)  # dev rows named per candidate in `top_dev`
    # The sequences gradients are taken on. plain: instruction, a space, the response (LESS's loss on
    # the pair, no end token). trained: the warm-up's own training sequences (its prompt format, the
    # end token), as the paper takes them. Chosen on the bench's dev rows: with SmolLM2-Instruct's
    # chat template, `trained` pooled 0.270 on the target tasks' dev rows against plain's 0.338 (seeds
    # 0-4), and its test rows followed (benchmarks/README.md, "LESS on the warm-up's training sequences").
    sequences: Literal["plain", "trained"] = "plain"

    def tokens_per_batch(self, device: str) -> int:
        return self.batch_tokens or (512 if resolve_device(device).type == "cpu" else 8192)


def warmup_format(warmup: str | Path) -> str:
    """The prompt format the warm-up trained with ('chat' or 'plain'), as it recorded it."""
    record = train_record(warmup)
    if record is None:
        raise TunesetError(f"{warmup}: not a warm-up folder (no {TRAIN_RECORD})")
    return record["prompt_format"]


def checkpoints(warmup: str | Path) -> list[Path]:
    folders = sorted((Path(warmup) / "checkpoints").glob("epoch-*"), key=lambda p: int(p.name.split("-")[1]))
    if not folders:
        raise TunesetError(f"{warmup}: no warm-up checkpoints (checkpoints/epoch-<k>/)")
    return folders


class GradientStore:
    """Projected gradient features of rows under each warm-up checkpoint, cached per row."""

    def __init__(self, ctx: ScoringContext, params: LessParams, fmt: str | None = None):
        self.ctx, self.p, self.fmt = ctx, params, fmt  # fmt: the warm-up's prompt format, for sequences: trained
        # Compute time by kind ("candidates", "targets") and rows computed: cache hits add nothing.
        self.seconds = {"candidates": 0.0, "targets": 0.0}
        self.computed = {"candidates": 0, "targets": 0}
        self._fast_loaded = None
        self._states: dict[bool, list[CheckpointState]] = {}

    @property
    def variant(self) -> str:
        """How features are made: 'fast', 'fast+gaussian' or 'reference', plus '@cuda' off the CPU
        (a GPU draws another Gaussian matrix, and computes in bf16). Part of the datastore key."""
        p = self.p
        name = p.path if p.path == "reference" or p.projection == "countsketch" else f"fast+{p.projection}"
        device = resolve_device(self.ctx.device).type
        return name if device == "cpu" else f"{name}@{device}"

    def features(self, rows: pl.DataFrame, folders: list[Path], adam: bool) -> list[np.ndarray]:
        """Per checkpoint, (n, dim) float32 L2-normalised features; `adam` for candidates (Adam's
        update direction), plain gradients for targets. Cached per row, by its prompt and response,
        in the store's one per-row cache: only rows never seen under these checkpoints run, so a
        reordered or grown table (same warm-up) and a new target task pay for their new rows only."""
        ctx, p = self.ctx, self.p
        kind = "candidates" if adam else "targets"
        meta = {"model": ctx.base_identity, "warmup": ctx.warmup_identity, "checkpoints": [f.name for f in folders],
                "adam": adam, "variant": self.variant, "dim": p.dim, "seed": p.seed, "max_length": ctx.max_length,
                "sequences": "plain" if p.sequences == "plain" else f"trained:{self.fmt}" + (
                    f":end {end}" if (end := turn_end(ctx.model, self.fmt)) is not None else ""),
                # padded batches move a row's fp16 features by a step with its batch mates: one size a key
                "batch_tokens": p.tokens_per_batch(ctx.device) if p.path == "fast" else None}
        cache = ctx.store.rows("grads", tuple(meta.values()), meta)

        def make(idx: list[int], progress: ProgressLog | None) -> pl.DataFrame:
            t0 = time.perf_counter()
            chunk = rows[idx]

            def advance(n: int) -> None:
                if progress is not None:
                    progress.update(progress.done + n, f"{len(folders)} checkpoints")

            if p.path == "fast":
                feats = self._fast(chunk, folders, adam, advance)
            else:
                feats = self._reference(chunk, folders, adam)
                advance(chunk.height)
            self.seconds[kind] += time.perf_counter() - t0
            self.computed[kind] += chunk.height * len(folders)
            return feature_frame(feats)

        table = cache.fetch(row_keys(rows, ["instruction", "response"]), make, GRAD_CHUNK,
                            f"less gradients ({kind}, {self.variant})")
        return frame_features(table, len(folders))

    def _setup(self, folder: Path):
        lm = load_lm(self.ctx.model, self.ctx.device)
        model = load_trainable(lm.model, folder / "adapter")
        factors = lora_factors(model)
        sketch = self.p.path == "fast" and self.p.projection == "countsketch"
        project = (CountSketch if sketch else GaussianProjector)(sum(mod.weight.numel() for _, mod in factors), self.p.dim, self.p.seed)
        return lm, model, [n for n, _ in factors], project

    def _fast(self, chunk: pl.DataFrame, folders: list[Path], adam: bool,
              advance: Callable[[int], None] | None = None) -> list[np.ndarray]:
        """One model; each checkpoint's LoRA weights swapped in per batch, frozen layers run once."""
        from peft.utils import load_peft_weights

        if self._fast_loaded is None:  # loaded once: candidates and every target task share it
            self._fast_loaded = self._setup(folders[0])
        lm, model, names, project = self._fast_loaded
        if adam not in self._states:  # read once, not per part of rows
            self._states[adam] = [CheckpointState(load_peft_weights(str(f / "adapter"), device="cpu"),
                                                  adam_transform(f, names) if adam else None) for f in folders]
        return fast_chunk(model, self._encode(lm, chunk), lm.tokenizer.pad_token_id, project, self._states[adam],
                          self.p.tokens_per_batch(self.ctx.device), advance)

    def _reference(self, chunk: pl.DataFrame, folders: list[Path], adam: bool) -> list[np.ndarray]:
        """LESS's order: checkpoint by checkpoint, row by row."""
        out = []
        for folder in folders:
            lm, model, names, project = self._setup(folder)
            transform = adam_transform(folder, names) if adam else None
            out.append(reference_chunk(model, self._encode(lm, chunk), lm.tokenizer.pad_token_id, project, transform))
        return out

    def _encode(self, lm, chunk: pl.DataFrame):
        """The rows as `LessParams.sequences` says: plain text, or the warm-up's training sequences."""
        instructions, responses = chunk["instruction"].to_list(), chunk["response"].to_list()
        if self.p.sequences == "plain":
            return encode(lm.tokenizer, instructions, responses, self.ctx.max_length)
        return training_pairs(lm.tokenizer, instructions, responses, self.fmt or "plain", self.ctx.max_length)


def feature_frame(feats: list[np.ndarray]) -> pl.DataFrame:
    """Per-checkpoint (n, dim) float16 features as one row per example, column `c<k>` holding its
    fp16 bytes: half the disk of a float32 array column, and read back exactly."""
    return pl.DataFrame({f"c{c}": pl.Series([r.tobytes() for r in f], dtype=pl.Binary) for c, f in enumerate(feats)})


def frame_features(table: pl.DataFrame, n_checkpoints: int) -> list[np.ndarray]:
    """`feature_frame`'s inverse, as float32 for the dot products."""
    return [np.frombuffer(b"".join(table[f"c{c}"].to_list()), dtype=np.float16).reshape(table.height, -1).astype(np.float32)
            for c in range(n_checkpoints)]


def checkpoint_weights(folders: list[Path]) -> np.ndarray:
    lrs = np.array([Checkpoint.read_state(f)["lr"] for f in folders], dtype=np.float64)
    if lrs.sum() <= 0:
        return np.full(len(folders), 1 / len(folders))
    return lrs / lrs.sum()


def influence(cand: list[np.ndarray], dev: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """(n_candidates, n_dev): learning-rate-weighted sum over checkpoints of feature cosines."""
    return sum(w * (c @ d.T) for w, c, d in zip(weights, cand, dev))


@register
class LessSelector(Selector):
    """Gradient similarity to the target tasks' dev rows (LESS). Columns: `vs_<task>` (mean influence
    on that task), `top_dev` (the dev rows of the best task that contribute most, with their influence)."""

    name = "less"
    Params = LessParams
    # The base model and the warm-up's adapters on it: `model.adapter` (CLEAR's next round) is not
    # read, so it must not key, and so recompute, hours of gradients.
    uses = frozenset({"base_lm", "targets", "warmup"})
    revision = 2  # the `sequences` choice (the default, plain, computes what revision 1 did)

    def warmup_config(self) -> WarmupConfig:
        return self.params.warmup

    def fit(self, ctx: ScoringContext) -> LessSelector:
        super().fit(ctx)
        if ctx.warmup is None:
            raise TunesetError("selector 'less' reads warm-up checkpoints: score it through the score flow "
                               "(`tuneset score` / `compare`), which trains the warm-up first")
        self.folders = checkpoints(ctx.warmup)
        fmt = warmup_format(ctx.warmup) if self.params.sequences == "trained" else None
        self.store = GradientStore(self.ctx, self.params, fmt)  # the declared view: an undeclared read fails
        self.targets()
        return self

    def targets(self) -> dict[str, pl.DataFrame]:
        names = self.params.tasks or sorted(self.ctx.targets)
        for n in names:
            if n not in self.ctx.targets:
                raise UnknownNameError("target task", n, sorted(self.ctx.targets))
        return {n: self.ctx.targets[n] for n in names}

    def target_features(self) -> dict[str, list[np.ndarray]]:
        return {task: self.store.features(dev, self.folders, adam=False) for task, dev in self.targets().items()}

    def _score(self, rows: pl.DataFrame) -> pl.DataFrame:
        weights = checkpoint_weights(self.folders)
        cand = self.store.features(rows, self.folders, adam=True)
        cols: dict[str, np.ndarray] = {}
        sims = []
        for task, dev in self.target_features().items():
            s = influence(cand, dev, weights)
            sims.append((task, s))
            cols[f"vs_{task}"] = s.mean(1).astype(np.float64)
        table = np.stack(list(cols.values()))
        best_task = table.argmax(0)
        out = {"id": rows["id"], "score": table.max(0), **cols}
        if self.params.explain:
            dev_ids = [self.ctx.targets[task]["id"].to_list() for task, _ in sims]
            out["top_dev"] = [self._explain(sims[t], i, dev_ids[t]) for i, t in enumerate(best_task.tolist())]
        return pl.DataFrame(out)

    def _explain(self, task_sims: tuple[str, np.ndarray], i: int, dev_ids: list[str]) -> str:
        task, s = task_sims
        row = s[i]
        top = np.argsort(-row, kind="stable")[: self.params.explain]
        return "; ".join(f"{task}:{dev_ids[j]} ({row[j]:+.3f})" for j in top)
