"""Compare flow: strategies x budgets x seeds, plus no-fine-tune and full-pool baselines,
judged on the same test rows with paired differences against random."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import polars as pl

from tuneset.data.io import load_rows
from tuneset.evaluate.leaderboard import FULL, NONE, build_leaderboard, leaderboard_markdown, plot, to_markdown
from tuneset.flows.common import RowsRef, load_pool, recipe_flow, save_rows, timed, write_json
from tuneset.flows.context import RunContext, run_context
from tuneset.flows.curate import curate_flow
from tuneset.flows.score import score_flow
from tuneset.flows.select import Selection, select_rows
from tuneset.flows.sweep import best_base_format, sweep_finetune
from tuneset.flows.train_eval import evaluate_model, finetune_task, train_seconds
from tuneset.recipe import FinetuneConfig, Recipe, SelectorSpec, Strategy
from tuneset.selection import budget_count
from tuneset.selectors import get_selector

log = logging.getLogger("tuneset.compare")


def needed_selectors(ctx: RunContext) -> list[SelectorSpec]:
    """Selectors the strategies' weights name (`-ifd` and `ifd.ppl_response` both need `ifd`)."""
    names: list[str] = []
    for st in ctx.recipe.compare.strategies:
        for col in st.columns():
            n = col.lstrip("-").split(".")[0]
            if n not in names:
                names.append(n)
    return [ctx.spec(n) for n in names]


def strategy_rows(ctx: RunContext, st: Strategy, default: RowsRef) -> RowsRef:
    """The rows a strategy selects from: its own curation of the pool, or the compare's rows."""
    if st.curate is None:
        return default
    recipe = ctx.recipe
    return curate_flow(recipe.model_copy(update={"curate": st.curate, "name": f"{recipe.name}-{st.name}"})).rows


@recipe_flow("tuneset-compare")
def compare_flow(recipe: Recipe) -> dict[str, str]:
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    ctx = run_context(recipe)
    cmp = recipe.compare
    with timed(timings, "curate"):
        rows = curate_flow(recipe).rows if cmp.curate_first else load_pool(ctx)[0]
        own_rows = {st.name: strategy_rows(ctx, st, rows) for st in cmp.strategies}
    # A strategy's own curation starts from the pool, so then every pool row is scored.
    scored = load_pool(ctx)[0] if any(st.curate for st in cmp.strategies) else rows
    specs = needed_selectors(ctx)
    # Seeded selectors (random, DSIR's resampling, ...) are rescored per seed; the rest once.
    seeded = [s for s in specs if "seed" in get_selector(s.name).uses]
    fixed = [s for s in specs if s not in seeded]
    with timed(timings, "score"):
        scores = score_flow(recipe, scored, selectors=fixed) if fixed else None

    def scores_for(seed: int):
        if not seeded:
            return scores
        with timed(timings, "score"):
            return score_flow(recipe, scored, seed=seed, selectors=[*fixed, *seeded])

    def select(st: Strategy, budget, seed_scores) -> Selection:
        with timed(timings, "select"):
            return select_rows(ctx, own_rows[st.name], seed_scores, st.policy(budget))

    results: list[dict] = []
    tasks = {t.name: t for t in ctx.tasks}
    settings = {str(b): recipe.finetune for b in cmp.budgets}
    base_ctx = ctx  # the no-fine-tune arm's: a sweep may choose its prompt format
    if cmp.sweep is not None:
        st = next(s for s in cmp.strategies if s.name == cmp.sweep.strategy)
        sweep_scores = scores_for(cmp.sweep.seed)
        sweep_rows = {str(b): select(st, b, sweep_scores).rows for b in cmp.budgets}  # timed as score/select
        with timed(timings, "sweep"):
            settings, base_ctx = chosen_settings(ctx, sweep_rows)

    def record(strategy: str, budget: str, n_rows: int, seed, model_dir: str | None) -> None:
        # Dev rows too: the arm to recommend is chosen on them, never on the test rows.
        with timed(timings, "evaluate"):
            paths = evaluate_model(base_ctx, model_dir)
            dev_paths = evaluate_model(base_ctx, model_dir, split="dev")
        train_s = train_seconds(model_dir) if model_dir else 0.0
        for task, p in paths.items():
            eval_s = json.loads((Path(p).parent / "result.json").read_text())["seconds"]
            results.append({"strategy": strategy, "budget": budget, "n_rows": n_rows, "seed": seed, "task": task,
                            "metric": tasks[task].metric, "examples": p, "dev_examples": dev_paths[task],
                            "train_s": train_s, "eval_s": eval_s})

    full_cfg = settings[str(cmp.budgets[-1])] if cmp.budgets else recipe.finetune
    if cmp.full_epochs:
        full_cfg = full_cfg.model_copy(update={"epochs": cmp.full_epochs})
    info = {"pool_rows": rows.n, "budgets": {str(b): budget_count(b, rows.n) for b in cmp.budgets},
            "finetune": {**{f"budget {b}": _changed(c, recipe.finetune) for b, c in settings.items()},
                         "full pool": _changed(full_cfg, recipe.finetune),
                         "no fine-tune": {"prompt_format": base_ctx.recipe.finetune.prompt_format}}}
    if NONE in cmp.baselines:
        record(NONE, "-", 0, "-", None)
    refs = {name: save_rows(ctx.store, load_rows(path).rows) for name, path in cmp.references.items()}
    full_seeds = (cmp.seeds if cmp.full_seeds is None else cmp.full_seeds) if FULL in cmp.baselines else []

    def run_full(seed: int) -> None:
        print(f"[seed {seed}] full pool: {rows.n} rows")
        with timed(timings, "finetune"):
            model_dir = finetune_task(ctx, rows, seed, full_cfg)
        record(FULL, "100%", rows.n, seed, model_dir)
        write_leaderboard(ctx, results, timings, info, final=False)

    # Seed by seed, references and the full pool included, so an interrupted compare already has
    # every arm at seed 0.
    for seed in cmp.seeds:
        seed_scores = scores_for(seed)
        for budget in cmp.budgets:
            label = str(budget)
            for st in cmp.strategies:
                sel = select(st, budget, seed_scores)
                print(f"[seed {seed}] {st.name} @ {label}: {sel.rows.n} rows (of {own_rows[st.name].n})")
                with timed(timings, "finetune"):
                    model_dir = finetune_task(ctx, sel.rows, seed, settings[label])
                record(st.name, label, sel.rows.n, seed, model_dir)
                write_leaderboard(ctx, results, timings, info, final=False)
        for name, ref in refs.items():
            label = next((str(b) for b in cmp.budgets if budget_count(b, rows.n) == ref.n), str(ref.n))
            print(f"[seed {seed}] reference {name}: {ref.n} rows")
            with timed(timings, "finetune"):
                model_dir = finetune_task(ctx, ref, seed, settings.get(label, next(iter(settings.values()), recipe.finetune)))
            record(f"{name} (reference)", label, ref.n, seed, model_dir)
            write_leaderboard(ctx, results, timings, info, final=False)
        if seed in full_seeds:
            run_full(seed)
    # Full-pool seeds the seed loop did not reach (full_seeds outside seeds).
    for seed in [s for s in full_seeds if s not in cmp.seeds]:
        run_full(seed)
    timings["total"] = time.perf_counter() - t_start
    if not results:  # no seeds and no baselines: a sweep alone (`tuneset sweep`)
        write_json(ctx.run_dir("sweep") / "chosen.json", info["finetune"])
        return {"sweep": str(ctx.run_dir("sweep"))}
    return write_leaderboard(ctx, results, timings, info)


def chosen_settings(ctx: RunContext, rows_at: dict[str, RowsRef]) -> tuple[dict[str, FinetuneConfig], RunContext]:
    """Per budget, the sweep's best fine-tune settings on `rows_at[budget]`; and the context the
    no-fine-tune arm is evaluated with (the base model's best prompt format on dev rows)."""
    sw, finetune = ctx.recipe.compare.sweep, ctx.recipe.finetune
    assert sw is not None
    settings = {b: sweep_finetune(ctx, rows, sw, b).best for b, rows in rows_at.items()}
    formats = [str(f) for f in sw.grid.get("prompt_format", [finetune.prompt_format])]
    fmt = best_base_format(ctx, formats)
    return settings, ctx.with_recipe(finetune=finetune.model_copy(update={"prompt_format": fmt}))


def _changed(cfg: FinetuneConfig, recipe_cfg: FinetuneConfig) -> dict:
    """The fine-tune settings that differ from the recipe's, or its lr/epochs/format when none do."""
    base = recipe_cfg.model_dump()
    diff = {k: v for k, v in cfg.model_dump().items() if base.get(k) != v and k != "seed"}
    return diff or {k: base[k] for k in ("lr", "epochs", "prompt_format")}


def describe(info: dict) -> str:
    """The run's setup in two sentences: what each budget selects from the pool, and the fine-tune
    settings of each arm (arms trained alike named together), so the header reads without code."""
    def words(cfg: dict) -> str:
        return ", ".join(f"{k.replace('_', ' ')} {'/'.join(map(str, v)) if isinstance(v, list | tuple) else v}"
                         for k, v in cfg.items())

    budgets = "; ".join(f"budget {b} selects {n:,} rows" for b, n in info["budgets"].items())
    alike: dict[str, list[str]] = {}
    for arm, cfg in info["finetune"].items():
        alike.setdefault(words(cfg), []).append(arm)
    arms = "; ".join(f"{' and '.join(names)}: {settings}" for settings, names in alike.items())
    return (f"The pool has {info['pool_rows']:,} rows" + (f"; {budgets}" if budgets else "") + ". "
            f"Fine-tune settings where they differ from the recipe's (else its lr, epochs and prompt format): {arms}.")


def write_leaderboard(ctx: RunContext, results: list[dict], timings: dict[str, float], info: dict, final: bool = True) -> dict[str, str]:
    """Write CSV, Markdown and PNG; also called after every run so a killed compare leaves a board."""
    out = ctx.run_dir("compare")
    board = build_leaderboard(results)
    board.write_csv(out / "leaderboard.csv")
    pl.DataFrame(results).write_csv(out / "runs.csv")
    md = to_markdown(board)
    (out / "leaderboard.md").write_text(leaderboard_markdown(ctx.recipe.name, describe(info), md, results, timings))
    plot(board, out / "leaderboard.png")
    write_json(out / "timings.json", timings)
    if final:
        print(md)
    return {"markdown": str(out / "leaderboard.md"), "csv": str(out / "leaderboard.csv"), "plot": str(out / "leaderboard.png")}
