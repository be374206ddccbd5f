"""Score flow: every selector scores every row, shard by shard, cached and resumable."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from prefect import task
from prefect.cache_policies import NONE

from tuneset.errors import TunesetError
from tuneset.flows.common import RowsRef, load_pool, recipe_flow, scoring_context, store_of
from tuneset.flows.warmup import warmup_task
from tuneset.progress import ProgressLog
from tuneset.recipe import Recipe, ScoreConfig, SelectorSpec
from tuneset.selectors import make_selector
from tuneset.store import write_parquet

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
def score_shard(recipe: Recipe, spec: SelectorSpec, seed: int, rows_path: str, shard: int, shard_size: int, out: str,
                warmup: str | None = None) -> str:
    """One shard of one selector; written atomically so a killed run keeps it."""
    rows = pl.read_parquet(rows_path).slice(shard * shard_size, shard_size)
    sel = make_selector(spec.name, spec.params).fit(scoring_context(recipe, seed, warmup))
    write_parquet(sel.score(rows), Path(out))
    return out


def score_selector(recipe: Recipe, spec: SelectorSpec, rows: RowsRef, seed: int = 0) -> Path:
    """Score table of one selector; finished shards on disk are reused, missing ones computed."""
    store = store_of(recipe)
    sel = make_selector(spec.name, spec.params)
    wcfg = sel.warmup_config()
    warmup = warmup_task(recipe, rows, wcfg) if wcfg is not None else None
    sel.fit(scoring_context(recipe, seed, warmup))
    shard_size = recipe.score.shard_size if sel.row_local else max(rows.n, 1)
    n_shards = max(1, math.ceil(rows.n / shard_size))

    def make(folder: Path) -> None:
        shards = [folder / "shards" / f"{i:05d}.parquet" for i in range(n_shards)]
        todo = [i for i, p in enumerate(shards) if not p.exists()]
        if len(todo) < n_shards:
            log.info("%s: reusing %d/%d finished shards, computing %d", spec.name, n_shards - len(todo), n_shards, len(todo))
        t0 = time.perf_counter()
        futures = [score_shard.submit(recipe, spec, seed, rows.path, i, shard_size, str(shards[i]), warmup) for i in todo]
        size = {i: min(shard_size, rows.n - i * shard_size) for i in todo}
        progress = ProgressLog(f"score {spec.name}", sum(size.values()), "rows", every=0)
        for i, fut in zip(todo, futures):
            fut.result()
            progress.update(progress.done + size[i], f"shard {i + 1}/{n_shards}")
        write_parquet(pl.concat([pl.read_parquet(p) for p in shards]), folder / "scores.parquet")
        (folder / "timing.json").write_text(json.dumps({"seconds_this_run": time.perf_counter() - t0, "shards_computed": len(todo)}))

    meta = {"selector": spec.name, "params": spec.params, "rows": rows.fingerprint, "seed": seed}
    return store.cached("scores", (rows.fingerprint, sel.fingerprint(), shard_size), make, meta) / "scores.parquet"


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
    if rows is None:
        rows, _, _ = load_pool(recipe)
    specs = selectors if selectors is not None else recipe.score.selectors
    tables = {s.name: score_selector(recipe, s, rows, seed) for s in specs}
    directions = {s.name: make_selector(s.name, s.params).higher_is_better for s in specs}
    paths = {k: str(v) for k, v in tables.items()}
    folder = store_of(recipe).cached("score-table", (paths,), lambda d: write_parquet(merge_scores(tables), d / "scores.parquet"),
                                     {"tables": paths, "directions": directions})
    return ScoresRef(str(folder / "scores.parquet"), directions)
