"""Score confident curation against the benchmark's injected noise (pool_truth.jsonl: scoring only).

    python benchmarks/curation.py --shared ../shared --work-dir .tuneset/bench [--sample 300]

1. Runs `tuneset curate` with recipes/bench-curate.yaml on bench/pool.jsonl (scores are cached).
   Copies the run's report.md and scores.png here (the audit stays in the work dir: it holds pool text).
2. AUROC per noise kind: rows with that noise vs clean rows of the same sources, for every score
   column; exact-duplicate recall; relabel precision and recall against the clean labels.
   With --labels-only: the same with `label_quality` alone (no confidence pass, no filters), so
   label-flip detection and relabelling are measured in minutes; writes labels_only_*.
   `--pool pool_small.jsonl --set key=value --tag NAME` measures another pool or setting into
   labels_only_NAME_*, e.g. label_quality's min_rows_per_class on the 2k-row pool.
3. With --sample N: all three confidence components (likelihood, reflection, consistency) on a
   stratified sample of N rows, with their time per 1,000 rows.
Writes benchmarks/results/curation/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl
from bench_args import parse_bench_args

from tuneset.runtime import configure

configure()

from tuneset.curation.dedup import normalise  # noqa: E402
from tuneset.flows.context import run_context  # noqa: E402
from tuneset.flows.curate import curate_flow  # noqa: E402
from tuneset.recipe import load_recipe  # noqa: E402
from tuneset.selectors import make_selector  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "curation"


def auroc(bad: np.ndarray, score: np.ndarray) -> float:
    """P(a bad row scores lower than a clean one), ties half: low score = flagged."""
    s = pl.Series(-score).rank("average").to_numpy()
    n_pos, n_neg = bad.sum(), (~bad).sum()
    return float((s[bad].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detection_table(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    out = []
    for kind in ["label_flip", "shuffled_response", "truncated", "wrong_solution"]:
        sources = frame.filter(pl.col("noise") == kind)["source"].unique()
        pop = frame.filter(pl.col("source").is_in(sources.implode()) & (pl.col("noise").is_null() | (pl.col("noise") == kind)))
        bad = (pop["noise"] == kind).fill_null(False).to_numpy()
        row = {"noise": kind, "bad": int(bad.sum()), "clean": int((~bad).sum())}
        for c in columns:
            row[c] = round(auroc(bad, pop[c].to_numpy()), 4) if c in pop.columns else None
        out.append(row)
    return pl.DataFrame(out)


def flip_auroc_by_source(frame: pl.DataFrame) -> dict[str, float]:
    out = {}
    for src in sorted(frame.filter(pl.col("noise") == "label_flip")["source"].unique().to_list()):
        part = frame.filter((pl.col("source") == src) & (pl.col("noise").is_null() | (pl.col("noise") == "label_flip")))
        out[src] = round(auroc((part["noise"] == "label_flip").fill_null(False).to_numpy(), part["label_quality"].to_numpy()), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample", type=int, default=0, help="rows for the three-component confidence run")
    ap.add_argument("--components-only", action="store_true", help="only the --sample run, without the full-pool curation")
    ap.add_argument("--labels-only", action="store_true", help="label_quality alone: label flips and relabelling")
    ap.add_argument("--pool", default="pool.jsonl", help="the bench's pool file: pool.jsonl or pool_small.jsonl")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override key=value, after the mode's own")
    ap.add_argument("--tag", default="", help="suffix of the output files (labels_only_<tag>_summary.json ...)")
    args, bench = parse_bench_args(ap)
    if bench is None:
        return
    OUT.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(ROOT / "recipes" / "bench-curate.yaml", [
        f"pool={(bench / args.pool).resolve()}", f"tasks={(bench / 'tasks.json').resolve()}", f"work_dir={args.work_dir}",
        *(["score.selectors=[{name: label_quality}]", "curate.filters=[]"] if args.labels_only else []), *args.overrides])
    prefix = ("labels_only_" if args.labels_only else "") + (f"{args.tag}_" if args.tag else "")
    if args.components_only:
        frame = (pl.read_ndjson(bench / args.pool).join(pl.read_ndjson(bench / "pool_truth.jsonl"), on="id", how="left")
                 .with_columns(old_response=pl.col("response")))
        out = component_sample(recipe, frame, args.sample or 120)
        (OUT / "components_sample.json").write_text(json.dumps(out, indent=1))
        print(json.dumps(out, indent=1))
        return
    from tuneset.flows.api import prefect_api

    t0 = time.perf_counter()
    with prefect_api():  # a server that dies with this script, even on kill -9
        res = curate_flow(recipe)
    audit = pl.read_parquet(res.audit)
    if not args.labels_only and not args.tag:
        for name in ("report.md", "scores.png"):
            shutil.copyfile(Path(res.report).parent / name, OUT / name)
    truth = pl.read_ndjson(bench / "pool_truth.jsonl")
    frame = audit.join(truth, on="id", how="left")
    score_cols = [c for c in audit.columns if c.split(".")[0] in ("confidence", "label_quality")
                  and audit[c].dtype.is_numeric() and not c.endswith(("label_issue", "in_label_group"))]
    det = detection_table(frame, score_cols)
    # A planted copy is found when either row of the pair is dropped as a duplicate of the other
    # (the copy may come first in the file).
    flagged = {(i, r.removeprefix("duplicate of ")) for i, r in frame.select("id", "reason").iter_rows() if r.startswith("duplicate of")}
    pairs = {(i, j) for i, j in frame.filter(pl.col("noise") == "duplicate").select("id", "duplicate_of").iter_rows()}
    found = sum((i, j) in flagged or (j, i) in flagged for i, j in pairs)
    true_flags = sum((i, j) in pairs or (j, i) in pairs for i, j in flagged)
    relabelled = frame.filter(pl.col("reason").str.starts_with("relabelled"))
    flips = relabelled.filter(pl.col("noise") == "label_flip")
    restored = sum(normalise(a) == normalise(b) for a, b in flips.select("new_response", "clean_response").iter_rows())
    n_flips = int((frame["noise"] == "label_flip").sum())
    summary = {
        "rows": audit.height, "counts": res.counts, "curate_seconds": round(time.perf_counter() - t0, 1),
        "duplicates": {"injected_pairs": len(pairs), "found": found, "recall_exact": round(found / max(len(pairs), 1), 4),
                       "flagged": len(flagged), "flagged_planted": true_flags,
                       "flagged_other": len(flagged) - true_flags},
        "relabel": {"relabelled": relabelled.height, "of_them_flipped": flips.height, "restored": restored,
                    "precision_on_flipped": round(restored / max(flips.height, 1), 4),
                    "recall_of_all_flips": round(restored / max(n_flips, 1), 4),
                    "clean_rows_relabelled": int(relabelled["noise"].is_null().sum())},
        "drops_by_noise": frame.filter(pl.col("action") == "dropped").group_by(pl.col("noise").fill_null("clean")).len()
        .sort("noise").to_dicts(),
        "label_flip_auroc_by_source": flip_auroc_by_source(frame),
    }
    if args.sample and not args.labels_only:
        summary["components"] = component_sample(recipe, frame, args.sample)
    det.write_csv(OUT / f"{prefix}detection_auroc.csv")
    (OUT / f"{prefix}summary.json").write_text(json.dumps(summary, indent=1))
    print(det)
    print(json.dumps(summary, indent=1))


def component_sample(recipe, frame: pl.DataFrame, n: int) -> dict:
    """All three confidence components on a stratified sample: AUROC per noise kind and time per
    1,000 rows of each component (each timed alone, on a cold cache)."""
    kinds = ["shuffled_response", "truncated", "wrong_solution"]
    per = n // (len(kinds) + 1)
    parts = [frame.filter(pl.col("noise") == k).sample(min(per, int((frame["noise"] == k).sum())), seed=0) for k in kinds]
    gen_sources = pl.concat(parts)["source"].unique()
    parts.append(frame.filter(pl.col("noise").is_null() & pl.col("source").is_in(gen_sources.implode())).sample(per, seed=0))
    sample = pl.concat(parts)
    rows = sample.select("id", "source", "instruction", pl.col("old_response").alias("response"))
    ctx = run_context(recipe).scoring()
    models = ctx.store.root / "models"
    ctx.store = type(ctx.store)(Path(recipe.work_dir) / "component-sample-store")  # cold: time every component
    ctx.store.root.mkdir(parents=True, exist_ok=True)
    if models.exists() and not (ctx.store.root / "models").exists():
        (ctx.store.root / "models").symlink_to(models)  # the converted model only, not its conversion time
    timing, cols = {}, {}
    for comp in ["likelihood", "reflection", "consistency"]:
        t = time.perf_counter()
        out = make_selector("confidence", {"components": [comp]}).fit(ctx).score(rows)
        timing[comp] = round((time.perf_counter() - t) / rows.height * 1000, 1)
        cols[comp] = out[comp].to_numpy()
    scored = sample.with_columns(**{f"confidence.{k}": v for k, v in cols.items()},
                                 **{"confidence.combined": np.mean(list(cols.values()), axis=0)})
    det = detection_table(scored, [f"confidence.{k}" for k in [*cols, "combined"]])
    det.write_csv(OUT / "components_sample_auroc.csv")
    print(det)
    return {"rows": rows.height, "seconds_per_1000_rows": timing, "auroc": det.to_dicts()}


if __name__ == "__main__":
    main()
