"""Curate flow: score what the curation steps read, run the steps; every input row accounted for,
with an audit, a report and a score histogram."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import polars as pl

from tuneset.curation import check_accounting, curate_rows
from tuneset.curation.judge import REWRITE, applied_filters, gate_lines, gate_notes, judge_report
from tuneset.curation.report import plot_scores, render_report
from tuneset.curation.steps import step_selector_params, step_selectors
from tuneset.data.io import atomic_folder, write_csv, write_parquet, write_rows, write_text
from tuneset.data.labels import known_answer_pairs, load_judge_rows
from tuneset.flows.common import Pool, RowsRef, load_pool, recipe_flow, save_rows
from tuneset.flows.context import RunContext, run_context
from tuneset.flows.score import score_flow
from tuneset.recipe import Recipe, SelectorSpec
from tuneset.selectors import get_selector

log = logging.getLogger("tuneset.curate")


@dataclass(frozen=True)
class CurateResult:
    rows: RowsRef
    pool: Pool  # the validated input the curation started from: what selectors score
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
    fixed = step_selector_params(ctx.recipe.curate)
    specs = [ctx.spec(n) for n in names]
    specs = [s.model_copy(update={"params": {**s.params, **fixed[s.name]}}) if s.name in fixed else s for s in specs]
    return score_flow(ctx.recipe, rows, selectors=specs).read()


def judge_competence(ctx: RunContext) -> dict[str, float]:
    """AUROC, on rows with known answers (curate.judge_rows, else the target tasks' dev rows given
    and spoiled), of every judging column a curation step would act on (`curation.judge`): scored
    like the pool, with the same params."""
    cfg = ctx.recipe.curate
    gated: dict[str, tuple[SelectorSpec, str]] = {}
    for rule in cfg.filters:
        name = rule.column.split(".")[0]
        if get_selector(name).judges:
            gated[rule.column] = (ctx.spec(name), rule.column)
    if cfg.rewrite is not None:  # the rewrite step trusts its measure of the given response
        measure = ctx.spec("rewrite").params.get("confidence", {})
        gated[REWRITE] = (SelectorSpec(name="confidence", params=measure), "confidence")
    if cfg.judge_min_auroc is None or not gated or not (ctx.tasks or cfg.judge_rows):
        return {}
    pairs = (load_judge_rows(cfg.judge_rows, ctx.recipe.columns) if cfg.judge_rows else
             known_answer_pairs({t.name: ctx.split(t, "dev") for t in ctx.tasks}, ctx.recipe.finetune.seed))
    known = save_rows(ctx.store, pairs.drop("correct", "spoiled"))
    tables: dict[str, pl.DataFrame] = {}
    for spec, _ in gated.values():  # one score run per distinct spec (name and params)
        key = spec.model_dump_json()
        if key not in tables:
            tables[key] = score_flow(ctx.recipe, known, selectors=[spec]).read()
    return {col: judge_report(pairs, tables[spec.model_dump_json()], {col: measured})[col]
            for col, (spec, measured) in gated.items()}


@recipe_flow("tuneset-curate")
def curate_flow(recipe: Recipe, pool: Pool | None = None) -> CurateResult:
    """Curates `pool` (default: the recipe's pool file, read and validated here): a compare reads
    the pool once and hands it to every strategy's own curation."""
    ctx = run_context(recipe)
    pool = pool or load_pool(ctx)
    rows, n_read = pool.rows, pool.n_read
    scores = curation_scores(ctx, rows)
    judge = judge_competence(ctx)
    notes = gate_notes(recipe.curate, judge)
    for note in notes:
        log.warning("judge gate: %s", note)
    kept, audit = curate_rows(rows.read(), recipe.curate, eval_rows(ctx), scores, pool.quarantined, judge)
    counts = check_accounting(audit, n_read)
    final = ctx.run_dir("curate")
    with atomic_folder(final) as out:  # the five files change together, or not at all
        write_rows(out / "curated.jsonl", kept)
        write_parquet(audit, out / "audit.parquet")
        write_csv(audit.select(pl.exclude("choices")), out / "audit.csv")
        columns = [c for c in (scores.columns if scores is not None else []) if c in step_selectors(recipe.curate)]
        has_plot = plot_scores(audit, columns, out / "scores.png", applied_filters(recipe.curate, judge))
        gate_text = "".join(f"- {line}\n" for line in gate_lines(recipe.curate, judge))
        write_text(out / "report.md", render_report(recipe.name, n_read, counts, audit, "scores.png" if has_plot else None,
                                                    pool.n_resent) + (f"\n## Judge gate\n\n{gate_text}" if judge else ""))
    print(f"curated {n_read} rows: {counts}; audit {final / 'audit.parquet'}")
    return CurateResult(save_rows(ctx.store, kept), pool, str(final / "audit.parquet"), str(final / "report.md"), counts)

