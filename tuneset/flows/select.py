"""Select flow: apply a policy to score columns; the selection records every row's fate."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from tuneset.data.fingerprint import fingerprint
from tuneset.data.io import write_parquet, write_rows
from tuneset.data.schema import MISSING, group_fields, group_values
from tuneset.errors import TunesetError, UnknownNameError
from tuneset.flows.common import Pool, RowsRef, load_pool, recipe_flow, save_rows
from tuneset.flows.context import RunContext, run_context
from tuneset.flows.curate import curate_flow
from tuneset.flows.score import ScoresRef, score_flow
from tuneset.recipe import PolicyConfig, Recipe
from tuneset.selection import apply_policy
from tuneset.selectors.base import row_text

log = logging.getLogger("tuneset.select")
# Bumped when the same policy on the same scores picks other rows: 2, a component column reads in
# its selector's direction; 3, explicit quotas hold the budget, percents round exactly,
# max_similarity has a float32 slack, and weights add in key order; 4, exact ranks at a threshold's
# or band's edge, bands (lo, hi], remainders by exact fractions, reasons quoting a target's own rank.
POLICY_REVISION = 4


@dataclass(frozen=True)
class Selection:
    rows: RowsRef  # the selected rows
    table: str  # id, combined, rank, selected, reason and the score columns, for every candidate


def select_rows(ctx: RunContext, rows: RowsRef, scores: ScoresRef, policy: PolicyConfig) -> Selection:
    frame = rows.read()
    if frame.is_empty():
        raise TunesetError("no candidate rows to select from: curation kept none of the pool "
                           "(its audit gives every row's reason: `tuneset curate` prints where)")
    groups = group_values(frame, policy.quota_by) if policy.quota_by else None
    if policy.quota_by and groups is None:
        raise _unknown_field(frame, policy, "select")
    if groups is not None and (missing := int((groups == MISSING).sum())):
        log.warning("quota_by %s: %d of %d rows have no such field; they form the group %s", policy.quota_by,
                    missing, frame.height, MISSING)

    def make(folder: Path) -> None:
        table = frame.select("id").join(scores.read(), on="id", how="left", maintain_order="left")
        emb = ctx.scoring().embeddings(row_text(frame)) if policy.max_similarity is not None else None
        # Decisions beside every score column, so a selected row carries its explanation (e.g. the
        # dev rows behind a `less` score in `less.top_dev`).
        dev_sizes = ({name: dev.height for name, dev in ctx.targets().items()}
                     if policy.targets == "dev_size" else None)
        decided = apply_policy(table, policy, scores.directions, groups, emb, dev_sizes)
        write_parquet(decided.join(table, on="id", how="left", maintain_order="left"), folder / "selection.parquet")

    meta = {"policy": policy.model_dump(mode="json"), "rows": rows.fingerprint}
    # Keyed by content: the score table's own key (not its path, which moves with the work dir),
    # the groups (a metadata field is outside the rows' fingerprint), the embedder the gate reads.
    parts = (POLICY_REVISION, rows.fingerprint, Path(scores.path).parent.name, policy,
             None if groups is None else fingerprint(groups.to_list()),
             None if policy.max_similarity is None else ctx.scoring().embedder_identity)
    table_path = ctx.store.cached("selection", parts, make, meta) / "selection.parquet"
    chosen = pl.read_parquet(table_path).filter("selected")["id"]
    return Selection(save_rows(ctx.store, frame.filter(pl.col("id").is_in(chosen.implode()))), str(table_path))


def check_quota_fields(pool: Pool, policies: dict[str, PolicyConfig]) -> None:
    """A `quota_by` field that no pool row has fails when the pool is read, not after curation and
    scoring have spent minutes; the dict's keys name the recipe fields."""
    grouped = {where: policy for where, policy in policies.items() if policy.quota_by}
    frame = pool.rows.read() if grouped else None
    for where, policy in grouped.items():
        if group_values(frame, policy.quota_by) is None:
            raise _unknown_field(frame, policy, where)


def _unknown_field(frame: pl.DataFrame, policy: PolicyConfig, where: str) -> TunesetError:
    return TunesetError(f"{where}.quota_by: {UnknownNameError('field', policy.quota_by, group_fields(frame))}")


@recipe_flow("tuneset-select")
def select_flow(recipe: Recipe, out: str | None = None) -> Selection:
    """Curate, score and select as one run (curation and scoring are its subflows); with `out`,
    write the chosen rows there (format by extension) and every candidate's score columns, rank,
    decision and reason beside it (`decisions_path`).

    Scores belong to the pool, curation decides which rows are candidates: the same scores a
    compare measured (and `tuneset score` cached), whatever the curation settings."""
    ctx = run_context(recipe)
    pool = load_pool(ctx)
    check_quota_fields(pool, {"select": recipe.select})
    curated = curate_flow(recipe, pool)
    rows = curated.rows
    sel = select_rows(ctx, rows, score_flow(recipe, curated.pool.rows, seed=recipe.finetune.seed), recipe.select)
    if out:
        write_rows(out, sel.rows.read())
        write_parquet(pl.read_parquet(sel.table), decisions_path(Path(out)))
    print(f"selected {sel.rows.n} of {rows.n} rows")
    return sel


def decisions_path(out: Path) -> Path:
    """`selected.parquet` -> `selected.decisions.parquet`."""
    return out.with_name(out.name.rsplit(".", 1)[0] + ".decisions.parquet")
