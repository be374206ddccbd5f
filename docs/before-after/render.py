"""Render the curation report, its score plot and the leaderboard plot with one version of tuneset,
from fixed inputs, without running any model.

Run it once per version, with that version's checkout first on the path:

    git worktree add /tmp/before a97e081
    git worktree add /tmp/after 66c2c51
    PYTHONPATH=/tmp/before python docs/before-after/render.py before
    PYTHONPATH=/tmp/after  python docs/before-after/render.py after
    git worktree remove /tmp/before; git worktree remove /tmp/after

Inputs (the same for both versions):
- inputs/audit.parquet: the audit of `tuneset curate inputs/recipe.yaml` at 66c2c51 (the demo pool,
  dedup + decontaminate + two `length` filters: rule selectors only, no model);
- benchmarks/results/bench_pool_small/leaderboard.csv: a committed leaderboard (3 tasks, 8 strategies
  at budget 300, 3 seeds, plus the no-fine-tune and full-pool baselines).

Outputs: curation-report/<version>.md (+ .png: its first lines drawn as text),
curation-scores/<version>.png and leaderboard/<version>.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
AUDIT = HERE / "inputs" / "audit.parquet"
RECIPE = HERE / "inputs" / "recipe.yaml"
BOARD = REPO / "benchmarks" / "results" / "bench_pool_small" / "leaderboard.csv"


def read_board() -> pl.DataFrame:
    """The committed leaderboard as build_leaderboard returns it (budget and per-seed scores as text)."""
    return pl.read_csv(BOARD, schema_overrides={"budget": pl.String, "per_seed": pl.String})


def scored(audit: pl.DataFrame) -> list[str]:
    """The flow's `scores.columns`: curate_rows joins the score table after the audit's own columns."""
    return audit.columns[audit.columns.index("metadata") + 1:]


def render_before(name: str, curate: dict, audit: pl.DataFrame, n_read: int) -> tuple[str, bool]:
    """a97e081: the report was written inline in flows/curate.py:curate_flow (lines 71-82); these are
    its lines, with the flow's run folder replaced by this script's output."""
    from tuneset.curation import check_accounting
    from tuneset.curation.audit import summary_by_source
    from tuneset.flows.curate import _md, plot_scores
    from tuneset.recipe import CurateConfig

    cfg = CurateConfig(**curate)
    counts = check_accounting(audit, n_read)
    by_source = summary_by_source(audit)
    reasons = audit.filter(pl.col("action") != "kept").group_by(
        pl.col("reason").str.replace(r" [a-zA-Z0-9_/-]+$", "").str.replace(r":.*$", "")).len().sort("len", descending=True)
    score_columns = scored(audit)
    has_plot = plot_scores(audit, [c for c in score_columns if c in cfg.selectors()], HERE / "curation-scores" / "before.png")
    text = (
        f"# Curation report: {name}\n\n"
        f"Input rows: {n_read} = " + " + ".join(f"{v} {k}" for k, v in counts.items()) + "\n\n"
        "## By source\n\n" + _md(by_source) + "\n\n## Reasons (not kept)\n\n" + _md(reasons) + "\n"
        + ("\n## Scores by action\n\n![scores](scores.png)\n" if has_plot else "")
    )
    return text, has_plot


def render_after(name: str, curate: dict, audit: pl.DataFrame, n_read: int) -> tuple[str, bool]:
    """HEAD: tuneset.curation.report, called as flows/curate.py:curate_flow calls it (no judge gate
    here: the recipe has no judging column, so the flow adds no gate section)."""
    from tuneset.curation import check_accounting
    from tuneset.curation.report import plot_scores, render_report
    from tuneset.curation.steps import step_selectors
    from tuneset.recipe import CurateConfig

    cfg = CurateConfig(**curate)
    counts = check_accounting(audit, n_read)
    score_columns = scored(audit)
    has_plot = plot_scores(audit, [c for c in score_columns if c in step_selectors(cfg)], HERE / "curation-scores" / "after.png",
                           cfg.filters)
    return render_report(name, n_read, counts, audit, "scores.png" if has_plot else None), has_plot


def text_png(text: str, path: Path, lines: int = 40) -> None:
    """The first `lines` lines of a Markdown file drawn as monospace text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = text.splitlines()[:lines]
    width = max(len(s) for s in shown)
    fig = plt.figure(figsize=(max(6.0, width * 0.062 + 0.4), len(shown) * 0.16 + 0.4))
    fig.text(0.01, 0.99, "\n".join(shown), family="monospace", fontsize=7.5, va="top", ha="left", linespacing=1.25)
    fig.savefig(path, dpi=130, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)


def main(version: str) -> None:
    import tuneset

    print(f"{version}: tuneset from {Path(tuneset.__file__).parent}")
    for sub in ("curation-report", "curation-scores", "leaderboard"):
        (HERE / sub).mkdir(exist_ok=True)
    recipe = yaml.safe_load(RECIPE.read_text())
    audit = pl.read_parquet(AUDIT)
    n_read = audit.height  # nothing quarantined: every audit row is an input row
    render = render_before if version == "before" else render_after
    text, _ = render(recipe["name"], recipe["curate"], audit, n_read)
    (HERE / "curation-report" / f"{version}.md").write_text(text)
    text_png(text, HERE / "curation-report" / f"{version}.png")

    from tuneset.evaluate.leaderboard import plot

    plot(read_board(), HERE / "leaderboard" / f"{version}.png")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("before", "after"):
        sys.exit("usage: render.py before|after (with that version's checkout first on PYTHONPATH)")
    main(sys.argv[1])
