"""The curation report and score plot: pure functions of the audit frame, so they can be
rendered again from a saved `audit.parquet` without rerunning curation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from tuneset.curation.audit import summary_by_source
from tuneset.recipe import FilterRule


def reason_table(audit: pl.DataFrame) -> pl.DataFrame:
    """Counts of the not-kept rows per reason, with the reason's specifics stripped."""
    return audit.filter(pl.col("action") != "kept").group_by(
        pl.col("reason").str.replace(r" [a-zA-Z0-9_/-]+$", "").str.replace(r":.*$", "")).len().sort("len", descending=True)


def render_report(name: str, n_read: int, counts: dict[str, int], audit: pl.DataFrame, plot: str | None = None) -> str:
    """report.md: the accounting, counts per source and per reason, and the score plot if any."""
    return (
        f"# Curation report: {name}\n\n"
        f"Input rows: {n_read} = " + " + ".join(f"{v} {k}" for k, v in counts.items()) + "\n\n"
        "## By source\n\n" + _md(summary_by_source(audit)) + "\n\n## Reasons (not kept)\n\n" + _md(reason_table(audit)) + "\n"
        + (f"\n## Scores by action\n\n![scores]({plot})\n" if plot else "")
    )


def plot_scores(audit: pl.DataFrame, columns: list[str], path: Path, filters: Sequence[FilterRule] = ()) -> bool:
    """One histogram per score column (and per filtered column), rows coloured by their curation
    action, with the filters' thresholds drawn on their columns."""
    columns = list(dict.fromkeys([*columns, *(f.column for f in filters if f.column in audit.columns)]))
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
