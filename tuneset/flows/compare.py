"""Compare flow: strategies x budgets x seeds, plus no-fine-tune and full-pool baselines,
judged on the same test rows with paired differences against random."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import polars as pl
from prefect import flow

from tuneset.curation import budget_count
from tuneset.evaluate.leaderboard import FULL, NONE, build_leaderboard, plot, to_markdown
from tuneset.flows.common import load_pool, run_dir, timed, write_json
from tuneset.flows.curate import curate_flow
from tuneset.flows.score import score_flow
from tuneset.flows.select import select_rows
from tuneset.flows.train_eval import evaluate_model, finetune_task, train_seconds
from tuneset.recipe import Recipe, SelectorSpec
from tuneset.selectors import get_selector

log = logging.getLogger("tuneset.compare")


def needed_selectors(recipe: Recipe) -> list[SelectorSpec]:
    """Selectors the strategies' weights name (`-ifd` and `ifd.ppl_response` both need `ifd`)."""
    names: list[str] = []
    for st in recipe.compare.strategies:
        for col in (st.weights or {st.name: 1.0}):
            n = col.lstrip("-").split(".")[0]
            if n not in names:
                names.append(n)
    return [recipe.score.spec(n) for n in names]


@flow(name="tuneset-compare", log_prints=True)
def compare_flow(recipe: Recipe) -> dict[str, str]:
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    cmp = recipe.compare
    with timed(timings, "curate"):
        rows = curate_flow(recipe).rows if cmp.curate_first else load_pool(recipe)[0]
    specs = needed_selectors(recipe)
    # Seeded selectors (random, DSIR's resampling, ...) are rescored per seed; the rest once.
    seeded = [s for s in specs if "seed" in get_selector(s.name).uses]
    fixed = [s for s in specs if s not in seeded]
    with timed(timings, "score"):
        scores = score_flow(recipe, rows, selectors=fixed) if fixed else None
    results: list[dict] = []
    tasks = {t.name: t for t in recipe.task_specs()}

    def record(strategy: str, budget: str, n_rows: int, seed, model_dir: str | None) -> None:
        with timed(timings, "evaluate"):
            paths = evaluate_model(recipe, model_dir)
        train_s = train_seconds(model_dir) if model_dir else 0.0
        for task, p in paths.items():
            eval_s = json.loads((Path(p).parent / "meta.json").read_text()).get("seconds", 0.0)
            results.append({"strategy": strategy, "budget": budget, "n_rows": n_rows, "seed": seed, "task": task,
                            "metric": tasks[task].metric, "examples": p, "train_s": train_s, "eval_s": eval_s})

    info = {"pool_rows": rows.n, "budgets": {str(b): budget_count(b, rows.n) for b in cmp.budgets}}
    if NONE in cmp.baselines:
        record(NONE, "-", 0, "-", None)
    for seed in cmp.seeds:
        seed_scores = scores
        if seeded:
            with timed(timings, "score"):
                seed_scores = score_flow(recipe, rows, seed=seed, selectors=[*fixed, *seeded])
        for budget in cmp.budgets:
            label = str(budget)
            for st in cmp.strategies:
                with timed(timings, "select"):
                    sel = select_rows(recipe, rows, seed_scores, st.policy(budget))
                print(f"[seed {seed}] {st.name} @ {label}: {sel.rows.n} rows (of {rows.n})")
                with timed(timings, "finetune"):
                    model_dir = finetune_task(recipe, sel.rows, seed)
                record(st.name, label, sel.rows.n, seed, model_dir)
                write_leaderboard(recipe, results, timings, info, final=False)
    # The full pool costs most: run it last, so an interrupted compare still has every strategy.
    full_seeds = cmp.seeds if cmp.full_seeds is None else cmp.full_seeds
    for seed in full_seeds if FULL in cmp.baselines else []:
        print(f"[seed {seed}] full pool: {rows.n} rows")
        with timed(timings, "finetune"):
            model_dir = finetune_task(recipe, rows, seed, cmp.full_epochs)
        record(FULL, "100%", rows.n, seed, model_dir)
    timings["total"] = time.perf_counter() - t_start
    return write_leaderboard(recipe, results, timings, info)


def write_leaderboard(recipe: Recipe, results: list[dict], timings: dict[str, float], info: dict, final: bool = True) -> dict[str, str]:
    """Write CSV, Markdown and PNG; also called after every run so a killed compare leaves a board."""
    out = run_dir(recipe, "compare")
    board = build_leaderboard(results)
    board.write_csv(out / "leaderboard.csv")
    pl.DataFrame(results).write_csv(out / "runs.csv")
    md = to_markdown(board)
    stage_lines = "\n".join(f"| {k} | {v:.0f} |" for k, v in timings.items())
    compute = (pl.DataFrame(results).group_by("strategy", "seed", maintain_order=True)
               .agg(pl.col("n_rows").first(), pl.col("train_s").first(), pl.col("eval_s").sum())
               .group_by("strategy", maintain_order=True)
               .agg(pl.col("n_rows").first(), pl.len().alias("runs"), pl.col("train_s").mean(), pl.col("eval_s").mean()))
    compute_lines = "\n".join(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.0f} | {r[4]:.0f} |" for r in compute.iter_rows())
    (out / "leaderboard.md").write_text(
        f"# Leaderboard: {recipe.name}\n\n{info}\n\n{md}\n"
        f"## Compute per run, as recorded when each artifact was built (s, mean over runs)\n\n"
        f"| strategy | rows | runs | fine-tune | evaluate (all tasks) |\n|---|---|---|---|---|\n{compute_lines}\n\n"
        f"## Wall time of this invocation per stage (s; cached work costs ~0)\n\n| stage | seconds |\n|---|---|\n{stage_lines}\n")
    plot(board, out / "leaderboard.png")
    write_json(out / "timings.json", timings)
    if final:
        print(md)
    return {"markdown": str(out / "leaderboard.md"), "csv": str(out / "leaderboard.csv"), "plot": str(out / "leaderboard.png")}
