"""Leaderboard: mean and seed spread per strategy, plus paired differences on the same test rows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tuneset.data.io import save_figure
from tuneset.evaluate.metrics import get_metric
from tuneset.evaluate.stats import seed_aware_diff

NONE, FULL, RANDOM = "none", "full", "random"


def _seed_order(run: dict[str, Any]) -> tuple[int, str]:
    """Seeds in numeric order (2 before 10); the seedless no-fine-tune arm's "-" has one run."""
    seed = str(run["seed"])
    return (int(seed), "") if seed.isdigit() else (0, seed)


def _frames(runs: list[dict[str, Any]], column: str = "examples") -> list[pl.DataFrame]:
    """Each run's per-example results in seed order, rows sorted by id."""
    return [pl.read_parquet(r[column]).sort("id") for r in sorted(runs, key=_seed_order)]


def _matrix(frames: list[pl.DataFrame], arm: tuple) -> np.ndarray:
    """(seeds, examples) scores, rows aligned by id; every seed must have scored the same rows."""
    for f in frames[1:]:
        if not f["id"].equals(frames[0]["id"]):
            raise ValueError(f"{' / '.join(map(str, arm))}: its seeds were evaluated on different test rows")
    return np.stack([f["score"].to_numpy() for f in frames])


def _same_rows(a: list[pl.DataFrame], b: list[pl.DataFrame], arm: tuple, ref: tuple) -> None:
    """Differences pair rows by position after the id sort: they must be the same rows."""
    if not a[0]["id"].equals(b[0]["id"]):
        raise ValueError(f"{' / '.join(map(str, arm))} and {' / '.join(map(str, ref))} were evaluated on different "
                         "test rows; differences pair the same rows")


def top_answer(frame: pl.DataFrame) -> tuple[str, float] | None:
    """One evaluation's most common answer and its share of the rows (ties: the first in sort
    order); None where the metric gives no answers (target_loss) or an old export kept none."""
    if "prediction" not in frame.columns or frame["prediction"].is_null().all():
        return None
    counts = frame.drop_nulls("prediction").group_by("prediction").len().sort(["len", "prediction"], descending=[True, False])
    answer, n = counts.row(0)
    return answer, n / frame.height


def answer_text(answer: str) -> str:
    """An answer on one short line: whitespace runs collapsed, at most 24 characters."""
    shown = " ".join(answer.split()) or "(empty)"
    return shown if len(shown) <= 24 else shown[:23] + "…"


def _top_answer(runs: list[dict[str, Any]], frames: list[pl.DataFrame]) -> tuple[float, str] | tuple[None, None]:
    """The largest share of test rows given one same answer, over seeds, with that answer and seed.

    Why: an arm that answers "positive" to 97% of a balanced task has collapsed onto one label
    (the label mix of a small draw does this), which its mean alone does not tell apart from a
    model that ranks the answers poorly. `frames`: the runs' test results, in seed order."""
    worst: tuple[float, str] | tuple[None, None] = (None, None)
    for r, frame in zip(sorted(runs, key=_seed_order), frames):
        top = top_answer(frame)
        if top is None:
            return None, None
        answer, share = top
        if worst[0] is None or share > worst[0]:
            worst = (share, answer_text(answer) if len(runs) == 1 else f"{answer_text(answer)} (seed {r['seed']})")
    return worst


def _span(metric: str) -> float:
    """How far apart two arms' means can be on this metric: hi - lo of its bounds, else unbounded."""
    try:
        bounds = get_metric(metric).bounds
    except KeyError:  # an export of a metric this install does not register
        bounds = None
    return math.inf if bounds is None else bounds[1] - bounds[0]


def build_leaderboard(results: list[dict[str, Any]]) -> pl.DataFrame:
    """One row per (task, strategy, budget). `results` rows: strategy, budget, n_rows, seed, task,
    metric, examples (test rows) and optionally dev_examples (the same model on the task's dev rows).

    Differences against random and no fine-tune count test rows and seeds (`seed_aware_diff`);
    `*_mdd` is the smallest difference the comparison detects with 80% power; `top_answer_share`
    is the largest share of test rows one seed gave a single answer (`_top_answer`)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["task"], r["strategy"], str(r["budget"])), []).append(r)
    test = {g: _frames(runs) for g, runs in groups.items()}  # read once: random and none pair with every arm
    out = []
    for (task, strategy, budget), runs in groups.items():
        m = _matrix(test[task, strategy, budget], (task, strategy, budget))
        per_seed = m.mean(1)
        dev = [r.get("dev_examples") for r in runs]
        row = {
            "task": task, "metric": runs[0]["metric"], "strategy": strategy, "budget": budget,
            "rows": runs[0]["n_rows"], "seeds": len(runs), "mean": float(per_seed.mean()),
            "sd_seeds": float(per_seed.std(ddof=1)) if len(runs) > 1 else None,
            "per_seed": " ".join(f"{v:.3f}" for v in per_seed), "n_test": m.shape[1],
            "dev_mean": float(_matrix(_frames(runs, "dev_examples"), (task, strategy, budget, "dev")).mean()) if all(dev) else None,
        }
        row["top_answer_share"], row["top_answer"] = _top_answer(runs, test[task, strategy, budget])
        span = _span(runs[0]["metric"])  # few seeds with a wide spread can reach past what the metric allows
        for ref, col in ((RANDOM, "vs_random"), (NONE, "vs_none")):
            ref_key = (task, ref, budget if ref == RANDOM else "-")
            if ref_key in test and ref != strategy:
                _same_rows(test[task, strategy, budget], test[ref_key], (task, strategy, budget), ref_key)
                d = seed_aware_diff(m, _matrix(test[ref_key], ref_key))
                row[col], row[f"{col}_lo"], row[f"{col}_hi"] = d.mean, max(d.lo, -span), min(d.hi, span)
                row[f"{col}_mdd"] = d.mdd if d.mdd < span else None  # None: no difference the metric allows is detectable
                # No fine-tune is deterministic: it has no seed variance to leave out.
                row[f"{col}_seed_aware"] = d.seed_aware or (ref == NONE and len(runs) > 1)
            else:
                row[col] = row[f"{col}_lo"] = row[f"{col}_hi"] = row[f"{col}_mdd"] = row[f"{col}_seed_aware"] = None
        out.append(row)
    # Budgets by size (no fine-tune first, the full pool last), not as text ("100%" before "25%").
    size: dict[tuple[str, str], int] = {}
    for r in out:
        size[r["task"], r["budget"]] = max(size.get((r["task"], r["budget"]), 0), r["rows"])
    out.sort(key=lambda r: (r["task"], size[r["task"], r["budget"]], r["budget"], -r["mean"]))
    return pl.DataFrame(out, infer_schema_length=None)


def _fmt_sd(sd: float | None) -> str:
    return "n/a" if sd is None else f"{sd:.3f}"


def to_markdown(board: pl.DataFrame) -> str:
    """Per task: each arm's test mean, seed spread ("n/a" for one seed), dev mean, and its
    seed-aware differences against random and no fine-tune with the smallest detectable one."""
    parts = []
    for task in board["task"].unique(maintain_order=True).to_list():
        t = board.filter(pl.col("task") == task)
        parts.append(f"### {task} ({t['metric'][0]}, {t['n_test'][0]} test rows)\n")
        parts.append("| strategy | budget | rows | test mean ± sd over seeds | per seed | dev mean | "
                     "Δ vs random [95% CI] (detectable) | Δ vs no fine-tune [95% CI] (detectable) | "
                     "most common answer, share of test rows (worst seed) |")
        parts.append("|---|---|---|---|---|---|---|---|---|")
        for r in t.iter_rows(named=True):
            def ci(col: str) -> str:
                if r[col] is None:
                    return ""
                star = "" if r.get(col + "_seed_aware", True) is not False else "*"
                mdd = "none detectable" if r[col + "_mdd"] is None else f"±{r[col + '_mdd']:.3f}"
                return f"{r[col]:+.3f} [{r[col + '_lo']:+.3f}, {r[col + '_hi']:+.3f}]{star} ({mdd})"
            dev = "" if r.get("dev_mean") is None else f"{r['dev_mean']:.3f}"
            top = "" if r.get("top_answer_share") is None else f"{r['top_answer_share']:.3f} {r['top_answer']}".replace("|", "\\|")
            parts.append(f"| {r['strategy']} | {r['budget']} | {r['rows']} | {r['mean']:.3f} ± {_fmt_sd(r['sd_seeds'])} | "
                         f"{r['per_seed']} | {dev} | {ci('vs_random')} | {ci('vs_none')} | {top} |")
        parts.append("")
    parts.append("Intervals count both test rows and seeds (a t interval; few seeds make it wide); \"detectable\" "
                 "is the smallest difference the comparison finds with 80% power. An arm with one seed has no seed "
                 "spread (n/a), so its intervals (marked *) leave seed variance out. The last column flags an arm that "
                 "collapsed onto one answer in some seed: compare it with the other arms' and the task's own label mix.\n")
    return "\n".join(parts)


def leaderboard_markdown(name: str, header: str, table: str, results: list[dict[str, Any]], timings: dict[str, float]) -> str:
    """leaderboard.md: the run's setup (`header`), the per-task tables (`to_markdown`), the compute
    each arm's runs recorded and this invocation's wall time per stage."""
    # One line per arm and budget: a run is one fine-tune (its seed), evaluated on every task.
    compute = (pl.DataFrame(results).with_columns(pl.col("budget").cast(pl.String))
               .group_by("strategy", "budget", "seed", maintain_order=True)
               .agg(pl.col("n_rows").first(), pl.col("train_s").first(), pl.col("eval_s").sum())
               .group_by("strategy", "budget", maintain_order=True)
               .agg(pl.col("n_rows").first(), pl.len().alias("runs"), pl.col("train_s").mean(), pl.col("eval_s").mean()))
    compute_lines = "\n".join(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.0f} | {r[5]:.0f} |" for r in compute.iter_rows())
    stage_lines = "\n".join(f"| {k} | {v:.0f} |" for k, v in timings.items())
    return (f"# Leaderboard: {name}\n\n{header}\n\n{table}\n"
            f"## Compute per run, as recorded when each artifact was built (s, mean over runs)\n\n"
            f"| strategy | budget | rows | runs | fine-tune | evaluate (all tasks) |\n|---|---|---|---|---|---|\n{compute_lines}\n\n"
            f"## Time of this invocation per stage (s, summed over arms, which overlap with compare.workers > 1; "
            f"cached work costs ~0)\n\n| stage | seconds |\n|---|---|\n{stage_lines}\n")


@dataclass
class TaskPanel:
    """What the leaderboard plot shows for one task: arms top to bottom, best test mean first."""

    title: str
    labels: list[str]
    means: np.ndarray
    sds: np.ndarray  # 0 where one seed
    seeds: list[list[float]]
    baselines: dict[str, float]  # "no fine-tune" / "full pool" -> mean
    delta_name: str  # "random" or "no fine-tune": what the paired differences are against
    deltas: list[tuple[float, float, float] | None]  # (difference, lo, hi) per arm, None for the reference itself
    xlim: tuple[float, float]


def _zoom(values: list[float], pad: float = 0.08) -> tuple[float, float]:
    """The data's range plus a margin: a bar from 0 hides differences of a few points."""
    lo, hi = min(values), max(values)
    margin = (hi - lo) * pad or max(abs(hi) * pad, 0.01)
    return lo - margin, hi + margin


def plot_panels(board: pl.DataFrame) -> list[TaskPanel]:
    """Per task: every arm but the baselines (random and references included), with its seeds and
    paired 95% interval against random (or, without a random arm, against no fine-tune)."""
    panels = []
    for task in board["task"].unique(maintain_order=True).to_list():
        t = board.filter(pl.col("task") == task)
        arms = t.filter(~pl.col("strategy").is_in([NONE, FULL]))  # the board's order: budget by size, best first
        several = arms["budget"].n_unique() > 1
        labels = [f"{s} @ {b}" if several else s for s, b in zip(arms["strategy"], arms["budget"])]
        seeds = [[float(v) for v in str(s).split()] for s in arms["per_seed"]]
        means, sds = arms["mean"].to_numpy(), arms["sd_seeds"].fill_null(0).cast(pl.Float64).to_numpy()
        baselines = {name: float(t.filter(pl.col("strategy") == key)["mean"][0])
                     for key, name in ((NONE, "no fine-tune"), (FULL, "full pool")) if key in t["strategy"].to_list()}
        ref = next((c for c in ("vs_random", "vs_none") if c in arms.columns and arms[c].drop_nulls().len()), None)
        deltas = ([None if r[ref] is None else (r[ref], r[f"{ref}_lo"], r[f"{ref}_hi"]) for r in arms.iter_rows(named=True)]
                  if ref else [None] * arms.height)
        values = [*(v for s in seeds for v in s), *(means - sds), *(means + sds), *baselines.values()]
        budget = "" if several or not arms.height else f", budget {arms['budget'][0]}"
        title = f"{task} ({t['metric'][0]}, {t['n_test'][0]} test rows{budget})"
        panels.append(TaskPanel(title, labels, means, sds, seeds, baselines,
                                "random" if ref == "vs_random" else "no fine-tune", deltas, _zoom(values)))
    return panels


def figure(board: pl.DataFrame):
    """Per task, two panels sharing the arms: test score (mean ± sd over seeds, each seed a dot,
    the baselines as lines, the axis zoomed to the data) and the paired difference with its 95%
    interval, coloured where the interval excludes zero. One legend for the figure, above the
    panels: a legend inside an axis lands on the data or a baseline line in some task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = plot_panels(board)
    heights = [max(len(p.labels), 2) * 0.38 + 1.5 for p in panels]
    legend_in = 0.45
    fig, axes = plt.subplots(len(panels), 2, figsize=(12, sum(heights) + 0.6 + legend_in), squeeze=False,
                             sharey="row", gridspec_kw={"height_ratios": heights, "width_ratios": [3, 2]})
    styles = {"no fine-tune": (":", "tab:green"), "full pool": ("--", "tab:red")}
    for (left, right), p in zip(axes, panels):
        y = np.arange(len(p.labels))
        for yi, vals in zip(y, p.seeds):
            left.scatter(vals, [yi] * len(vals), s=14, color="0.55", zorder=2, label="a seed")
        for yi, (label, mean, sd) in enumerate(zip(p.labels, p.means, p.sds)):
            is_random = label.split(" @ ")[0] == RANDOM
            left.errorbar([mean], [yi], xerr=[sd], fmt="o", capsize=3, zorder=3, color="0.3" if is_random else "tab:blue",
                          label="random: mean ± sd over seeds" if is_random else "mean ± sd over seeds")
        for name, value in p.baselines.items():
            style, color = styles[name]
            left.axvline(value, linestyle=style, color=color, label=name)
        left.set_xlim(*p.xlim)
        left.set_yticks(y, p.labels, fontsize=9)
        left.invert_yaxis()
        baselines = " · ".join(f"{name} {value:.3f}" for name, value in p.baselines.items())
        left.set_title(p.title + (f"\n{baselines}" if baselines else ""), fontsize=10, loc="left")
        left.set_xlabel("test score (mean over test rows)", fontsize=9)
        left.grid(axis="x", alpha=0.3)
        _draw_deltas(right, y, p)
    entries: dict[str, Any] = {}
    for ax in axes[:, 0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    fig.legend(entries.values(), entries.keys(), loc="upper center", ncol=len(entries), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - legend_in / fig.get_figheight()))
    return fig


def plot(board: pl.DataFrame, path: Path) -> Path:
    """leaderboard.png: `figure`, saved."""
    import matplotlib.pyplot as plt

    fig = figure(board)
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def _draw_deltas(ax, y: np.ndarray, p: TaskPanel) -> None:
    ax.axvline(0, color="black", linewidth=0.8, zorder=1)
    for yi, d in zip(y, p.deltas):
        if d is None:
            if p.labels[yi].split(" @ ")[0] == RANDOM and p.delta_name == RANDOM:
                ax.annotate("the reference", (0, yi), xytext=(4, 0), textcoords="offset points", va="center", fontsize=7)
            continue
        diff, lo, hi = d
        color = "tab:blue" if lo > 0 else "tab:red" if hi < 0 else "0.4"
        ax.errorbar([diff], [yi], xerr=[[diff - lo], [hi - diff]], fmt="o", color=color, capsize=3)
        # boxed, and drawn over the zero line: an interval ending just short of zero puts its label on it
        ax.annotate(f"{diff:+.3f}", (hi, yi), xytext=(4, 0), textcoords="offset points", va="center", fontsize=7,
                    zorder=4, bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none"})
    ax.set_xlabel(f"difference vs {p.delta_name}, paired 95% CI", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.15)
