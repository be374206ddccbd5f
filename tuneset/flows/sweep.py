"""Fine-tune settings chosen by evidence: a grid of settings, each fine-tuned on the same rows and
scored on the tasks' dev rows by `rank_on_dev`'s rule (target rows pooled, controls a constraint).
Test rows never enter the choice, so what it picks holds on tasks and data the sweep never saw as
well as the dev rows allow."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from tuneset.data.io import write_csv, write_text
from tuneset.evaluate.choose import DevStanding, dev_frame, rank_on_dev
from tuneset.flows.common import RowsRef
from tuneset.flows.context import RunContext
from tuneset.flows.train_eval import evaluate_model, finetune_task
from tuneset.models.loading import prompt_format_of
from tuneset.recipe import FinetuneConfig, SweepConfig

log = logging.getLogger("tuneset.sweep")


@dataclass(frozen=True)
class SweepResult:
    best: FinetuneConfig
    table: pl.DataFrame  # one row per grid point: settings, dev score per task, the rule's figures
    path: str  # the table as Markdown


BASE = "no fine-tune"


def dev_rows(ctx: RunContext, model_dir: str | None, candidate: str) -> pl.DataFrame:
    """Per-row dev results of one model on every task, in the shape `rank_on_dev` reads."""
    return dev_frame(candidate, evaluate_model(ctx, model_dir, split="dev"))


def _table(dev: pl.DataFrame, settings: dict[str, dict], ranked: list[DevStanding], controls: bool) -> pl.DataFrame:
    """The sweep table: each point's settings, mean dev score per task and the rule's figures, in grid order."""
    standing = {s.name: s for s in ranked}
    per_task = dev.group_by("candidate", "task", maintain_order=True).agg(pl.col("score").mean())
    records = []
    for name, point in settings.items():
        s = standing[name]
        tasks = per_task.filter(pl.col("candidate") == name)
        records.append({**{f: str(v) for f, v in point.items()},
                        **{f"dev_{t}": v for t, v in tasks.select("task", "score").iter_rows()},
                        "dev_targets": s.score, "dev_loss": s.loss,
                        **({"control_vs_none": s.control_words(), "eligible": "yes" if s.eligible else "no"}
                           if controls else {})})
    return pl.DataFrame(records)


def sweep_finetune(ctx: RunContext, rows: RowsRef, sweep: SweepConfig, label: str, base_ctx: RunContext) -> SweepResult:
    """Fine-tune once per grid point on `rows` (seed `sweep.seed`) and keep the best on dev rows by
    `rank_on_dev`'s rule; `base_ctx` evaluates the no-fine-tune model the controls are held to."""
    controls = ctx.recipe.controls
    frames, settings = [], {}
    points = sweep.points(ctx.recipe.finetune)
    for k, cfg in enumerate(points, 1):
        name = f"point {k}"
        settings[name] = {f: getattr(cfg, f) for f in sweep.grid}
        log.info("sweep %s: point %d/%d %s", label, k, len(points), settings[name])
        frames.append(dev_rows(ctx, finetune_task(ctx, rows, sweep.seed, cfg), name))
    if controls:
        frames.append(dev_rows(base_ctx, None, BASE))
    dev = pl.concat(frames)
    ranked = rank_on_dev(dev, controls, BASE if controls else None)
    best_name = ranked[0].name
    if not ranked[0].eligible:  # eligible points rank first: none kept the controls
        log.warning("sweep %s: no point keeps the control tasks (%s) within 2 se of no fine-tune; %s, the best on the "
                    "targets, is taken (see the sweep table's control_vs_none)", label, ", ".join(controls),
                    settings[best_name])
    best = points[list(settings).index(best_name)]
    table = _table(dev, settings, ranked, bool(controls))
    path = write_sweep(ctx, table, label, settings[best_name], rows.n)
    return SweepResult(best, table, path)


def best_base_format(ctx: RunContext, formats: list[str]) -> str:
    """The prompt format the base model does best with on the target tasks' dev rows (for the
    no-fine-tune arm, which the controls are held to, so its controls do not choose it)."""
    dev = pl.concat([dev_rows(ctx.with_recipe(finetune=ctx.recipe.finetune.model_copy(update={"prompt_format": fmt})),
                              None, fmt) for fmt in formats])
    return rank_on_dev(dev, ctx.recipe.controls)[0].name


def base_context(ctx: RunContext, formats: list[str] | None = None) -> RunContext:
    """The context the no-fine-tune model is evaluated in: its best prompt format on the target
    tasks' dev rows, among `formats` (default: every format its tokenizer takes). A gain is then
    measured against the base model at its best, not at the fine-tune's format: SmolLM2-135M-Instruct
    scores sst2 0.580 under its chat template and 0.800 as plain text, so the pipeline printed
    +0.317 for a fine-tune whose gain over the base model is +0.097. Without a target task there is
    nothing to choose on, and the recipe's format stays."""
    formats = formats or _base_formats(ctx)
    if len(formats) == 1:
        best = formats[0]
    elif not ctx.recipe.target_specs():
        return ctx
    else:
        best = best_base_format(ctx, formats)
        log.info("no fine-tune: prompt format %s, the best of %s on the target tasks' dev rows", best, formats)
    return ctx.with_recipe(finetune=ctx.recipe.finetune.model_copy(update={"prompt_format": best}))


def _base_formats(ctx: RunContext) -> list[str]:
    return ["chat", "plain"] if prompt_format_of(ctx.recipe.model.name, "auto") == "chat" else ["plain"]


def write_sweep(ctx: RunContext, table: pl.DataFrame, label: str, best: dict, n_rows: int) -> str:
    out = ctx.run_dir("sweep")
    safe = label.replace("%", "pct").replace("/", "_")
    write_csv(table, out / f"sweep-{safe}.csv")
    cols = table.columns
    lines = [f"# Fine-tune sweep at budget {label} ({n_rows} training rows), scored on dev rows only\n",
             f"Chosen: {best}. Rule: the target tasks' dev rows pooled (dev_targets), ties to the lower "
             "dev_loss on them; a point whose control dev score is below no fine-tune's by more than two "
             "standard errors is not eligible (tuneset/evaluate/choose.py).\n", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in table.iter_rows():
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |")
    path = Path(out / f"sweep-{safe}.md")
    write_text(path, "\n".join(lines) + "\n")
    return str(path)
