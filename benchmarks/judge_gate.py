"""The judge-competence gate on the bench: off where SmolLM2-135M cannot judge, on where it can.

    python benchmarks/judge_gate.py --shared ../shared --work-dir .tuneset/judge-gate

Per kind of planted noise (GSM8K wrong solutions, truncated responses, shuffled responses), the
noisy rows of the bench pool are split in two by id:
- the first half, each beside its clean original, become `curate.judge_rows` (correct: false /
  true): the golden set a user would hand-label in their own domain;
- the second half, plus as many clean rows of the same sources, become the pool to curate.
The confidence filters then run through the `curate` flow with the gate (the default bar, AUROC
0.6) and without it (`judge_min_auroc: null`), each at two settings: `recipes/bench-curate.yaml`'s
thresholds (`p_end` >= 1e-6, `relevance` >= 0.55), and a strict one that drops each column's lowest
quarter of the pool (its 25th percentile, read from the first run's scores: what a user tuning a
filter by eye might pick). pool_truth.jsonl builds the golden sets and scores the drops; it is never
a selector input. Writes benchmarks/results/judge_gate.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import polars as pl
from bench_args import ROOT, parse_bench_args

from tuneset.runtime import configure

configure()

from tuneset.flows.curate import curate_flow  # noqa: E402
from tuneset.recipe import load_recipe  # noqa: E402

KINDS = ("wrong_solution", "truncated", "shuffled_response")
FILTERS = ("confidence.p_end", "confidence.relevance")
OUT = ROOT / "benchmarks" / "results" / "judge_gate.json"


def split_kind(frame: pl.DataFrame, kind: str, per_half: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(golden set, pool) for one kind of noise: see the module docstring."""
    noisy = frame.filter(pl.col("noise") == kind).sort("id")
    half = min(per_half, noisy.height // 2)
    judged, pooled = noisy.head(half), noisy.slice(half, half)
    gold = pl.concat([
        judged.select(pl.format("{}/given", "id").alias("id"), "source", "instruction", "response", correct=pl.lit(False)),
        judged.select(pl.format("{}/clean", "id").alias("id"), "source", "instruction",
                      pl.col("clean_response").alias("response"), correct=pl.lit(True)),
    ])
    clean = (frame.filter(pl.col("noise").is_null() & pl.col("source").is_in(noisy["source"].unique().implode()))
             .sample(half, seed=0))
    pool = pl.concat([pooled, clean]).select("id", "source", "instruction", "response")
    return gold, pool


def curate(bench: Path, work: Path, kind: str, gold: Path, pool: Path, gated: bool, strict: dict[str, float] | None = None) -> dict:
    """One curate run; `strict` replaces the recipe's filters with a min per column."""
    filters = ([f"curate.filters=[{', '.join(f'{{column: {c}, min: {v!r}}}' for c, v in strict.items())}]"]
               if strict else [])
    recipe = load_recipe(ROOT / "recipes" / "bench-curate.yaml", [
        f"name=judge-gate-{kind.replace('_', '-')}-{'gated' if gated else 'ungated'}{'-strict' if strict else ''}",
        f"pool={pool}", f"tasks={(bench / 'tasks.json').resolve()}", f"work_dir={work}",
        "score.selectors=[{name: confidence, params: {components: [likelihood, relevance]}}]", "curate.relabel=null",
        f"curate.judge_rows={gold}", *([] if gated else ["curate.judge_min_auroc=null"]), *filters,
    ])
    t0 = time.perf_counter()
    res = curate_flow(recipe)
    report = Path(res.report).read_text()
    return {"audit": res.audit, "seconds": round(time.perf_counter() - t0, 1),
            "gate": report.split("## Judge gate", 1)[1].strip() if "## Judge gate" in report else ""}


def drops(audit: str, noisy_ids: set[str]) -> dict:
    """Rows each confidence filter dropped, split into planted-noisy and clean rows."""
    a = pl.read_parquet(audit)
    out = {}
    for col in FILTERS:
        hit = a.filter(pl.col("action").eq("dropped") & pl.col("reason").str.starts_with(col + "="))["id"].to_list()
        out[col] = {"noisy": sum(i in noisy_ids for i in hit), "clean": sum(i not in noisy_ids for i in hit)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-half", type=int, default=40, help="noisy rows in the golden set (and as many in the pool)")
    args, bench = parse_bench_args(ap)
    if bench is None:
        return
    frame = pl.read_ndjson(bench / "pool.jsonl").join(pl.read_ndjson(bench / "pool_truth.jsonl"), on="id", how="left")
    work = args.work_dir.resolve()
    (work / "inputs").mkdir(parents=True, exist_ok=True)
    results = []
    for kind in KINDS:
        gold, pool = split_kind(frame, kind, args.per_half)
        gold_path, pool_path = work / "inputs" / f"{kind}-gold.jsonl", work / "inputs" / f"{kind}-pool.jsonl"
        gold.write_ndjson(gold_path)
        pool.write_ndjson(pool_path)
        noisy = set(frame.filter(pl.col("noise") == kind)["id"].to_list())
        row = {"noise": kind, "sources": sorted(pool["source"].unique().to_list()), "gold_pairs": gold.height // 2,
               "pool_noisy": len(noisy & set(pool["id"].to_list())), "pool_clean": len(set(pool["id"].to_list()) - noisy)}
        thresholds: dict[str, dict[str, float] | None] = {"recipe": None}
        for setting in ("recipe", "strict"):
            for gated in (True, False):
                run = curate(bench, work, kind, gold_path, pool_path, gated, thresholds[setting])
                if setting == "recipe" and gated:  # the strict setting: each column's 25th percentile here
                    scores = pl.read_parquet(run["audit"])
                    thresholds["strict"] = {c: float(scores[c].quantile(0.25)) for c in FILTERS}
                row[f"{setting}_{'gated' if gated else 'ungated'}"] = {
                    "gate": run["gate"], "seconds": run["seconds"], "dropped": drops(run["audit"], noisy)}
        row["strict_thresholds"] = thresholds["strict"]
        results.append(row)
        print(json.dumps(row, indent=1), flush=True)
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
