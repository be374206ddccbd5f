"""Score flow: every selector scores every row, shard by shard, cached per row and resumable."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from prefect import task
from prefect.cache_policies import NONE

from tuneset.data.fingerprint import row_keys
from tuneset.data.io import write_parquet
from tuneset.errors import TunesetError
from tuneset.flows.common import RowsRef, load_pool, read_rows, recipe_flow
from tuneset.flows.context import RunContext, run_context
from tuneset.flows.warmup import warmup_task
from tuneset.progress import ProgressLog
from tuneset.recipe import Recipe, ScoreConfig, SelectorSpec
from tuneset.selectors import Selector, make_selector, validate_scores
from tuneset.selectors.base import MapReduceSelector, add_partials
from tuneset.store import RowCache

log = logging.getLogger("tuneset.score")


@dataclass(frozen=True)
class ScoresRef:
    """Score table on disk: id plus one column per selector (`name`) and its components (`name.part`)."""

    path: str
    directions: dict[str, bool]

    def read(self) -> pl.DataFrame:
        return pl.read_parquet(self.path)


def _prefixed(name: str, frame: pl.DataFrame) -> pl.DataFrame:
    return frame.rename({c: name if c == "score" else f"{name}.{c}" for c in frame.columns if c != "id"})


@task(cache_policy=NONE, task_run_name="score-{spec.name}-shard-{shard}")
def score_shard(ctx: RunContext, spec: SelectorSpec, seed: int, rows_path: str, shard: int, shard_size: int,
                warmup: str | None = None) -> int:
    """One shard of one row-local selector, added to its per-row cache as one immutable part (so a
    killed run keeps it)."""
    rows = read_rows(rows_path, shard * shard_size, shard_size)
    sel = make_selector(spec.name, spec.params).fit(ctx.scoring(seed, warmup))
    scores = rows.select("id").join(sel.score(rows), on="id", how="left", maintain_order="left")
    row_cache(ctx, spec, sel).add(row_keys(rows), scores)
    return rows.height


def row_cache(ctx: RunContext, spec: SelectorSpec, sel: Selector) -> RowCache:
    """A row-local selector's scores per row, keyed by the row's id and content: a pool that grew,
    shrank or was reordered scores only rows this selector (same params, models, inputs) never saw."""
    return ctx.store.rows("row-scores", (sel.fingerprint(),), {"selector": spec.name, "params": spec.params})


def score_selector(ctx: RunContext, spec: SelectorSpec, rows: RowsRef, seed: int = 0) -> Path:
    """Score table of one selector over `rows`. Row-local selectors compute only rows missing from
    their per-row cache, in shards; pool-wide ones rerun their global step over the whole table,
    reading per-row features (embeddings, LM losses) from the context's per-row caches."""
    sel = make_selector(spec.name, spec.params)
    wcfg = sel.warmup_config()
    warmup = warmup_task(ctx, rows, wcfg) if wcfg is not None else None
    sel.fit(ctx.scoring(seed, warmup))

    def make(folder: Path) -> None:
        t0 = time.perf_counter()
        if sel.row_local:
            frame, cache = rows.read(), row_cache(ctx, spec, sel)
            keys = row_keys(frame)
            new = _score_missing(ctx, spec, cache, frame, keys, seed, warmup, folder)
            write_parquet(cache.get(keys), folder / "scores.parquet")
        else:
            frame, new = rows.read(), rows.n
            if sel.needs_prepare(frame):
                _fan_out(ctx, prepare_shard, spec, seed, rows.path, rows.n, warmup, "prepare")
            else:
                log.info("%s: every per-row feature is cached, no prepare pass", spec.name)
            log.info("%s: pool-wide selector, global step over all %d rows", spec.name, rows.n)
            scores = _map_reduce(ctx, spec, sel, seed, rows, warmup) if isinstance(sel, MapReduceSelector) else sel.score(frame)
            write_parquet(scores, folder / "scores.parquet")
        timing = {"seconds_this_run": time.perf_counter() - t0, "rows_computed": new, "rows_reused": rows.n - new}
        (folder / "timing.json").write_text(json.dumps(timing))

    meta = {"selector": spec.name, "params": spec.params, "rows": rows.fingerprint, "seed": seed}
    return ctx.store.cached("scores", (rows.fingerprint, sel.fingerprint()), make, meta) / "scores.parquet"


@task(cache_policy=NONE, task_run_name="prepare-{spec.name}-shard-{shard}")
def prepare_shard(ctx: RunContext, spec: SelectorSpec, seed: int, rows_path: str, shard: int, shard_size: int,
                  warmup: str | None = None) -> int:
    """A pool-wide selector's per-row features for one shard, into the context's per-row caches."""
    rows = read_rows(rows_path, shard * shard_size, shard_size)
    make_selector(spec.name, spec.params).fit(ctx.scoring(seed, warmup)).prepare(rows)
    return rows.height


@task(cache_policy=NONE, task_run_name="partial-{spec.name}-shard-{shard}")
def partial_shard(ctx: RunContext, spec: SelectorSpec, seed: int, rows_path: str, shard: int, shard_size: int,
                  warmup: str | None = None) -> dict[str, np.ndarray]:
    """A map-reduce selector's summable statistics of one shard."""
    rows = read_rows(rows_path, shard * shard_size, shard_size)
    return make_selector(spec.name, spec.params).fit(ctx.scoring(seed, warmup)).partial(rows)


@task(cache_policy=NONE, task_run_name="parts-{spec.name}-{group}")
def score_parts(ctx: RunContext, spec: SelectorSpec, seed: int, rows_path: str, group: int, parts: list[list[int]],
                state, warmup: str | None = None) -> pl.DataFrame:
    """A map-reduce selector's scores for a group of its plan's parts (row indices into `rows_path`)."""
    flat = [i for p in parts for i in p]
    start = min(flat, default=0)
    rows = read_rows(rows_path, start, max(flat, default=-1) + 1 - start)  # the span the group's parts index
    sel = make_selector(spec.name, spec.params).fit(ctx.scoring(seed, warmup))
    return pl.concat([sel.score_part(rows[[i - start for i in p]], state) for p in parts])


def _map_reduce(ctx: RunContext, spec: SelectorSpec, sel: MapReduceSelector, seed: int, rows: RowsRef,
                warmup: str | None) -> pl.DataFrame:
    """`sel`'s global step on the flow's runner: shard statistics summed in shard order, the plan
    in this process, its parts scored in groups of about `score.shard_size` rows. Equal to
    `sel.score` in one process by the MapReduceSelector contract (tested)."""
    size, totals = ctx.recipe.score.shard_size, {}
    if type(sel).partial is not MapReduceSelector.partial:
        for partial in _fan_out(ctx, partial_shard, spec, seed, rows.path, rows.n, warmup, "count"):
            totals = add_partials(totals, partial)
    frame = rows.read()
    state, parts = sel.plan(frame, totals)
    groups: list[list[list[int]]] = [[]]
    for p in parts:
        if groups[-1] and sum(map(len, groups[-1])) + len(p) > size:
            groups.append([])
        groups[-1].append(p.tolist())
    log.info("%s: %d parts in %d tasks", spec.name, len(parts), len(groups))
    futures = [score_parts.submit(ctx, spec, seed, rows.path, i, g, state, warmup) for i, g in enumerate(groups)]
    progress = ProgressLog(f"global step {spec.name}", rows.n, "rows", every=0)
    frames = []
    for i, fut in enumerate(futures):
        frames.append(fut.result())
        progress.update(progress.done + frames[-1].height, f"task {i + 1}/{len(groups)}")
    return validate_scores(spec.name, frame, sel.join_parts(frame, frames))


def _fan_out(ctx: RunContext, shard_task, spec: SelectorSpec, seed: int, rows_path: str, n_rows: int,
             warmup: str | None, what: str) -> list:
    """`shard_task` over `rows_path`, `score.shard_size` rows a task on the flow's runner, with a
    progress line per finished shard; returns the shards' results in shard order."""
    size = ctx.recipe.score.shard_size
    n_shards = math.ceil(n_rows / size)
    futures = [shard_task.submit(ctx, spec, seed, rows_path, i, size, warmup) for i in range(n_shards)]
    progress = ProgressLog(f"{what} {spec.name}", n_rows, "rows", every=0)
    results = []
    for i, fut in enumerate(futures):
        results.append(fut.result())
        progress.update(min(n_rows, (i + 1) * size), f"shard {i + 1}/{n_shards}")
    return results


def _score_missing(ctx: RunContext, spec: SelectorSpec, cache: RowCache, frame: pl.DataFrame, keys: list[str], seed: int,
                   warmup: str | None, folder: Path) -> int:
    """Scores the rows missing from the selector's per-row cache, in shards; returns how many."""
    todo = cache.missing(keys)
    log.info("%s: %d of %d rows new, %d reused from the per-row cache", spec.name, len(todo), len(keys), len(keys) - len(todo))
    if not todo:
        return 0
    pending = write_parquet(frame[todo], folder / "pending.parquet")
    _fan_out(ctx, score_shard, spec, seed, str(pending), len(todo), warmup, "score")
    pending.unlink()
    return len(todo)


def merge_scores(tables: dict[str, Path]) -> pl.DataFrame:
    merged: pl.DataFrame | None = None
    for name, path in tables.items():
        t = _prefixed(name, pl.read_parquet(path))
        merged = t if merged is None else merged.join(t, on="id", how="left", maintain_order="left")
    assert merged is not None
    return merged


def task_runner(cfg: ScoreConfig):
    """Prefect task runner for shard fan-out. One local worker by default: a model forward
    already uses every core, and concurrent shards would only multiply memory."""
    if cfg.runner == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=cfg.workers)
    try:
        if cfg.runner == "dask":
            from prefect_dask import DaskTaskRunner

            return DaskTaskRunner(address=cfg.address) if cfg.address else DaskTaskRunner(
                cluster_kwargs={"n_workers": cfg.workers, "threads_per_worker": 1})
        from prefect_ray import RayTaskRunner

        return RayTaskRunner(address=cfg.address) if cfg.address else RayTaskRunner(init_kwargs={"num_cpus": cfg.workers})
    except ImportError:
        raise TunesetError(f"score.runner '{cfg.runner}' needs: pip install 'tuneset[{cfg.runner}]'") from None


def score_flow(recipe: Recipe, rows: RowsRef | None = None, seed: int = 0, selectors: list[SelectorSpec] | None = None) -> ScoresRef:
    """Score the pool (or `rows`) with the recipe's (or given) selectors into one table."""
    runner = task_runner(recipe.score)
    return _score_flow.with_options(task_runner=runner)(recipe, rows, seed, selectors)


@recipe_flow("tuneset-score")
def _score_flow(recipe: Recipe, rows: RowsRef | None = None, seed: int = 0, selectors: list[SelectorSpec] | None = None) -> ScoresRef:
    ctx = run_context(recipe)
    if rows is None:
        rows = load_pool(ctx).rows
    specs = selectors if selectors is not None else recipe.score.selectors
    tables = {s.name: score_selector(ctx, s, rows, seed) for s in specs}
    directions = ctx.directions(specs)
    paths = {k: str(v) for k, v in tables.items()}
    keys = {k: Path(v).parent.name for k, v in tables.items()}  # each table's content key, not where the store sits
    folder = ctx.store.cached("score-table", (keys,), lambda d: write_parquet(merge_scores(tables), d / "scores.parquet"),
                                     {"tables": paths, "directions": directions})
    return ScoresRef(str(folder / "scores.parquet"), directions)
