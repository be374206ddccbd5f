"""LESS (Xia et al., 2024): score a candidate by how well its Adam-aware gradient lines up with the
target tasks' dev gradients, over the warm-up checkpoints.

score(row) = max over tasks of mean over the task's dev rows of
             sum over checkpoints c of w_c * cos(P A_c(g_c(row)), P g_c(dev))
with g_c the LoRA gradient at checkpoint c, A_c Adam's update direction from c's optimizer state,
P a seeded random projection to `dim` numbers and w_c the epoch's mean learning rate (normalised).

The warm-up is trained by the score flow (`tuneset.flows.warmup`), never by this selector; the
selector reads its checkpoints. Projected features live in a gradient datastore in the artifact
store, keyed by row content, checkpoint, path, projection seed and dimension, in fp16 chunks: a
killed run resumes at the first missing chunk, and a new target task reuses every candidate chunk
and computes only its own dev gradients.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from tuneset.data.fingerprint import fingerprint
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
from tuneset.models.lm import encode
from tuneset.models.loading import load_lm, resolve_device
from tuneset.progress import ProgressLog
from tuneset.recipe import WarmupConfig
from tuneset.selectors.base import Selector, register
from tuneset.selectors.context import ScoringContext
from tuneset.store import write_npy

log = logging.getLogger("tuneset.less")
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

    def tokens_per_batch(self, device: str) -> int:
        return self.batch_tokens or (512 if resolve_device(device).type == "cpu" else 8192)


def checkpoints(warmup: str | Path) -> list[Path]:
    folders = sorted((Path(warmup) / "checkpoints").glob("epoch-*"), key=lambda p: int(p.name.split("-")[1]))
    if not folders:
        raise TunesetError(f"{warmup}: no warm-up checkpoints (checkpoints/epoch-<k>/)")
    return folders


class GradientStore:
    """Projected gradient features of rows under each warm-up checkpoint, cached by (chunk, checkpoint)."""

    def __init__(self, ctx: ScoringContext, params: LessParams):
        self.ctx, self.p = ctx, params
        # Compute time by kind ("candidates", "targets") and rows computed: cache hits add nothing.
        self.seconds = {"candidates": 0.0, "targets": 0.0}
        self.computed = {"candidates": 0, "targets": 0}
        self._fast_loaded = None

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
        update direction), plain gradients for targets. Only missing (chunk, checkpoint) pairs run."""
        ctx, p = self.ctx, self.p
        keys: list[list[str]] = []
        todo: list[tuple[pl.DataFrame, list[tuple[int, str]]]] = []
        for s in range(0, rows.height, GRAD_CHUNK):
            chunk = rows.slice(s, GRAD_CHUNK)
            content = fingerprint(chunk["instruction"].to_list(), chunk["response"].to_list())
            ks = [ctx.store.key("grads", ctx.model_identity, fingerprint(ctx.warmup_identity, f.name), adam, self.variant,
                                p.dim, p.seed, ctx.max_length, content) for f in folders]
            keys.append(ks)
            missing = [(c, k) for c, k in enumerate(ks) if not ctx.store.is_complete("grads", k)]
            if missing:
                todo.append((chunk, missing))
        if todo:
            t0 = time.perf_counter()
            (self._fast if p.path == "fast" else self._reference)(todo, folders, adam)
            kind = "candidates" if adam else "targets"
            self.seconds[kind] += time.perf_counter() - t0
            self.computed[kind] += sum(c.height * len(m) for c, m in todo)
            log.info("%s gradients (%s): %d rows x checkpoints in %.0fs", kind, self.variant,
                     sum(c.height * len(m) for c, m in todo), time.perf_counter() - t0)
        return [np.concatenate([np.load(ctx.store.dir("grads", ks[c]) / "feats.npy") for ks in keys]).astype(np.float32)
                for c in range(len(folders))]

    def _setup(self, folder: Path):
        lm = load_lm(self.ctx.model, self.ctx.device)
        model = load_trainable(lm.model, folder / "adapter")
        factors = lora_factors(model)
        sketch = self.p.path == "fast" and self.p.projection == "countsketch"
        project = (CountSketch if sketch else GaussianProjector)(sum(mod.weight.numel() for _, mod in factors), self.p.dim, self.p.seed)
        return lm, model, [n for n, _ in factors], project

    def _fast(self, todo, folders: list[Path], adam: bool) -> None:
        """One model; each checkpoint's LoRA weights swapped in per batch, frozen layers run once."""
        from peft.utils import load_peft_weights

        if self._fast_loaded is None:  # loaded once: candidates and every target task share it
            self._fast_loaded = self._setup(folders[0])
        lm, model, names, project = self._fast_loaded
        states = [CheckpointState(load_peft_weights(str(f / "adapter"), device="cpu"),
                                  adam_transform(f, names) if adam else None) for f in folders]
        progress = ProgressLog(f"less gradients ({'candidates' if adam else 'targets'})", sum(c.height for c, _ in todo), "rows")
        for chunk, missing in todo:
            feats = fast_chunk(model, self._encode(lm, chunk), lm.tokenizer.pad_token_id, project,
                               [states[c] for c, _ in missing], self.p.tokens_per_batch(self.ctx.device))
            for (c, key), f in zip(missing, feats):
                self._save(key, f, folders[c], adam, chunk.height)
            progress.update(progress.done + chunk.height, f"{len(missing)} checkpoints")

    def _reference(self, todo, folders: list[Path], adam: bool) -> None:
        """LESS's order: checkpoint by checkpoint, row by row."""
        for c, folder in enumerate(folders):
            lm, model, names, project = self._setup(folder)
            transform = adam_transform(folder, names) if adam else None
            progress = ProgressLog(f"less gradients, checkpoint {c + 1}/{len(folders)}", sum(ch.height for ch, _ in todo), "rows")
            for chunk, missing in todo:
                key = dict(missing).get(c)
                if key is not None:
                    feats = reference_chunk(model, self._encode(lm, chunk), lm.tokenizer.pad_token_id, project, transform)
                    self._save(key, feats, folder, adam, chunk.height)
                progress.update(progress.done + chunk.height)

    def _encode(self, lm, chunk: pl.DataFrame):
        return encode(lm.tokenizer, chunk["instruction"].to_list(), chunk["response"].to_list(), self.ctx.max_length)

    def _save(self, key: str, feats: np.ndarray, folder: Path, adam: bool, n: int) -> None:
        store = self.ctx.store
        d = store.begin("grads", key, {"checkpoint": str(folder), "adam": adam, "variant": self.variant,
                                       "dim": self.p.dim, "seed": self.p.seed, "rows": n})
        write_npy(feats, d / "feats.npy")
        store.finish("grads", key)


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
    uses = frozenset({"lm", "targets", "warmup"})

    def warmup_config(self) -> WarmupConfig:
        return self.params.warmup

    def fit(self, ctx: ScoringContext) -> LessSelector:
        super().fit(ctx)
        if ctx.warmup is None:
            raise TunesetError("selector 'less' reads warm-up checkpoints: score it through the score flow "
                               "(`tuneset score` / `compare`), which trains the warm-up first")
        self.folders = checkpoints(ctx.warmup)
        self.store = GradientStore(ctx, self.params)
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
