"""Leaderboard: mean and seed spread per strategy, plus paired differences on the same test rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tuneset.evaluate.stats import seed_row_bootstrap

NONE, FULL, RANDOM = "none", "full", "random"


def _matrix(runs: list[dict[str, Any]], column: str = "examples") -> np.ndarray:
    """(seeds, examples) scores, rows aligned by id."""
    frames = [pl.read_parquet(r[column]).sort("id") for r in sorted(runs, key=lambda r: str(r["seed"]))]
    return np.stack([f["score"].to_numpy() for f in frames])


def build_leaderboard(results: list[dict[str, Any]]) -> pl.DataFrame:
    """One row per (task, strategy, budget). `results` rows: strategy, budget, n_rows, seed, task,
    metric, examples (test rows) and optionally dev_examples (the same model on the task's dev rows).

    Differences against random and no fine-tune resample test rows and seeds (`seed_row_bootstrap`);
    `*_mdd` is the smallest difference the comparison detects with 80% power."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["task"], r["strategy"], str(r["budget"])), []).append(r)
    out = []
    for (task, strategy, budget), runs in groups.items():
        m = _matrix(runs)
        per_seed = m.mean(1)
        dev = [r.get("dev_examples") for r in runs]
        row = {
            "task": task, "metric": runs[0]["metric"], "strategy": strategy, "budget": budget,
            "rows": runs[0]["n_rows"], "seeds": len(runs), "mean": float(per_seed.mean()),
            "sd_seeds": float(per_seed.std(ddof=1)) if len(runs) > 1 else None,
            "per_seed": " ".join(f"{v:.3f}" for v in per_seed), "n_test": m.shape[1],
            "dev_mean": float(_matrix(runs, "dev_examples").mean()) if all(dev) else None,
        }
        for ref, col in ((RANDOM, "vs_random"), (NONE, "vs_none")):
            ref_runs = groups.get((task, ref, budget if ref == RANDOM else "-"))
            if ref_runs and ref != strategy:
                d = seed_row_bootstrap(m, _matrix(ref_runs))
                row[col], row[f"{col}_lo"], row[f"{col}_hi"], row[f"{col}_mdd"] = d.mean, d.lo, d.hi, d.mdd
            else:
                row[col] = row[f"{col}_lo"] = row[f"{col}_hi"] = row[f"{col}_mdd"] = None
        out.append(row)
    return pl.DataFrame(out, infer_schema_length=None).sort(["task", "budget", "mean"], descending=[False, False, True])


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
                     "Δ vs random [95% CI] (detectable) | Δ vs no fine-tune [95% CI] (detectable) |")
        parts.append("|---|---|---|---|---|---|---|---|")
        for r in t.iter_rows(named=True):
            def ci(col: str) -> str:
                if r[col] is None:
                    return ""
                return f"{r[col]:+.3f} [{r[col + '_lo']:+.3f}, {r[col + '_hi']:+.3f}] (±{r[col + '_mdd']:.3f})"
            dev = "" if r.get("dev_mean") is None else f"{r['dev_mean']:.3f}"
            parts.append(f"| {r['strategy']} | {r['budget']} | {r['rows']} | {r['mean']:.3f} ± {_fmt_sd(r['sd_seeds'])} | "
                         f"{r['per_seed']} | {dev} | {ci('vs_random')} | {ci('vs_none')} |")
        parts.append("")
    parts.append("Intervals resample test rows and seeds; \"detectable\" is the smallest difference the "
                 "comparison finds with 80% power (2.8 standard errors). An arm with one seed has no seed "
                 "spread (n/a), so its intervals leave seed variance out.\n")
    return "\n".join(parts)


def plot(board: pl.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = board["task"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        t = board.filter(pl.col("task") == task)
        arms = t.filter(~pl.col("strategy").is_in([NONE, FULL])).sort(["budget", "strategy"])
        labels = [f"{s}\n@{b}" for s, b in zip(arms["strategy"], arms["budget"])]
        x = np.arange(len(labels))
        colors = ["tab:gray" if s == RANDOM else "tab:blue" for s in arms["strategy"]]
        ax.bar(x, arms["mean"].to_numpy(), yerr=arms["sd_seeds"].fill_null(0).to_numpy(), color=colors, alpha=0.6, capsize=4)
        for xi, seeds in zip(x, arms["per_seed"].to_list()):
            vals = [float(v) for v in seeds.split()]
            ax.scatter([xi] * len(vals), vals, color="black", s=10, zorder=3)
        for name, style in ((NONE, ":"), (FULL, "--")):
            base = t.filter(pl.col("strategy") == name)
            if base.height:
                ax.axhline(base["mean"][0], linestyle=style, color="tab:red" if name == FULL else "tab:green",
                           label=f"{'full pool' if name == FULL else 'no fine-tune'} {base['mean'][0]:.3f}")
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_title(f"{task} ({t['metric'][0]})")
        ax.set_ylabel("score (mean over test rows)")
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Downstream score per strategy (bars: mean, whiskers: sd over seeds, dots: seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
