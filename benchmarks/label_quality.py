"""What each step of `label_quality` adds to label-flip detection on the full benchmark pool.

    python benchmarks/label_quality.py --shared ../shared --work-dir .tuneset/bench

Uses the selector's own features (`group_inputs`, cached by `benchmarks/curation.py
--labels-only`) and scores each variant against pool_truth.jsonl (scoring only): label_flip
AUROC per source and pooled over all label sources, where one threshold must serve every group.
Writes benchmarks/results/curation/label_quality_ablation.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl

from tuneset.runtime import configure

configure()

from bench_args import parse_bench_args  # noqa: E402  (benchmarks/bench_args.py)
from curation import auroc  # noqa: E402  (benchmarks/curation.py)

from tuneset.flows.context import run_context  # noqa: E402
from tuneset.recipe import load_recipe  # noqa: E402
from tuneset.selectors import make_selector  # noqa: E402
from tuneset.selectors.base import row_uniforms  # noqa: E402
from tuneset.selectors.label_quality import fit_group, label_groups, prob_label_right  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "curation"


def variants(x: np.ndarray, y: np.ndarray, k: int, folds: int, order: np.ndarray) -> dict[str, np.ndarray]:
    rows = np.arange(len(y))
    fit = fit_group(x, y, k, folds, None, order)
    return {
        "one fit, p(given label)": fit.first[rows, y],
        "refit without its issues, p(given label)": fit.probs[rows, y],
        "refit, P(given label right) (default)": prob_label_right(fit.probs, y, fit.noise_rate),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    args, bench = parse_bench_args(ap)
    if bench is None:
        return
    recipe = load_recipe(ROOT / "recipes" / "bench-curate.yaml", [
        f"pool={(bench / 'pool.jsonl').resolve()}", f"tasks={(bench / 'tasks.json').resolve()}", f"work_dir={args.work_dir}"])
    rows = pl.read_ndjson(bench / "pool.jsonl")
    noise = dict(pl.read_ndjson(bench / "pool_truth.jsonl").select("id", "noise").iter_rows())
    selector = make_selector("label_quality").fit(run_context(recipe).scoring())
    params = selector.params
    scored: dict[str, dict[str, np.ndarray]] = {}
    flipped: dict[str, np.ndarray] = {}
    for source, idx in label_groups(rows, params).items():
        kinds = np.array([noise.get(i) for i in rows["id"].to_numpy()[idx]], dtype=object)
        if not (kinds == "label_flip").any():
            continue
        x, y, labels = selector.group_inputs(rows["instruction"].to_numpy()[idx].tolist(), rows["response"].to_numpy()[idx].tolist())
        keep = np.array([k in (None, "label_flip") for k in kinds])  # clean rows vs flipped rows
        flipped[source] = (kinds == "label_flip")[keep]
        order = row_uniforms(rows["id"].to_numpy()[idx].tolist(), selector.ctx.seed)  # the selector's own folds
        for name, s in variants(x, y, len(labels), params.folds, order).items():
            scored.setdefault(name, {})[source] = s[keep]
        print(source, "done", flush=True)
    out = {}
    for name, by_source in scored.items():
        pooled = auroc(np.concatenate([flipped[s] for s in by_source]), np.concatenate(list(by_source.values())))
        out[name] = {"pooled": round(pooled, 4), **{s: round(auroc(flipped[s], v), 4) for s, v in by_source.items()}}
        print(f"{name:45s} " + "  ".join(f"{k} {v}" for k, v in out[name].items()))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "label_quality_ablation.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
