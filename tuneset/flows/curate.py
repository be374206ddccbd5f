"""Curate flow: dedup, decontaminate and filter the pool; every input row accounted for."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from prefect import flow

from tuneset.curation import check_accounting, curate_rows
from tuneset.curation.audit import summary_by_source
from tuneset.data.io import write_rows
from tuneset.flows.common import RowsRef, load_pool, load_split, run_dir, save_rows, store_of
from tuneset.flows.score import score_flow
from tuneset.recipe import Recipe, SelectorSpec


@dataclass(frozen=True)
class CurateResult:
    rows: RowsRef
    audit: str
    report: str
    counts: dict[str, int]


def eval_rows(recipe: Recipe) -> dict[str, pl.DataFrame]:
    """Dev and test rows of every task: a candidate matching either would leak the evaluation."""
    return {f"{t.name}/{split}": load_split(t, split) for t in recipe.task_specs() for split in ("dev", "test")}


@flow(name="tuneset-curate", log_prints=True)
def curate_flow(recipe: Recipe) -> CurateResult:
    rows, n_read, quarantined = load_pool(recipe)
    scores = None
    if recipe.curate.filters:
        names = sorted({f.column.split(".")[0] for f in recipe.curate.filters})
        specs = [s for s in recipe.score.selectors if s.name in names] + [
            SelectorSpec(name=n) for n in names if n not in {s.name for s in recipe.score.selectors}]
        scores = score_flow(recipe, rows, selectors=specs).read()
    kept, audit = curate_rows(rows.read(), recipe.curate, eval_rows(recipe), scores, quarantined)
    counts = check_accounting(audit, n_read)
    out = run_dir(recipe, "curate")
    write_rows(out / "curated.jsonl", kept)
    audit.write_parquet(out / "audit.parquet")
    audit.write_csv(out / "audit.csv")
    by_source = summary_by_source(audit)
    reasons = audit.filter(pl.col("action") != "kept").group_by(
        pl.col("reason").str.replace(r" [a-zA-Z0-9_/-]+$", "")).len().sort("len", descending=True)
    report = out / "report.md"
    report.write_text(
        f"# Curation report: {recipe.name}\n\n"
        f"Input rows: {n_read} = " + " + ".join(f"{v} {k}" for k, v in counts.items()) + "\n\n"
        "## By source\n\n" + _md(by_source) + "\n\n## Reasons (not kept)\n\n" + _md(reasons) + "\n"
    )
    print(f"curated {n_read} rows: {counts}; audit {out / 'audit.parquet'}")
    return CurateResult(save_rows(store_of(recipe), kept), str(out / "audit.parquet"), str(report), counts)


def _md(frame: pl.DataFrame) -> str:
    if frame.is_empty():
        return "(none)"
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * frame.width + "\n"
    return head + "\n".join("| " + " | ".join(str(v) for v in r) + " |" for r in frame.iter_rows())
