"""Shared pieces of the flows: row references, the pool, flow naming and small writers."""

from __future__ import annotations

import functools
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass

import polars as pl
from filelock import FileLock

from tuneset.data.fingerprint import dataset_fingerprint
from tuneset.data.io import collect, load_rows, write_json, write_jsonl, write_parquet
from tuneset.flows.context import RunContext, run_context
from tuneset.store import ArtifactStore, held

log = logging.getLogger("tuneset.flows")


@dataclass(frozen=True)
class RowsRef:
    """A validated row table on disk, named by its content fingerprint."""

    path: str
    fingerprint: str
    n: int

    def read(self, columns: list[str] | None = None) -> pl.DataFrame:
        return pl.read_parquet(self.path, columns=columns)


def read_rows(path: str, offset: int = 0, length: int | None = None) -> pl.DataFrame:
    """Rows `offset`..`offset + length` of a rows table. The slice is pushed into the parquet scan,
    so a shard task decodes its own rows, not the pool: 1,024 rows of a 1M-row table 19x faster
    than reading it whole (benchmarks/shard_reads.py)."""
    return collect(pl.scan_parquet(path).slice(offset, length))


def save_rows(store: ArtifactStore, rows: pl.DataFrame) -> RowsRef:
    fp = dataset_fingerprint(rows)
    # Stored under content + metadata: the same rows with other extra fields are another table
    # (else a store that saw them without metadata would hand them back without it), while `fp`,
    # which every score cache keys on, ignores metadata that no stage reads.
    meta = rows["metadata"].to_list() if "metadata" in rows.columns else []
    folder = store.cached("rows", (fp, meta), lambda d: write_parquet(rows, d / "rows.parquet"), {"n": rows.height})
    return RowsRef(str(folder / "rows.parquet"), fp, rows.height)


@dataclass(frozen=True)
class Pool:
    """The recipe's pool read and validated once: its rows, how many input rows were read and the
    quarantined ones, which curation's audit accounts for."""

    rows: RowsRef
    n_read: int
    quarantined: list[dict]
    n_resent: int = 0  # copies of an earlier file's rows, read once: the report counts them


def load_pool(ctx: RunContext) -> Pool:
    """Reads and validates the recipe's pool file; bad rows go to the run's quarantine file."""
    recipe = ctx.recipe
    quarantine = ctx.run_dir() / "quarantine.jsonl" if recipe.quarantine else None
    res = load_rows(recipe.pool, quarantine=quarantine, columns=recipe.columns)
    if res.quarantined:
        log.warning("%d bad input rows quarantined in %s", len(res.quarantined), quarantine)
    return Pool(save_rows(ctx.store, res.rows), res.n_read, res.quarantined, res.n_resent)


def recipe_flow(name: str):
    """A Prefect flow over already-validated objects (a Recipe, row and score refs). Prefect's own
    parameter model would rebuild them from their annotations, which fails (`... is not fully
    defined`) where a served run loads the flow from its entrypoint; the recipe was checked at load.

    Each run is named after its recipe and stage (`bench-compare`, `bench-curate`), so the UI's run
    list says what ran instead of Prefect's random names; every such flow takes `recipe` first."""
    from prefect import flow

    stage = name.removeprefix("tuneset-")

    def decorate(fn):
        @functools.wraps(fn)
        def locked(recipe, *args, **kwargs):
            with run_lock(run_context(recipe)):
                return fn(recipe, *args, **kwargs)

        return flow(name=name, flow_run_name="{recipe.name}-" + stage, log_prints=True, validate_parameters=False)(locked)

    return decorate


@contextmanager
def run_lock(ctx: RunContext):
    """One run of a recipe at a time, whatever the command: every stage writes the recipe's run
    folder (curate's audit, which the pipeline's history reads back; compare's leaderboard), so an
    overlapping run (a slow scheduled tick, a `select` beside it) waits here, and says so.
    Reentrant in a thread, where a flow's subflows take it again."""
    with held(FileLock(str(ctx.run_dir() / ".lock"), is_singleton=True),
              f"another run of recipe '{ctx.recipe.name}' to finish"):
        yield


@contextmanager
def timed(timings: dict[str, float], name: str):
    t = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - t


__all__ = ["Pool", "RowsRef", "RunContext", "load_pool", "recipe_flow", "run_context", "run_lock", "save_rows", "timed", "write_json",
           "write_jsonl"]
