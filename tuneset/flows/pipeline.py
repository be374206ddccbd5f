"""Pipeline flow: curate -> score -> select -> fine-tune -> evaluate, from one recipe."""

from __future__ import annotations

import polars as pl
from prefect import flow

from tuneset.data.io import write_rows
from tuneset.evaluate.leaderboard import answer_text, top_answer
from tuneset.flows.checks import check_recipe
from tuneset.flows.common import load_pool, recipe_flow, write_json
from tuneset.flows.context import RunContext, run_context
from tuneset.flows.curate import curate_flow
from tuneset.flows.history import new_share, past_runs, record_run, run_folder, run_report, was_finetuned
from tuneset.flows.score import score_flow
from tuneset.flows.select import Selection, check_quota_fields, select_rows
from tuneset.flows.sweep import base_context
from tuneset.flows.train_eval import evaluate_model, finetune_task
from tuneset.recipe import Recipe, load_recipe


@recipe_flow("tuneset-pipeline")
def pipeline_flow(recipe: Recipe) -> dict:
    """One run: curate, score and select; then fine-tune and evaluate unless the selection moved
    less than `schedule.retrain_min_change` since the last run that fine-tuned. Every run leaves a report of what
    changed (`tuneset runs`); runs of one recipe never overlap."""
    ctx = run_context(recipe)
    pool = load_pool(ctx)
    check_quota_fields(pool, {"select": recipe.select})
    curated = curate_flow(recipe, pool)
    scores = score_flow(recipe, curated.pool.rows, seed=recipe.finetune.seed)  # the pool's, as in select and compare
    sel = select_rows(ctx, curated.rows, scores, recipe.select)
    out = ctx.run_dir("pipeline")
    write_rows(out / "selected.jsonl", sel.rows.read())
    runs = past_runs(ctx)
    prev = (runs or [None])[-1]
    report, diff = run_report(prev, curated.audit, scores.path, sel.table, curated.counts, scores.directions)
    # Measured against the model in use, the last run that fine-tuned: against the run before, a
    # selection drifting a little each run would never add up to a retrain.
    trained = next((r for r in reversed(runs) if was_finetuned(r)), None)
    report["change_since_finetune"] = new_share(trained, sel.table)
    summary = {"curation": curated.counts, "selected": sel.rows.n, "selection_table": sel.table,
               "change": report["change"], "change_since_finetune": report["change_since_finetune"]}
    threshold = recipe.schedule.retrain_min_change
    if trained is not None and report["change_since_finetune"] < threshold:
        report["finetuned"] = (f"Not fine-tuned: {report['change_since_finetune']:.1%} of the selection is new since "
                               f"the last fine-tuned run, below schedule.retrain_min_change {threshold:.1%}.")
    else:
        summary |= _finetune_and_evaluate(ctx, sel)
        report["finetuned"] = f"Fine-tuned on {sel.rows.n} rows: {summary['model_dir']}."
        report["model_dir"] = summary["model_dir"]
    folder = run_folder(ctx, report)
    summary["report"] = str(folder / "report.md")
    write_json(out / "summary.json", summary)  # before the run is recorded, which commits it
    record_run(ctx, folder, report, diff)
    print(report["finetuned"] + f" Run report: {summary['report']}")
    return summary


def _finetune_and_evaluate(ctx: RunContext, sel: Selection) -> dict:
    model_dir = finetune_task(ctx, sel.rows, ctx.recipe.finetune.seed)
    base_ctx = base_context(ctx)
    base = {k: float(pl.read_parquet(p)["score"].mean()) for k, p in evaluate_model(base_ctx, None).items()}
    tuned_results = {k: pl.read_parquet(p) for k, p in evaluate_model(ctx, model_dir).items()}
    tuned = {k: float(f["score"].mean()) for k, f in tuned_results.items()}
    answers = {k: top_answer(f) for k, f in tuned_results.items()}
    for task in tuned:
        said = "" if answers[task] is None else (f" (most common answer '{answer_text(answers[task][0])}' on "
                                                 f"{answers[task][1]:.0%} of test rows)")
        print(f"{task}: no fine-tune {base[task]:.3f} -> fine-tuned on {sel.rows.n} selected rows {tuned[task]:.3f}{said}")
    return {"model_dir": model_dir, "no_finetune": base, "no_finetune_format": base_ctx.recipe.finetune.prompt_format,
            "finetuned": tuned, "finetuned_top_answer": {k: None if a is None else {"answer": a[0], "share": a[1]}
                                                         for k, a in answers.items()}}


@flow(name="tuneset-scheduled-pipeline", log_prints=True)
def scheduled_pipeline(recipe_path: str, overrides: list[str] | None = None) -> dict:
    """Entry point for `serve`: re-reads the recipe file at every run, so edits take effect; an edit
    that cannot work fails that run in one line before any work, as `tuneset pipeline` would."""
    return pipeline_flow(check_recipe(load_recipe(recipe_path, overrides or []), recipe_path, selects=True, evaluates=True))
