"""Rewrites on multiple-choice rows with a weak judge: the gate keeps every correct answer.

    python benchmarks/mc_rewrite.py --shared ../shared --work-dir .tuneset/mc-rewrite [--rows 120]

The pool: MMLU dev questions (`data/raw/nutcracker/mmlu_dev_5shot_all.jsonl`) as rows with their
four options as `choices` and the keyed answer as the response; every 10th row's answer is moved to
another option (a planted answer-key error, known only to this script). `curate.rewrite` (CLEAR's
auto-correct with the `rewrite` selector, likelihood confidence) runs through the `curate` flow
twice on the bench's `arc_easy` target: with the judge gate at its default bar (AUROC 0.6 on
arc_easy's dev answers, given vs a wrong choice) and without it. Counts what each run did to the
correct rows and to the planted errors. Writes benchmarks/results/mc_rewrite.json.
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

OUT = ROOT / "benchmarks" / "results" / "mc_rewrite.json"
PLANT_EVERY = 10


def mmlu_pool(raw: Path, n: int) -> pl.DataFrame:
    """n MMLU dev rows (spread over subjects), every PLANT_EVERY-th answer moved to the next option;
    `key` keeps the keyed answer."""
    recs = [json.loads(line) for line in raw.read_text().splitlines()]
    recs = recs[:: max(len(recs) // n, 1)][:n]
    rows = []
    for i, r in enumerate(recs):
        options, key = r["options"], r["correct_options_literal"][0]
        given = options[(options.index(key) + 1) % len(options)] if i % PLANT_EVERY == 0 else key
        rows.append({"id": f"mmlu-{i:03d}", "source": r["subject"],
                     "instruction": f"Question: {r['centerpiece']}\nOptions: {' | '.join(options)}\nAnswer:",
                     "response": given, "choices": options, "key": key})
    return pl.DataFrame(rows)


def run(bench: Path, work: Path, pool: Path, gated: bool) -> dict:
    recipe = load_recipe(None, [
        f"name=mc-rewrite-{'gated' if gated else 'ungated'}", f"pool={pool}", f"tasks={(bench / 'tasks.json').resolve()}",
        f"work_dir={work}", "task_names=[arc_easy]", "model.max_length=256",
        "score.selectors=[{name: rewrite, params: {confidence: {components: [likelihood]}, below: 0.5, max_new_tokens: 16}}]",
        "curate.rewrite={margin: 0.0}", "curate.decontaminate=false",
        *([] if gated else ["curate.judge_min_auroc=null"]),
    ])
    t0 = time.perf_counter()
    res = curate_flow(recipe)
    report = Path(res.report).read_text()
    return {"audit": res.audit, "seconds": round(time.perf_counter() - t0, 1),
            "gate": report.split("## Judge gate", 1)[1].strip() if "## Judge gate" in report else ""}


def outcome(audit: str, rows: pl.DataFrame) -> dict:
    a = pl.read_parquet(audit).select("id", "action", "new_response").join(rows.select("id", "response", "key"), on="id")
    rewritten = a.filter(pl.col("action") == "corrected")
    correct, planted = a.filter(pl.col("response") == pl.col("key")), a.filter(pl.col("response") != pl.col("key"))
    return {
        "correct_rows": correct.height, "planted_errors": planted.height, "rewritten": rewritten.height,
        "correct_made_wrong": int((rewritten["response"] == rewritten["key"]).sum()),
        "planted_fixed": int(((rewritten["response"] != rewritten["key"]) & (rewritten["new_response"] == rewritten["key"])).sum()),
        "planted_moved_to_another_wrong": int(((rewritten["response"] != rewritten["key"]) & (rewritten["new_response"] != rewritten["key"])).sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=120)
    args, bench = parse_bench_args(ap)
    if bench is None:
        return
    raw = args.shared / "data" / "raw" / "nutcracker" / "mmlu_dev_5shot_all.jsonl"
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows = mmlu_pool(raw, args.rows)
    pool = work / "mmlu_pool.jsonl"
    rows.drop("key").write_ndjson(pool)
    out = {"rows": rows.height, "planted_every": PLANT_EVERY}
    for gated in (True, False):
        r = run(bench, work, pool, gated)
        out["gated" if gated else "ungated"] = {"gate": r["gate"], "seconds": r["seconds"], **outcome(r["audit"], rows)}
        print(json.dumps(out, indent=1), flush=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
