"""Fine-tune and evaluate tasks, cached by content: a repeated (rows, config, seed) is never retrained."""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import polars as pl
import torch
from prefect import task
from prefect.cache_policies import NONE

from tuneset.data.fingerprint import dataset_fingerprint
from tuneset.data.io import load_rows, write_parquet
from tuneset.evaluate import evaluate_task
from tuneset.evaluate.metrics import metric_key
from tuneset.finetune import TRAINED_FIELDS, train
from tuneset.flows.common import RowsRef, recipe_flow, save_rows, write_json
from tuneset.flows.context import RunContext, run_context
from tuneset.models.lm import resolve_format
from tuneset.models.loading import compute_dtype, load_lm, model_identity, prompt_format_of, train_record, turn_end
from tuneset.recipe import FinetuneConfig, ModelConfig, Recipe, TaskSpec

log = logging.getLogger("tuneset.train_eval")


@task(cache_policy=NONE, task_run_name="finetune-{rows.n}-rows-seed-{seed}")
def finetune_task(ctx: RunContext, rows: RowsRef, seed: int, cfg: FinetuneConfig | None = None) -> str:
    """Folder with `adapter/` (LoRA) or `model/` (full) and train.json; `cfg` (default: the
    recipe's) lets a sweep or the full-pool arm train with other settings."""
    model = ctx.recipe.model
    cfg = cfg or ctx.recipe.finetune
    cfg = cfg.model_copy(update={"seed": seed, "prompt_format": prompt_format_of(model.name, cfg.prompt_format)})

    def make(folder: Path) -> None:
        res = train(rows.read(), cfg, model.name, folder, model.max_length, model.device)
        log.info("fine-tuned on %d rows, seed %d: %d steps in %.0fs (%.2f rows/s), loss %.3f",
                 rows.n, seed, res.steps, res.seconds, res.rows_per_s, res.final_loss)

    return str(ctx.store.cached("finetune", training_key(model, rows, cfg), make,
                                {"rows": rows.fingerprint, "n": rows.n, "config": cfg.model_dump()}))


def training_key(model: ModelConfig, rows: RowsRef, cfg: FinetuneConfig) -> tuple:
    """What `train` reads, as a fine-tune's or a warm-up's cache key: the base weights, the rows'
    trained content, the settings and max_length, plus what changed the training of some models
    only (so the others keep their keys)."""
    parts = (model_identity(model.name, device=model.device), trained_content(rows), *cfg.key_parts(), model.max_length)
    if cfg.method == "full" and compute_dtype(model.device) != torch.float32:  # fp32 master weights since stop 35,
        parts += ("fp32 master weights as stored",)  # read as stored since stop 37, not upcast from bf16
    if (end := turn_end(model.name, prompt_format_of(model.name, cfg.prompt_format))) is not None:
        parts += (f"responses end with token {end}",)  # trained to end at the EOS before stop 37
    return parts


@functools.lru_cache(maxsize=64)
def trained_content(rows: RowsRef) -> str:
    """What a fine-tune reads of `rows` (TRAINED_FIELDS, in order): its cache key's data part.
    Once per table and process (a compare asks for it per seed, the warm-up per scoring run)."""
    return dataset_fingerprint(rows.read(columns=list(TRAINED_FIELDS)), TRAINED_FIELDS)


def _task_rows(ctx: RunContext, t: TaskSpec, split: str) -> pl.DataFrame:
    rows = ctx.split(t, split)
    n = ctx.recipe.evaluate.max_test_rows if split == "test" else None
    return rows.head(n) if n else rows


def trained_format(ctx: RunContext, model_dir: str | None) -> str:
    """The prompt format a fine-tuned folder was trained with (its train.json), else the recipe's."""
    if model_dir is not None and (record := train_record(model_dir)) is not None:
        return record.get("prompt_format", "plain")
    return prompt_format_of(ctx.recipe.model.name, ctx.recipe.finetune.prompt_format)


def weights_identity(ctx: RunContext, model_dir: str | None) -> str:
    """Content identity of what is evaluated, on the device it runs on: the base model, plus the
    folder's adapter or model."""
    base, device = ctx.recipe.model.name, ctx.recipe.model.device
    if model_dir is None:
        return model_identity(base, device=device)
    d = Path(model_dir)
    if (d / "adapter").exists():
        return model_identity(base, str(d / "adapter"), device)
    return model_identity(str(d / "model"), device=device)


@task(cache_policy=NONE, task_run_name="evaluate-{split}")
def evaluate_model(ctx: RunContext, model_dir: str | None, split: str = "test") -> dict[str, str]:
    """Per-example results per task for the base model (None) or a fine-tuned folder, on the
    tasks' `test` rows (the first `evaluate.max_test_rows`) or all their `dev` rows. Keyed by the
    weights' content, so a copied folder with other weights is never served another's scores."""
    recipe = ctx.recipe
    out: dict[str, str] = {}
    lm = None
    identity, fmt = weights_identity(ctx, model_dir), trained_format(ctx, model_dir)
    for t in ctx.tasks:
        rows = _task_rows(ctx, t, split)

        def make(folder: Path, t: TaskSpec = t, rows: pl.DataFrame = rows) -> None:
            nonlocal lm
            lm = lm or _load(ctx, model_dir)
            t0 = time.perf_counter()
            res = evaluate_task(lm, t, rows, recipe.model.max_length, recipe.model.max_batch_tokens,
                                recipe.evaluate.max_new_tokens, resolve_format(lm.tokenizer, fmt))
            secs = time.perf_counter() - t0
            write_parquet(res, folder / "examples.parquet")
            write_json(folder / "result.json", {"seconds": secs, "mean": float(res["score"].mean())})
            log.info("%s on %s %s: %.3f (%d rows, %.0fs)", t.metric, t.name, split, res["score"].mean(), rows.height, secs)

        # The rows' fingerprint already holds max_test_rows' cut: a bigger cut redoes no dev evaluation.
        # max_batch_tokens is a key part because padded batches move a row's logits with its batch
        # mates, enough to flip a greedy token now and then: a cached answer is the one a rerun gives.
        parts = (identity, fmt, *metric_key(t.metric), t.choices, dataset_fingerprint(rows),
                 recipe.evaluate.max_new_tokens, recipe.model.max_length, recipe.model.max_batch_tokens)
        meta = {"task": t.name, "split": split, "model_dir": model_dir, "prompt_format": fmt}
        out[t.name] = str(ctx.store.cached("eval", parts, make, meta) / "examples.parquet")
    return out


def _load(ctx: RunContext, model_dir: str | None):
    m = ctx.recipe.model
    if model_dir is None:
        return load_lm(m.name, m.device)
    d = Path(model_dir)
    if (d / "adapter").exists():
        return load_lm(m.name, m.device, adapter=str(d / "adapter"))
    return load_lm(str(d / "model"), m.device)


def train_seconds(model_dir: str) -> float:
    return train_record(model_dir)["seconds"]


@recipe_flow("tuneset-finetune")
def finetune_flow(recipe: Recipe, rows: str, seed: int = 0) -> str:
    """Fine-tune on a row file in any row shape tuneset reads, as `select --out` writes it. The
    recipe's `columns` maps the pool's names, not this file's: a mapping cannot tell a file in
    our names from a pool whose mapped column is missing, and must not guess row by row."""
    ctx = run_context(recipe)
    return finetune_task(ctx, save_rows(ctx.store, load_rows(rows).rows), seed)


@recipe_flow("tuneset-evaluate")
def evaluate_flow(recipe: Recipe, model_dir: str | None = None) -> dict[str, float]:
    paths = evaluate_model(run_context(recipe), model_dir)
    scores = {k: float(pl.read_parquet(p)["score"].mean()) for k, p in paths.items()}
    for k, v in scores.items():
        print(f"{k}: {v:.4f}")
    return scores
