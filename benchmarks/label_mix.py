"""Why an arm's score on a classification task swings with its seed: the label mix of each seed's
draw beside that seed's test score and most common answer.

    python benchmarks/label_mix.py [--export benchmarks/results/bench_seeds] [--task sst2] [--work-dir <dir>]
    python benchmarks/label_mix.py --order [...]

With --order, the full-pool arm instead (the same rows at every seed): per seed, the labels of the
task's rows among the last third of the fine-tune's steps, in the order the fine-tune's own
batching (`grouped_batches`, seeded by the seed) feeds them, and their learning-rate-weighted share
over the whole run. A recency effect would show as the late label mix leading the answers.

Curates pool_small with recipes/bench.yaml (the rows every arm picks among), draws the `random`
arm's budget for each seed of the export with the product's `random` selector, and counts the
drawn rows of the task's own pool source by label: as given, and as they truly are
(pool_truth.jsonl, scoring only: a label flip counts under its clean label). Each seed's test
score and most common answer come from the export, so no model runs here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl
from bench_args import ROOT, export_examples, parse_bench_args


def draw(pool: pl.DataFrame, candidates: pl.Series, seed: int, budget: int, ctx) -> pl.DataFrame:
    """The `random` arm's rows at `seed`: the pool scored by the selector, the `budget` highest
    among the curated candidates (what a single-selector policy keeps)."""
    from tuneset.selectors import make_selector

    scores = make_selector("random", {"seed": seed}).fit(ctx).score(pool.select("id", "instruction", "response"))
    return (pool.join(scores.select("id", "score"), on="id").filter(pl.col("id").is_in(candidates.implode()))
            .sort(["score", "id"], descending=[True, False]).head(budget))


def seed_outcomes(export: Path, strategy: str, task: str) -> list[dict]:
    """Per seed, in seed order: the arm's test score, and its most common answer with that answer's share."""
    from tuneset.evaluate.leaderboard import top_answer

    ex = export_examples(export).filter((pl.col("strategy") == strategy) & (pl.col("task") == task)
                                        & (pl.col("split") == "test"))
    if ex.is_empty():
        raise SystemExit(f"{export}: no test rows for strategy '{strategy}' on task '{task}'")
    out = []
    for (seed,), g in sorted(ex.group_by("seed"), key=lambda kv: int(kv[0][0])):
        answer, share = top_answer(g) or ("", float("nan"))
        out.append({"seed": seed, "test": g["score"].mean(), "prediction": answer, "share": share})
    return out


def order_mix(rows: pl.DataFrame, task: str, seed: int, recipe) -> tuple[dict[str, int], str, float]:
    """The full-pool fine-tune's step order at `seed` (as `tuneset.finetune.sft.train` builds it,
    for 1 epoch at the recipe's batch size and warm-up): the task's labels among the last third
    of the steps, and the positive-label share weighted by each step's learning rate."""
    import math
    import random

    import torch
    from transformers import get_cosine_schedule_with_warmup

    from tuneset.finetune.sft import grouped_batches
    from tuneset.models.lm import encode, format_prompts, resolve_format
    from tuneset.models.loading import cached_lm

    cfg = recipe.finetune
    lm = cached_lm(recipe.model.name, "cpu")
    fmt = resolve_format(lm.tokenizer, "chat")
    prompts, sep = format_prompts(lm.tokenizer, rows["instruction"].to_list(), fmt)
    lengths = [len(e.ids) for e in encode(lm.tokenizer, prompts, rows["response"].to_list(), recipe.model.max_length,
                                          add_eos=True, sep=sep)]
    plan = grouped_batches(lengths, cfg.batch_size, random.Random(seed))  # one epoch, as the full arm trains
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = get_cosine_schedule_with_warmup(opt, round(cfg.warmup_ratio * len(plan)), len(plan))
    lrs = []
    for _ in plan:
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    src, resp = rows["source"].to_list(), rows["response"].to_list()
    late: dict[str, int] = {}
    weighted: dict[str, float] = {}
    for step, batch in enumerate(plan):
        for i in batch:
            if src[i] == task:
                weighted[resp[i]] = weighted.get(resp[i], 0.0) + lrs[step]
                if step >= math.ceil(2 * len(plan) / 3):
                    late[resp[i]] = late.get(resp[i], 0) + 1
    top = max(weighted, key=weighted.get)
    return dict(sorted(late.items())), top, weighted[top] / sum(weighted.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=ROOT / "benchmarks" / "results" / "bench_seeds")
    ap.add_argument("--task", default="sst2", help="a target task whose pool source has the same name")
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--order", action="store_true", help="the full-pool arm's training order instead of random's draws")
    args, bench = parse_bench_args(ap)
    if bench is None:
        return
    from tuneset.runtime import configure

    configure()
    from tuneset.flows.api import prefect_api
    from tuneset.flows.context import run_context
    from tuneset.flows.curate import curate_flow
    from tuneset.recipe import load_recipe

    recipe = load_recipe(ROOT / "recipes" / "bench.yaml", [
        f"pool={(bench / 'pool_small.jsonl').resolve()}", f"tasks={(bench / 'tasks.json').resolve()}",
        f"work_dir={args.work_dir.resolve()}"])
    with prefect_api():  # a server that dies with this script, even on kill -9
        res = curate_flow(recipe)
    pool, candidates = res.pool.rows.read(), res.rows.read()["id"]
    truth = {r["id"]: r for r in map(json.loads, (bench / "pool_truth.jsonl").open())}
    outcomes = seed_outcomes(args.export, "random", args.task)
    if args.order:
        print_order(args, res.rows.read(), recipe)
        return
    ctx = run_context(recipe).scoring()
    print(f"random @ {args.budget} on {args.task} ({args.export.relative_to(ROOT)}; {candidates.len()} curated rows)\n")
    print(f"| seed | {args.task} rows drawn | labels as given | true labels | label flips | test score | "
          "most common answer (share of test rows) |")
    print("|---|---|---|---|---|---|---|")
    for o in outcomes:
        rows = draw(pool, candidates, int(o["seed"]), args.budget, ctx).filter(pl.col("source") == args.task)
        given = rows["response"].value_counts().sort("response")
        true = [truth[i]["clean_response"] if truth[i]["noise"] == "label_flip" else r
                for i, r in zip(rows["id"], rows["response"])]
        flips = sum(truth[i]["noise"] == "label_flip" for i in rows["id"])
        counts = pl.Series(true).value_counts().sort(pl.first())
        fmt = lambda c: ", ".join(f"{k} {v}" for k, v in c.iter_rows())  # noqa: E731
        print(f"| {o['seed']} | {rows.height} | {fmt(given)} | {fmt(counts)} | {flips} | {o['test']:.3f} | "
              f"{o['prediction']} {o['share']:.3f} |")


def print_order(args, rows: pl.DataFrame, recipe) -> None:
    mine = rows.filter(pl.col("source") == args.task)["response"].value_counts().sort("response")
    print(f"full pool on {args.task} ({args.export.relative_to(ROOT)}; {rows.height} curated rows, "
          f"{', '.join(f'{k} {v}' for k, v in mine.iter_rows())} of them {args.task}, labels as given)\n")
    print(f"| seed | {args.task} labels in the last third of steps | lr-weighted label share, whole run | "
          "test score | most common answer (share of test rows) |")
    print("|---|---|---|---|---|")
    for o in seed_outcomes(args.export, "full", args.task):
        late, top, share = order_mix(rows, args.task, int(o["seed"]), recipe)
        print(f"| {o['seed']} | {', '.join(f'{k} {v}' for k, v in late.items())} | {top} {share:.3f} | {o['test']:.3f} | "
              f"{o['prediction']} {o['share']:.3f} |")


if __name__ == "__main__":
    main()
