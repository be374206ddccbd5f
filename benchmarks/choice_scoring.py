"""Multiple-choice scoring: each question's prompt run once and shared by its choices (the
evaluator's path, `shared_prompt_nll`) vs every (prompt, choice) pair run on its own
(`response_nll`), on the same test rows, model, prompt format and token budget.

    python benchmarks/choice_scoring.py --task arc_easy --rows 100 --repeats 3

Modes alternate within each repeat to even out load; reports min and median seconds of each, their
ratio, and the largest difference between the two paths' summed log-likelihoods and choices.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from bench_args import ROOT, parse_bench_args


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="arc_easy")
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=None, help="default: the recipe default (SmolLM2-135M-Instruct)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "choice_scoring.json")
    args, bench = parse_bench_args(ap)
    if bench is None:
        return
    from tuneset.data import load_rows
    from tuneset.models.lm import encode, format_prompts, response_nll, shared_prompt_nll
    from tuneset.models.loading import load_lm
    from tuneset.recipe import ModelConfig

    model = args.model or ModelConfig().name
    lm = load_lm(model, "cpu")
    rows = load_rows(bench / "targets" / args.task / "test.jsonl").rows.head(args.rows)
    prompts, sep = format_prompts(lm.tokenizer, rows["instruction"].to_list(), "chat")
    choices = rows["choices"].to_list()
    tok, pad = lm.tokenizer, lm.tokenizer.pad_token_id
    groups = [encode(tok, [p] * len(cs), cs, 256, sep=sep) for p, cs in zip(prompts, choices)]
    flat = [e for g in groups for e in g]
    times: dict[str, list[float]] = {"pairs": [], "shared": []}
    out = {}
    for _ in range(args.repeats):
        for mode in ("pairs", "shared"):
            t = time.perf_counter()
            with torch.inference_mode():
                out[mode] = (response_nll(lm.model, flat, pad, 4096)[0] if mode == "pairs"
                             else shared_prompt_nll(lm.model, groups, pad, 4096)[0])
            times[mode].append(time.perf_counter() - t)
    picks = {m: [int(np.argmin(out[m][k:k + len(cs)])) for k, cs in zip(np.cumsum([0] + [len(c) for c in choices[:-1]]), choices)]
             for m in out}
    result = {
        "task": args.task, "rows": rows.height, "pairs": len(flat), "model": model, "prompt_format": "chat",
        "torch_threads": torch.get_num_threads(), "repeats": args.repeats,
        "tokens_pairs": sum(len(e.ids) for e in flat),
        "tokens_shared": sum(g[0].n_prompt + sum(len(e.ids) - e.n_prompt for e in g) for g in groups),
        "seconds": {m: {"min": round(min(v), 2), "median": round(statistics.median(v), 2), "all": [round(x, 2) for x in v]}
                    for m, v in times.items()},
        "speedup_min": round(min(times["pairs"]) / min(times["shared"]), 2),
        "speedup_median": round(statistics.median(times["pairs"]) / statistics.median(times["shared"]), 2),
        "max_abs_nll_diff": float(np.abs(out["pairs"] - out["shared"]).max()),
        "same_choice": sum(a == b for a, b in zip(picks["pairs"], picks["shared"])),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
