"""Curate flow: decontaminate, dedup, correct and filter the pool; every input row accounted for,
with an audit, a report and a score histogram."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from tuneset.curation import check_accounting, curate_rows
from tuneset.curation.audit import summary_by_source
from tuneset.curation.correct import propose_rewrites
from tuneset.data.io import write_rows
from tuneset.flows.common import RowsRef, load_pool, load_split, recipe_flow, run_dir, save_rows, scoring_context, store_of, write_json
from tuneset.flows.score import score_flow
from tuneset.recipe import Recipe
from tuneset.selectors import make_selector
from tuneset.store import write_parquet


@dataclass(frozen=True)
class CurateResult:
    rows: RowsRef
    audit: str
    report: str
    counts: dict[str, int]


def eval_rows(recipe: Recipe) -> dict[str, pl.DataFrame]:
    """Dev and test rows of every task: a candidate matching either would leak the evaluation."""
    return {f"{t.name}/{split}": load_split(t, split) for t in recipe.task_specs() for split in ("dev", "test")
            if getattr(t, split) is not None}


def curation_scores(recipe: Recipe, rows: RowsRef) -> pl.DataFrame | None:
    """Scores the curate settings read, with the recipe's params for those selectors."""
    names = recipe.curate.selectors()
    if not names:
        return None
    return score_flow(recipe, rows, selectors=[recipe.score.spec(n) for n in names]).read()


def rewrites(recipe: Recipe, rows: RowsRef, scores: pl.DataFrame) -> dict[str, tuple[str, str]]:
    """Model rewrites of low-confidence rows, cached by rows, confidence scores and settings."""
    cfg = recipe.curate.rewrite
    store = store_of(recipe)
    spec = recipe.score.spec("confidence")
    ctx = scoring_context(recipe)
    parts = (rows.fingerprint, ctx.model_identity, spec, cfg, scores["confidence"].round(6).to_list())

    def make(folder: Path) -> None:
        write_json(folder / "rewrites.json", propose_rewrites(ctx, rows.read(), make_selector(spec.name, spec.params), scores, cfg))

    path = store.cached("rewrites", parts, make, {"rows": rows.fingerprint, "rewrite": cfg.model_dump()}) / "rewrites.json"
    return {k: tuple(v) for k, v in json.loads(path.read_text()).items()}


@recipe_flow("tuneset-curate")
def curate_flow(recipe: Recipe) -> CurateResult:
    rows, n_read, quarantined = load_pool(recipe)
    scores = curation_scores(recipe, rows)
    fixes = rewrites(recipe, rows, scores) if recipe.curate.rewrite is not None else None
    kept, audit = curate_rows(rows.read(), recipe.curate, eval_rows(recipe), scores, quarantined, fixes)
    counts = check_accounting(audit, n_read)
    out = run_dir(recipe, "curate")
    write_rows(out / "curated.jsonl", kept)
    write_parquet(audit, out / "audit.parquet")
    audit.select(pl.exclude("choices")).write_csv(out / "audit.csv")
    by_source = summary_by_source(audit)
    reasons = audit.filter(pl.col("action") != "kept").group_by(
        pl.col("reason").str.replace(r" [a-zA-Z0-9_/-]+$", "").str.replace(r":.*$", "")).len().sort("len", descending=True)
    plot = out / "scores.png"
    has_plot = plot_scores(audit, [c for c in (scores.columns if scores is not None else []) if c in recipe.curate.selectors()], plot)
    report = out / "report.md"
    report.write_text(
        f"# Curation report: {recipe.name}\n\n"
        f"Input rows: {n_read} = " + " + ".join(f"{v} {k}" for k, v in counts.items()) + "\n\n"
        "## By source\n\n" + _md(by_source) + "\n\n## Reasons (not kept)\n\n" + _md(reasons) + "\n"
        + ("\n## Scores by action\n\n![scores](scores.png)\n" if has_plot else "")
    )
    print(f"curated {n_read} rows: {counts}; audit {out / 'audit.parquet'}")
    return CurateResult(save_rows(store_of(recipe), kept), str(out / "audit.parquet"), str(report), counts)


def plot_scores(audit: pl.DataFrame, columns: list[str], path: Path) -> bool:
    """One histogram per score column, rows coloured by their curation action."""
    if not columns:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(columns), figsize=(4.5 * len(columns), 3.2), squeeze=False)
    for ax, col in zip(axes[0], columns):
        for action in ("kept", "corrected", "dropped"):
            v = audit.filter(pl.col("action") == action)[col].drop_nulls().to_numpy()
            if len(v):
                ax.hist(v, bins=40, alpha=0.6, label=f"{action} ({len(v)})")
        ax.set_title(col)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _md(frame: pl.DataFrame) -> str:
    if frame.is_empty():
        return "(none)"
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * frame.width + "\n"
    return head + "\n".join("| " + " | ".join(str(v) for v in r) + " |" for r in frame.iter_rows())
