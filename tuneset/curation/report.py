"""The curation report and score plot: pure functions of the audit frame, so they can be
rendered again from a saved `audit.parquet` without rerunning curation."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from tuneset.curation.audit import summary_by_source
from tuneset.data.io import save_figure
from tuneset.recipe import FilterRule

# The parts of a reason that differ from row to row: quoted text, the row id after "of"/"row", and
# numbers (not the digits inside an id such as `pool-17`). Grouping on the rest turns 1,000 rows
# of `perplexity=5234 above max 5000` into one line per rule.
_SLOT = re.compile(r"'[^']*'|(?<=\bof )\S+|(?<=\brow )\S+|(?<![\w.-])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?!\w)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_LABEL = re.compile(r"([A-Za-z_][\w.]*)\W*$")  # the word naming a number: `cosine` in `(cosine 0.95`
EXAMPLE_CHARS = 240  # whole reasons: a decontamination example must keep the n-gram it names
_THRESHOLD_STYLE = {"min": ("--", "tab:green"), "max": ("-.", "tab:red")}  # told apart by more than their label


def _shape(reason: str) -> tuple[list[str], list[str]]:
    """A reason split into its fixed text pieces and the varying slots between them."""
    pieces, slots, start = [], [], 0
    for m in _SLOT.finditer(reason):
        pieces.append(reason[start:m.start()])
        slots.append(m.group())
        start = m.end()
    pieces.append(reason[start:])
    return pieces, slots


def _kind(pieces: list[str], columns: list[list[str]]) -> tuple[str, list[str]]:
    """The reason's kind: slots that agree across the group stay as they are (a filter's threshold),
    the others become `#` (numbers) or `…` (ids, quoted text); and the range of each numeric one."""
    text, ranges = pieces[0], []
    for piece, values in zip(pieces[1:], columns):
        if len(set(values)) == 1:
            text += values[0]
        elif all(_NUMBER.fullmatch(v) for v in values):
            text += "#"
            nums = [float(v) for v in values]
            label = _LABEL.search(text[:-1])
            ranges.append(f"{label.group(1) + ' ' if label else ''}{min(nums):.4g} to {max(nums):.4g}")
        else:
            text += "…"
        text += piece
    return text, ranges


def reason_table(audit: pl.DataFrame) -> pl.DataFrame:
    """One line per action and kind of reason for the rows not kept: how many rows, the range of
    the values that differ between them, and one full reason as an example."""
    groups: dict[tuple[str, tuple[str, ...], int], list[tuple[list[str], str]]] = {}
    for action, reason in audit.filter(pl.col("action") != "kept").select("action", "reason").iter_rows():
        pieces, slots = _shape(reason or "")
        groups.setdefault((action, tuple(pieces), len(slots)), []).append((slots, reason or ""))
    out = []
    for (action, pieces, n_slots), members in groups.items():
        columns = [[slots[k] for slots, _ in members] for k in range(n_slots)]
        kind, ranges = _kind(list(pieces), columns)
        out.append({"action": action, "reason": kind, "rows": len(members), "values": "; ".join(ranges),
                    "example": _clip(members[0][1])})
    schema = {"action": pl.String, "reason": pl.String, "rows": pl.Int64, "values": pl.String, "example": pl.String}
    return pl.DataFrame(out, schema=schema).sort(["rows", "action", "reason"], descending=[True, False, False])


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS - 1] + "…"


def render_report(name: str, n_read: int, counts: dict[str, int], audit: pl.DataFrame, plot: str | None = None,
                  n_resent: int = 0) -> str:
    """report.md: the accounting, counts per source and per kind of reason, and the score plot if any.
    Re-sent copies (an earlier file's row again, same id and content) are read once, so they are
    counted here rather than in the audit, where their id would appear twice."""
    resent = (f"; besides them, {n_resent} rows repeated an earlier file's row exactly (same id and content) "
              "and were read once") if n_resent else ""
    return (
        f"# Curation report: {name}\n\n"
        f"Input rows: {n_read} = " + " + ".join(f"{v} {k}" for k, v in counts.items()) + resent + "\n\n"
        "## By source\n\n" + _md(summary_by_source(audit)) + "\n\n## Reasons (not kept)\n\n"
        "One line per kind of reason: `#` is a number and `…` a row id or quoted text that differ between "
        "its rows (their range under values); every row's own reason is in audit.parquet.\n\n"
        + _md(reason_table(audit)) + "\n"
        + (f"\n## Scores by action\n\n![scores]({plot})\n" if plot else "")
    )


@dataclass
class Panel:
    """What one histogram of scores.png shows."""

    column: str
    by_action: dict[str, np.ndarray]
    log: bool
    thresholds: list[tuple[str, float]] = field(default_factory=list)  # ("max", 5000.0)


def log_scale(values: np.ndarray, span: float = 100.0) -> bool:
    """Log axis when every value is positive and they span more than `span`x (perplexities:
    a linear axis puts 95% of the rows in its first bin)."""
    return bool(len(values)) and bool((values > 0).all()) and float(values.max() / values.min()) > span


def score_panels(audit: pl.DataFrame, columns: Sequence[str], filters: Sequence[FilterRule] = ()) -> list[Panel]:
    """One panel per score column and per filtered column, with the filters' thresholds on theirs."""
    cols = [c for c in dict.fromkeys([*columns, *(f.column for f in filters)]) if c in audit.columns]
    panels = []
    for col in cols:
        by_action = {a: audit.filter(pl.col("action") == a)[col].drop_nulls().cast(pl.Float64).to_numpy()
                     for a in ("kept", "corrected", "dropped")}
        by_action = {a: v[np.isfinite(v)] for a, v in by_action.items() if len(v)}
        every = np.concatenate(list(by_action.values())) if by_action else np.array([])
        lines = [(side, float(v)) for f in filters if f.column == col for side, v in (("min", f.min), ("max", f.max))
                 if v is not None]
        panels.append(Panel(col, by_action, log_scale(every), lines))
    return panels


def score_figure(panels: Sequence[Panel]):
    """One histogram per panel, rows coloured by their curation action on shared bins, a log axis
    where `log`, each threshold a line in its side's own style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for ax, p in zip(axes[0], panels):
        every = np.concatenate(list(p.by_action.values()))
        lo, hi = float(every.min()), float(every.max())
        bins = np.geomspace(lo, hi, 41) if p.log else np.linspace(lo, hi if hi > lo else lo + 1, 41)
        for action, v in p.by_action.items():
            ax.hist(v, bins=bins, alpha=0.6, label=f"{action} ({len(v)})")
        for side, v in p.thresholds:
            style, color = _THRESHOLD_STYLE[side]
            ax.axvline(v, color=color, linestyle=style, linewidth=1.2, label=f"filter {side} {v:g}")
        if p.log:
            ax.set_xscale("log")
        ax.set_title(p.column + (" (log axis)" if p.log else ""), fontsize=10)
        ax.set_ylabel("rows")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_scores(audit: pl.DataFrame, columns: list[str], path: Path, filters: Sequence[FilterRule] = ()) -> bool:
    """scores.png: one histogram per score column (and per filtered column), False when no column
    has values."""
    panels = [p for p in score_panels(audit, columns, filters) if p.by_action]
    if not panels:
        return False
    import matplotlib.pyplot as plt

    fig = score_figure(panels)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return True


def _md(frame: pl.DataFrame) -> str:
    if frame.is_empty():
        return "(none)"
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * frame.width + "\n"
    return head + "\n".join("| " + " | ".join(_cell(v) for v in r) + " |" for r in frame.iter_rows())


def _cell(value) -> str:
    """A table cell: a `|` in a reason's quoted text would split the row."""
    return "" if value is None else str(value).replace("|", "\\|")
