"""Warm-up fine-tune for gradient selectors (LESS): LoRA on a random fraction of the rows being
scored, one checkpoint with its Adam state per epoch. A flow stage, so selectors only read it."""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from tuneset.finetune import train
from tuneset.flows.common import RowsRef
from tuneset.flows.context import RunContext
from tuneset.flows.train_eval import training_key
from tuneset.recipe import WarmupConfig

log = logging.getLogger("tuneset.warmup")


def warmup_rows(n: int, cfg: WarmupConfig) -> int:
    return max(1, round(cfg.fraction * n))


@task(cache_policy=NONE, task_run_name="warmup-{rows.n}-rows")
def warmup_task(ctx: RunContext, rows: RowsRef, cfg: WarmupConfig) -> str:
    """Folder holding `checkpoints/epoch-<k>/`; its name (the store key) identifies the checkpoints."""
    model = ctx.recipe.model

    def make(folder: Path) -> None:
        sample = rows.read().sample(warmup_rows(rows.n, cfg), seed=cfg.seed, shuffle=True)
        res = train(sample, cfg, model.name, folder, model.max_length, model.device,
                    checkpoint_epochs=True)
        log.info("warm-up on %d of %d rows: %d epochs, %d steps in %.0fs", sample.height, rows.n, int(cfg.epochs),
                 res.steps, res.seconds)

    meta = {"rows": rows.fingerprint, "n": warmup_rows(rows.n, cfg), "config": cfg.model_dump()}
    return str(ctx.store.cached("warmup", training_key(model, rows, cfg), make, meta))
