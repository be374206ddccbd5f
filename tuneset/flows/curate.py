"""Curate flow: score what the curation steps read, run the steps; every input row accounted for,
with an audit, a report and a score histogram."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from tuneset.curation import check_accounting, curate_rows
from tuneset.curation.report import plot_scores, render_report
from tuneset.curation.steps import step_selectors
from tuneset.data.io import write_rows
from tuneset.flows.common import RowsRef, load_pool, recipe_flow, save_rows
from tuneset.flows.context import RunContext, run_context
from tuneset.flows.score import score_flow
from tuneset.recipe import Recipe
from tuneset.store import write_parquet


@dataclass(frozen=True)
class CurateResult:
    rows: RowsRef
    audit: str
    report: str
    counts: dict[str, int]


def eval_rows(ctx: RunContext) -> dict[str, pl.DataFrame]:
    """Dev and test rows of every task: a candidate matching either would leak the evaluation."""
    return {f"{t.name}/{split}": ctx.split(t, split) for t in ctx.tasks for split in ("dev", "test")
            if getattr(t, split) is not None}


def curation_scores(ctx: RunContext, rows: RowsRef) -> pl.DataFrame | None:
    """Scores the curate settings read, with the recipe's params for those selectors."""
    names = step_selectors(ctx.recipe.curate)
    if not names:
        return None
    return score_flow(ctx.recipe, rows, selectors=[ctx.spec(n) for n in names]).read()


@recipe_flow("tuneset-curate")
def curate_flow(recipe: Recipe) -> CurateResult:
    ctx = run_context(recipe)
    rows, n_read, quarantined = load_pool(ctx)
    scores = curation_scores(ctx, rows)
    kept, audit = curate_rows(rows.read(), recipe.curate, eval_rows(ctx), scores, quarantined)
    counts = check_accounting(audit, n_read)
    out = ctx.run_dir("curate")
    write_rows(out / "curated.jsonl", kept)
    write_parquet(audit, out / "audit.parquet")
    audit.select(pl.exclude("choices")).write_csv(out / "audit.csv")
    plot = out / "scores.png"
    has_plot = plot_scores(audit, [c for c in (scores.columns if scores is not None else []) if c in step_selectors(recipe.curate)], plot,
                           recipe.curate.filters)
    report = out / "report.md"
    report.write_text(render_report(recipe.name, n_read, counts, audit, plot.name if has_plot else None))
    print(f"curated {n_read} rows: {counts}; audit {out / 'audit.parquet'}")
    return CurateResult(save_rows(ctx.store, kept), str(out / "audit.parquet"), str(report), counts)

