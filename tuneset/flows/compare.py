"""Compare flow: strategies x budgets x seeds, plus no-fine-tune and full-pool baselines,
judged on the same test rows with paired differences against random."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from prefect import task
from prefect.cache_policies import NONE as NO_CACHE

from tuneset.data.io import load_rows, write_csv, write_text
from tuneset.errors import TunesetError
from tuneset.evaluate.leaderboard import FULL, NONE, build_leaderboard, leaderboard_markdown, plot, to_markdown
from tuneset.flows.common import Pool, RowsRef, load_pool, recipe_flow, save_rows, timed, write_json
from tuneset.flows.context import RunContext, run_context
from tuneset.flows.curate import curate_flow
from tuneset.flows.score import score_flow, task_runner
from tuneset.flows.select import Selection, check_quota_fields, select_rows
from tuneset.flows.sweep import base_context, sweep_finetune
from tuneset.flows.train_eval import evaluate_model, finetune_task, train_seconds
from tuneset.recipe import CompareConfig, FinetuneConfig, Recipe, SelectorSpec, Strategy
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


def strategy_rows(ctx: RunContext, st: Strategy, pool: Pool, default: RowsRef) -> RowsRef:
    """The rows a strategy selects from: its own curation of the pool, or the compare's rows."""
    if st.curate is None:
        return default
    recipe = ctx.recipe
    return curate_flow(recipe.model_copy(update={"curate": st.curate, "name": f"{recipe.name}-{st.name}"}), pool).rows


def compare_flow(recipe: Recipe) -> dict[str, str]:
    """Compare the recipe's strategies downstream; arms run `compare.workers` at a time on the
    recipe's task runner (`score.runner`, `score.address`)."""
    runner = task_runner(recipe.score.model_copy(update={"workers": recipe.compare.workers}))
    return _compare_flow.with_options(task_runner=runner)(recipe)


@dataclass(frozen=True)
class Arm:
    """One fine-tune and evaluation of a compare: rows None is the no-fine-tune arm."""

    strategy: str
    budget: str
    n_rows: int
    seed: int | str
    rows: RowsRef | None
    cfg: FinetuneConfig | None


@task(cache_policy=NO_CACHE, task_run_name="arm-{arm.strategy}-{arm.budget}-seed-{arm.seed}")
def arm_task(ctx: RunContext, base_ctx: RunContext, arm: Arm) -> dict:
    """Fine-tune (unless the arm has no rows) and evaluate on the test and dev rows: the dev scores
    are what the recommended arm is chosen on, never the test rows. Returns the paths and the
    seconds each stage took."""
    t0 = time.perf_counter()
    model_dir = finetune_task(ctx, arm.rows, arm.seed, arm.cfg) if arm.rows is not None else None
    t1 = time.perf_counter()
    paths, dev_paths = evaluate_model(base_ctx, model_dir), evaluate_model(base_ctx, model_dir, split="dev")
    return {"model_dir": model_dir, "paths": paths, "dev_paths": dev_paths,
            "finetune_s": t1 - t0, "evaluate_s": time.perf_counter() - t1}


@recipe_flow("tuneset-compare")
def _compare_flow(recipe: Recipe) -> dict[str, str]:
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    ctx = run_context(recipe)
    cmp = recipe.compare
    # Every pool row is scored, whatever the strategies: a strategy's own curation starts from the
    # pool, and a selector fitted on the rows it scores (LESS's warm-up sample) must not change with
    # the company a strategy keeps.
    with timed(timings, "curate"):
        pool = load_pool(ctx)
        check_quota_fields(pool, {f"compare.strategies ({st.name})": st for st in cmp.strategies})
        rows = curate_flow(recipe, pool).rows if cmp.curate_first else pool.rows
        own_rows = {st.name: strategy_rows(ctx, st, pool, rows) for st in cmp.strategies}
    for st in cmp.strategies:  # an arm that trains on every candidate compares nothing
        n = own_rows[st.name].n
        if (over := next((b for b in cmp.budgets if budget_count(b, n) >= n), None)):
            raise TunesetError(f"compare.budgets: {over} takes all {n:,} candidate rows of strategy "
                               f"'{st.name}' (after curation): every strategy would train on the same rows; give a "
                               "smaller budget (the `full` baseline trains on the whole pool)")
    specs = needed_selectors(ctx)
    # Seeded selectors (random, DSIR's resampling, ...) are rescored per seed; the rest once.
    seeded = [s for s in specs if "seed" in get_selector(s.name).uses]
    fixed = [s for s in specs if s not in seeded]
    with timed(timings, "score"):
        scores = score_flow(recipe, pool.rows, selectors=fixed) if fixed else None

    def scores_for(seed: int):
        if not seeded:
            return scores
        with timed(timings, "score"):
            return score_flow(recipe, pool.rows, seed=seed, selectors=[*fixed, *seeded])

    def select(st: Strategy, budget, seed_scores) -> Selection:
        with timed(timings, "select"):
            return select_rows(ctx, own_rows[st.name], seed_scores, st.policy(budget))

    results: list[dict] = []
    tasks = {t.name: t for t in ctx.tasks}
    settings = {str(b): recipe.finetune for b in cmp.budgets}
    if cmp.sweep is None:
        base_ctx = base_context(ctx) if "none" in cmp.baselines else ctx  # the no-fine-tune arm's best prompt format
    else:
        st = next(s for s in cmp.strategies if s.name == cmp.sweep.strategy)
        sweep_scores = scores_for(cmp.sweep.seed)
        sweep_rows = {str(b): select(st, b, sweep_scores).rows for b in cmp.budgets}  # timed as score/select
        with timed(timings, "sweep"):
            settings, base_ctx = chosen_settings(ctx, sweep_rows)

    def run_arms(arms: list[Arm]) -> None:
        """Submit the arms together (the runner decides how many run at once), then record each
        in submission order, writing the leaderboard after every one."""
        futures = [arm_task.submit(ctx, base_ctx, arm) for arm in arms]
        for arm, fut in zip(arms, futures):
            out = fut.result()
            timings["finetune"] = timings.get("finetune", 0.0) + out["finetune_s"]
            timings["evaluate"] = timings.get("evaluate", 0.0) + out["evaluate_s"]
            train_s = train_seconds(out["model_dir"]) if out["model_dir"] else 0.0
            for task_name, p in out["paths"].items():
                eval_s = json.loads((Path(p).parent / "result.json").read_text())["seconds"]
                results.append({"strategy": arm.strategy, "budget": arm.budget, "n_rows": arm.n_rows, "seed": arm.seed,
                                "task": task_name, "metric": tasks[task_name].metric, "examples": p,
                                "dev_examples": out["dev_paths"][task_name], "train_s": train_s, "eval_s": eval_s})
            write_leaderboard(ctx, results, timings, info, final=False)

    full_cfg = full_pool_settings(cmp, settings, rows.n, recipe.finetune)
    info = {"pool_rows": pool.rows.n, "curated_rows": rows.n, "controls": recipe.controls,
            "budgets": {str(b): budget_count(b, rows.n) for b in cmp.budgets},
            "finetune": {**{f"budget {b}": _changed(c, recipe.finetune) for b, c in settings.items()},
                         "full pool": _changed(full_cfg, recipe.finetune),
                         "no fine-tune": {"prompt_format": base_ctx.recipe.finetune.prompt_format}}}
    if NONE in cmp.baselines:
        run_arms([Arm(NONE, "-", 0, "-", None, None)])
    refs = {name: save_rows(ctx.store, load_rows(path).rows) for name, path in cmp.references.items()}
    full_seeds = (cmp.seeds if cmp.full_seeds is None else cmp.full_seeds) if FULL in cmp.baselines else []

    def full_arm(seed: int) -> Arm:
        return Arm(FULL, "100%", rows.n, seed, rows, full_cfg)

    # Seed by seed, references and the full pool included, so an interrupted compare already has
    # every arm at seed 0.
    for seed in cmp.seeds:
        seed_scores = scores_for(seed)
        arms: list[Arm] = []
        for budget in cmp.budgets:
            label = str(budget)
            for st in cmp.strategies:
                sel = select(st, budget, seed_scores)
                print(f"[seed {seed}] {st.name} @ {label}: {sel.rows.n} rows (of {own_rows[st.name].n})")
                arms.append(Arm(st.name, label, sel.rows.n, seed, sel.rows, settings[label]))
        for name, ref in refs.items():
            label = next((str(b) for b in cmp.budgets if budget_count(b, rows.n) == ref.n), str(ref.n))
            print(f"[seed {seed}] reference {name}: {ref.n} rows")
            cfg = settings.get(label, next(iter(settings.values()), recipe.finetune))
            arms.append(Arm(f"{name} (reference)", label, ref.n, seed, ref, cfg))
        if seed in full_seeds:
            print(f"[seed {seed}] full pool: {rows.n} rows")
            arms.append(full_arm(seed))
        run_arms(arms)
    # Full-pool seeds the seed loop did not reach (full_seeds outside seeds).
    run_arms([full_arm(seed) for seed in full_seeds if seed not in cmp.seeds])
    timings["total"] = time.perf_counter() - t_start
    if not results:  # no seeds and no baselines: a sweep alone (`tuneset sweep`)
        write_json(ctx.run_dir("sweep") / "chosen.json", info["finetune"])
        return {"sweep": str(ctx.run_dir("sweep"))}
    return write_leaderboard(ctx, results, timings, info)


def chosen_settings(ctx: RunContext, rows_at: dict[str, RowsRef]) -> tuple[dict[str, FinetuneConfig], RunContext]:
    """Per budget, the sweep's best fine-tune settings on `rows_at[budget]`; and the context the
    no-fine-tune arm is evaluated with (the base model's best prompt format on dev rows)."""
    sw = ctx.recipe.compare.sweep
    assert sw is not None
    base_ctx = base_context(ctx, [str(f) for f in sw.grid["prompt_format"]] if "prompt_format" in sw.grid else None)
    settings = {b: sweep_finetune(ctx, rows, sw, b, base_ctx).best for b, rows in rows_at.items()}
    return settings, base_ctx


def full_pool_settings(cmp: CompareConfig, settings: dict[str, FinetuneConfig], n_rows: int,
                       recipe_cfg: FinetuneConfig) -> FinetuneConfig:
    """The full pool trains as the largest budget does (its sweep's winner: the nearest in size),
    whatever order the budgets are listed in; `full_epochs` overrides the epochs."""
    cfg = settings[str(max(cmp.budgets, key=lambda b: budget_count(b, n_rows)))] if cmp.budgets else recipe_cfg
    return cfg if cmp.full_epochs is None else cfg.model_copy(update={"epochs": cmp.full_epochs})


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
    controls = info.get("controls")
    curated = info.get("curated_rows", info["pool_rows"])
    pool = f"The pool has {info['pool_rows']:,} rows" + (f", {curated:,} after curation" if curated != info["pool_rows"] else "")
    return (pool + (f"; {budgets}" if budgets else "") + ". "
            + (f"Control tasks, evaluated but never aimed at: {', '.join(controls)}. " if controls else "")
            + f"Fine-tune settings where they differ from the recipe's (else its lr, epochs and prompt format): {arms}.")


def board_dir(ctx: RunContext) -> Path:
    """The compare's folder, with the recipe it ran (`recipe.json`). A board another recipe wrote
    (other strategies, seeds, settings) moves to `compare-history/<n>-<time>/` first rather than
    being overwritten; the same recipe run again, or resumed, goes on in the same folder."""
    out = ctx.root / "compare"
    mine, theirs = json.loads(json.dumps(ctx.recipe.model_dump(mode="json"), default=str)), out / "recipe.json"
    if theirs.exists() and json.loads(theirs.read_text()) == mine:
        return out
    if out.exists() and any(out.iterdir()):
        past = ctx.run_dir("compare-history")
        when = time.strftime("%Y%m%dT%H%M%S", time.gmtime(max(f.stat().st_mtime for f in out.iterdir())))
        out.rename(past / f"{len(list(past.iterdir())):05d}-{when}")
        log.info("the last compare of recipe '%s' ran other settings: its board is kept in %s", ctx.recipe.name, past)
    write_json(ctx.run_dir("compare") / "recipe.json", mine)
    return out


def write_leaderboard(ctx: RunContext, results: list[dict], timings: dict[str, float], info: dict, final: bool = True) -> dict[str, str]:
    """Write CSV, Markdown and PNG; also called after every run so a killed compare leaves a board."""
    out = board_dir(ctx)
    board = build_leaderboard(results)
    write_csv(board, out / "leaderboard.csv")
    write_csv(pl.DataFrame(results), out / "runs.csv")
    md = to_markdown(board)
    write_text(out / "leaderboard.md", leaderboard_markdown(ctx.recipe.name, describe(info), md, results, timings))
    plot(board, out / "leaderboard.png")
    write_json(out / "timings.json", timings)
    if final:
        print(md)
    return {"markdown": str(out / "leaderboard.md"), "csv": str(out / "leaderboard.csv"), "plot": str(out / "leaderboard.png")}
