"""The strategy to recommend from an exported bench run, chosen on dev rows alone.

    python benchmarks/recommend.py benchmarks/results/bench_downstream

The rule is the product's own (`tuneset/evaluate/choose.py`, the one the fine-tune sweep uses):
- Candidates are the selection strategies: not the baselines (none, full), not the references.
- Their score pools every dev row of the *target* tasks and every seed, so each dev row weighs the
  same; ties go to the lower gold-response loss on those rows.
- The control task (arc_easy: the pool holds no data for it) is a constraint, not part of the
  score: a strategy is out if its control dev score is below no fine-tune's by more than two
  standard errors of the paired difference. On 25 control rows this catches only a large harm; the
  test rows show the small ones.
- Only seeds every candidate has finished count, so a run in progress compares like with like.
Test scores are printed beside the choice and never used. Writes `<export>/recommended.md`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl
from bench_args import export_examples

from tuneset.evaluate.choose import rank_on_dev

CONTROL = "arc_easy"
NOT_CANDIDATES = ("none", "full")


def recommend(export: Path) -> str:
    ex = export_examples(export)
    candidates = sorted(s for s in ex["strategy"].unique() if s not in NOT_CANDIDATES and "reference" not in s)
    seeds = sorted(set.intersection(*(set(ex.filter(pl.col("strategy") == s)["seed"]) for s in candidates)))
    ex = ex.filter(pl.col("seed").is_in([*seeds, "-"]))  # "-": the seedless no-fine-tune arm
    dev, test = ex.filter(pl.col("split") == "dev"), ex.filter(pl.col("split") == "test")
    ranked = rank_on_dev(dev.filter(pl.col("strategy").is_in([*candidates, "none"])).rename({"strategy": "candidate"}),
                         [CONTROL], base="none")
    none_control = test.filter(pl.col("strategy") == "none", pl.col("task") == CONTROL)["score"].mean()
    lines = ["| strategy | target dev rows (pooled) | target dev loss | control dev vs none (± 2 se) | eligible "
             "| mean test score, target tasks | control test vs none |", "|---|---|---|---|---|---|---|"]
    for r in ranked:
        mine = test.filter(pl.col("strategy") == r.name)
        t_test = mine.filter(pl.col("task") != CONTROL).group_by("task").agg(pl.col("score").mean())["score"].mean()
        c_test = mine.filter(pl.col("task") == CONTROL)["score"].mean() - none_control
        lines.append(f"| {r.name} | {r.score:.3f} ({r.rows} rows) | {r.loss:.3f} | {r.control_words()} "
                     f"| {'yes' if r.eligible else 'no'} | {t_test:.3f} | {c_test:+.3f} |")
    # Eligible candidates rank first: where the first is not, none kept the control, and none is named.
    chosen = f"**{ranked[0].name}**" if ranked[0].eligible else "none (no candidate keeps the control within 2 se of no fine-tune)"
    text = (f"Chosen on dev rows: {chosen} (seeds {', '.join(seeds)}; rule: `tuneset/evaluate/choose.py`)\n\n"
            + "\n".join(lines) + "\n")
    (export / "recommended.md").write_text(text)
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path, help="an export folder (examples.parquet), e.g. benchmarks/results/bench_seeds")
    print(recommend(parser.parse_args().export))
