"""Every cached fine-tune of one training selection, ranked on dev rows by the sweep's own rule.

    python benchmarks/dev_standings.py <work_dir> <rows fingerprint prefix> [--base-format plain]

Sweeps run as separate commands (a LoRA rank probe with alpha = 2 x rank cannot be one grid) leave
their fine-tunes and dev evaluations in the same store; this reads them back, so points from
different runs are ranked together by `tuneset/evaluate/choose.py` (target tasks' dev rows pooled,
ties to the lower loss, controls held to no fine-tune). Beside each point: its paired difference
from the leader on the pooled target rows, mean ± 2 standard errors, which says whether the dev
rows resolve the order at all. Reads only dev evaluations; test rows are never opened.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

from tuneset.evaluate.choose import dev_frame, paired_diff, per_row_means, rank_on_dev


def _meta(folder: Path) -> dict | None:
    p = folder / "meta.json"
    return json.loads(p.read_text()) if p.is_file() and (folder / "_COMPLETE").exists() else None


def _dev_evals(store: Path) -> dict[str | None, dict[tuple[str, str], Path]]:
    """model_dir (None: the base model) -> (task, prompt format) -> that model's dev examples."""
    out: dict[str | None, dict[tuple[str, str], Path]] = {}
    for folder in sorted((store / "eval").iterdir()):
        meta = _meta(folder)
        if meta and meta["split"] == "dev" and (folder / "examples.parquet").is_file():
            out.setdefault(meta["model_dir"], {})[(meta["task"], meta["prompt_format"])] = folder / "examples.parquet"
    return out


def _frame(name: str, evals: dict[tuple[str, str], Path], fmt: str) -> pl.DataFrame:
    return dev_frame(name, {task: p for (task, f), p in sorted(evals.items()) if f == fmt})


def standings(work_dir: Path, rows: str, controls: list[str], base_format: str) -> str:
    store = work_dir / "store"
    evals = _dev_evals(store)
    every_task = {t for t, f in evals.get(None, {}) if f == base_format}
    found: list[tuple[str, dict]] = []
    for folder in sorted((store / "finetune").iterdir()):
        meta = _meta(folder)
        if not meta or not meta["rows"].startswith(rows):
            continue
        cfg = meta["config"]
        if {t for t, f in evals.get(str(folder), {}) if f == cfg["prompt_format"]} == every_task:  # else not evaluated (yet)
            found.append((str(folder), cfg))
    if not found:
        raise SystemExit(f"no fine-tunes of rows {rows}* under {store} evaluated on every task's dev rows")
    varying = [k for k in found[0][1] if len({json.dumps(c.get(k)) for _, c in found}) > 1] or ["lr"]
    frames = [_frame(", ".join(f"{k} {cfg.get(k)}" for k in varying), evals[folder], cfg["prompt_format"])
              for folder, cfg in found]
    base = _frame("no fine-tune", evals.get(None, {}), base_format) if controls else None
    dev = pl.concat([*frames, base] if base is not None else frames)
    ranked = rank_on_dev(dev, controls, "no fine-tune" if controls else None)
    targets = per_row_means(dev).filter(~pl.col("task").is_in(controls))
    tasks = sorted(set(dev["task"]))
    lines = [f"Fine-tunes of rows {rows}* in {store}, ranked on dev rows (controls {controls or 'none'}; "
             f"no fine-tune in the {base_format} format)\n",
             "| settings that differ | " + " | ".join(f"dev {t}" for t in tasks)
             + " | target rows pooled | target loss | vs leader (± 2 se) | control vs none | eligible |",
             "|---" * (len(tasks) + 6) + "|"]
    for r in ranked:
        means = dev.filter(pl.col("candidate") == r.name).group_by("task").agg(pl.col("score").mean())
        by_task = dict(means.iter_rows())
        d, se = paired_diff(targets, r.name, ranked[0].name)
        lines.append(f"| {r.name} | " + " | ".join(f"{by_task.get(t, float('nan')):.3f}" for t in tasks)
                     + f" | {r.score:.3f} ({r.rows}) | {r.loss:.3f} | {d:+.3f} ± {2 * se:.3f} "
                     f"| {r.control_words()} | {'yes' if r.eligible else 'no'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("work_dir", type=Path)
    ap.add_argument("rows", help="the training rows' fingerprint, or its first characters")
    ap.add_argument("--controls", nargs="*", default=["arc_easy"])
    ap.add_argument("--base-format", default="plain", help="the no-fine-tune arm's prompt format (the bench's sweep chose plain)")
    a = ap.parse_args()
    print(standings(a.work_dir, a.rows, a.controls, a.base_format))
