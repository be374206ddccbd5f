"""Fine-tune settings chosen by evidence: a grid of settings, each fine-tuned on the same rows and
scored on the tasks' dev rows. Test rows never enter the choice, so what it picks holds on tasks
and data the sweep never saw as well as the dev rows allow."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from tuneset.flows.common import RowsRef
from tuneset.flows.context import RunContext
from tuneset.flows.train_eval import evaluate_model, finetune_task
from tuneset.recipe import FinetuneConfig, SweepConfig

log = logging.getLogger("tuneset.sweep")


@dataclass(frozen=True)
class SweepResult:
    best: FinetuneConfig
    table: pl.DataFrame  # one row per grid point: its settings, dev score per task, mean, dev loss
    path: str  # the table as Markdown


def dev_scores(ctx: RunContext, model_dir: str | None) -> dict[str, tuple[float, float]]:
    """(mean dev score, mean dev gold-response loss) per task."""
    out = {}
    for task, p in evaluate_model(ctx, model_dir, split="dev").items():
        ex = pl.read_parquet(p)
        out[task] = (float(ex["score"].mean()), float(ex["loss"].mean()))
    return out


def dev_summary(scores: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Mean dev score and mean dev loss over tasks: what the sweep ranks by."""
    return {"dev_mean": sum(s for s, _ in scores.values()) / len(scores),
            "dev_loss": sum(lo for _, lo in scores.values()) / len(scores)}


def _best(table: pl.DataFrame) -> int:
    """Index of the best grid point: highest mean dev score over tasks, then lowest dev loss."""
    order = table.with_row_index("i").sort(["dev_mean", "dev_loss"], descending=[True, False])
    return int(order["i"][0])


def sweep_finetune(ctx: RunContext, rows: RowsRef, sweep: SweepConfig, label: str) -> SweepResult:
    """Fine-tune once per grid point on `rows` (seed `sweep.seed`) and keep the best on dev rows."""
    records = []
    points = sweep.points(ctx.recipe.finetune)
    for k, cfg in enumerate(points, 1):
        settings = {f: getattr(cfg, f) for f in sweep.grid}
        log.info("sweep %s: point %d/%d %s", label, k, len(points), settings)
        model_dir = finetune_task(ctx, rows, sweep.seed, cfg)
        scores = dev_scores(ctx, model_dir)
        records.append({**{f: str(v) for f, v in settings.items()},
                        **{f"dev_{t}": s for t, (s, _) in scores.items()}, **dev_summary(scores)})
    table = pl.DataFrame(records)
    best = points[_best(table)]
    path = write_sweep(ctx, table, label, {f: getattr(best, f) for f in sweep.grid}, rows.n)
    return SweepResult(best, table, path)


def best_base_format(ctx: RunContext, formats: list[str]) -> str:
    """The prompt format the base model does best with on dev rows (for the no-fine-tune arm)."""
    rows = []
    for fmt in formats:
        r = ctx.with_recipe(finetune=ctx.recipe.finetune.model_copy(update={"prompt_format": fmt}))
        rows.append(dev_summary(dev_scores(r, None)))
    return formats[_best(pl.DataFrame(rows))]


def write_sweep(ctx: RunContext, table: pl.DataFrame, label: str, best: dict, n_rows: int) -> str:
    out = ctx.run_dir("sweep")
    safe = label.replace("%", "pct").replace("/", "_")
    table.write_csv(out / f"sweep-{safe}.csv")
    cols = table.columns
    lines = [f"# Fine-tune sweep at budget {label} ({n_rows} training rows), scored on dev rows only\n",
             f"Chosen: {best}\n", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in table.iter_rows():
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |")
    path = Path(out / f"sweep-{safe}.md")
    path.write_text("\n".join(lines) + "\n")
    return str(path)
