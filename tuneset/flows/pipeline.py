"""Pipeline flow: curate -> score -> select -> fine-tune -> evaluate, from one recipe."""

from __future__ import annotations

import polars as pl
from prefect import flow

from tuneset.data.io import write_rows
from tuneset.flows.common import recipe_flow, run_dir, write_json
from tuneset.flows.curate import curate_flow
from tuneset.flows.score import score_flow
from tuneset.flows.select import select_rows
from tuneset.flows.train_eval import evaluate_model, finetune_task
from tuneset.recipe import Recipe, load_recipe


@recipe_flow("tuneset-pipeline")
def pipeline_flow(recipe: Recipe) -> dict:
    curated = curate_flow(recipe)
    scores = score_flow(recipe, curated.rows, seed=recipe.finetune.seed)
    sel = select_rows(recipe, curated.rows, scores, recipe.select)
    out = run_dir(recipe, "pipeline")
    write_rows(out / "selected.jsonl", sel.rows.read())
    model_dir = finetune_task(recipe, sel.rows, recipe.finetune.seed)
    base = {k: float(pl.read_parquet(p)["score"].mean()) for k, p in evaluate_model(recipe, None).items()}
    tuned = {k: float(pl.read_parquet(p)["score"].mean()) for k, p in evaluate_model(recipe, model_dir).items()}
    summary = {"curation": curated.counts, "selected": sel.rows.n, "model_dir": model_dir,
               "no_finetune": base, "finetuned": tuned, "selection_table": sel.table}
    write_json(out / "summary.json", summary)
    for task in tuned:
        print(f"{task}: no fine-tune {base[task]:.3f} -> fine-tuned on {sel.rows.n} selected rows {tuned[task]:.3f}")
    return summary


@flow(name="tuneset-scheduled-pipeline", log_prints=True)
def scheduled_pipeline(recipe_path: str, overrides: list[str] | None = None) -> dict:
    """Entry point for `serve`: re-reads the recipe file at every run, so edits take effect."""
    return pipeline_flow(load_recipe(recipe_path, overrides or []))
