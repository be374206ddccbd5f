"""LM scoring against a raw forward of the same rows and tokens (issue 17): `perplexity`, `ifd` and
`confidence` through the product's code path, each timed against a plain batched forward of the
very token sequences it feeds the model, in one run, modes alternated.

    OMP_NUM_THREADS=1 python benchmarks/lm_scoring.py --shared ../shared [--rows 64] [--repeats 3]

- Rows: `--rows` rows drawn from the bench pool (seed 0); model: the default `smollm2`
  (SmolLM2-135M-Instruct, fp32 on CPU), loaded once (`cached_lm`, the copy selectors score with);
  the recipe defaults max_length 256 and max_batch_tokens 4096.
- Token sequences, encoded as the product encodes them: `cond` (instruction + response: the
  perplexity / IFD pass), `cond_eos` (the same with EOS: confidence's likelihood), `free` (the
  response alone after a start token: IFD's and confidence's second pass), `reflection`
  (confidence's Yes/No question).
- `raw:<seqs>`: a plain `model(input_ids, attention_mask)` over those sequences, batched exactly as
  the product batches them (`length_batches` under the token budget, `pad_batch`), nothing else;
  `decoder:cond` the same without the vocabulary projection (a floor no loss pass can beat);
  `kernel:cond` is `encode` + `response_nll` (the loss kernel without the per-row cache).
- Selector modes: `make_selector(...).fit(ctx).score(rows)` on a ScoringContext with a fresh
  store each time (nothing cached between runs): `perplexity`, `ifd`, `perplexity+ifd` (one
  context: IFD reuses perplexity's pass), `confidence[likelihood]`, `confidence[reflection]` and
  after them (`--full-confidence-runs`, not alternated) `confidence` with its default components
  (+ relevance, consistency: sampled generation, most of its time).
- Every other mode runs once per repeat, in the same order, `--repeats` times; min and median.
  A forward pre-hook on the decoder counts what each mode feeds the model: real tokens, and passes
  (real tokens / those of one `cond` pass). The ratio to raw forward is the raw forward's time over
  the sequences a mode forwards (its `raw:` sets, summed) divided by the mode's time: the mode's
  tokens/s as a share of the raw forward's on the same tokens. Generation has no raw counterpart.
  Also on CPU time (`time.process_time`: one torch thread, so the work done, far less sensitive
  to other jobs on the cores than wall time), and per repeat (each mode against the raw forwards
  of the same repeat).
Writes benchmarks/results/lm_scoring.json (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl
import torch
from bench_args import parse_bench_args

from tuneset.models.lm import Encoded, encode, length_batches, pad_batch, response_nll
from tuneset.models.loading import SMOLLM2, cached_lm
from tuneset.selectors import make_selector
from tuneset.selectors.confidence import REFLECTION_TEMPLATE
from tuneset.selectors.context import ScoringContext
from tuneset.store import ArtifactStore

ROOT = Path(__file__).resolve().parent.parent
TASKS = ["banking77", "sst2", "arc_easy"]
MAX_LENGTH, MAX_TOKENS = 256, 4096  # the recipe's defaults (model.max_length, model.max_batch_tokens)

# Which raw sequence sets each selector mode forwards (its raw-forward equivalent).
SELECTOR_MODES: dict[str, tuple[list[tuple[str, dict]], list[str]]] = {
    "perplexity": ([("perplexity", {})], ["cond"]),
    "ifd": ([("ifd", {})], ["cond", "free"]),
    "perplexity+ifd": ([("perplexity", {}), ("ifd", {})], ["cond", "free"]),
    "confidence[likelihood]": ([("confidence", {"components": ["likelihood"]})], ["cond_eos", "free"]),
    "confidence[reflection]": ([("confidence", {"components": ["reflection"]})], ["reflection"]),
}
# confidence with its default components (+ relevance: MiniLM; + consistency: sampled generation),
# run after the alternation (`--full-confidence-runs`): generation is most of its time.
FULL_CONFIDENCE = "confidence (default components)"


class Counter:
    """Counts what reaches the decoder: calls, real tokens (attention mask over the new positions)
    and padded tokens."""

    def __init__(self, decoder: torch.nn.Module):
        self.calls = self.real = self.padded = 0
        decoder.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return
        mask = kwargs.get("attention_mask")
        self.calls += 1
        self.padded += ids.numel()
        self.real += int(mask[:, -ids.shape[1]:].sum()) if mask is not None else ids.numel()

    def snapshot(self) -> tuple[int, int, int]:
        return self.calls, self.real, self.padded


def sequences(tok, rows: pl.DataFrame) -> dict[str, list[Encoded]]:
    """The token sequences each LM pass of the selectors forwards, encoded as the product does."""
    ins, resp = rows["instruction"].to_list(), rows["response"].to_list()
    prompts = [REFLECTION_TEMPLATE.format(instruction=i, response=r) for i, r in zip(ins, resp)]
    refl = [e[-MAX_LENGTH:] for e in tok(prompts, add_special_tokens=False)["input_ids"]]  # as next_token_logprobs
    return {
        "cond": encode(tok, ins, resp, MAX_LENGTH),
        "cond_eos": encode(tok, ins, resp, MAX_LENGTH, add_eos=True),
        "free": encode(tok, [None] * len(resp), resp, MAX_LENGTH),
        "reflection": [Encoded(ids=e, n_prompt=len(e)) for e in refl],
    }


@torch.inference_mode()
def raw_forward(model, seqs: list[Encoded], pad_id: int, decoder_only: bool = False) -> None:
    """A plain batched forward of `seqs` under the product's batching and token budget."""
    dev = next(model.parameters()).device
    body = model.get_decoder() if decoder_only else model
    for batch in length_batches([len(e.ids) for e in seqs], MAX_TOKENS):
        ids, mask, _ = pad_batch([seqs[i] for i in batch], pad_id, dev)
        body(input_ids=ids, attention_mask=mask)


def run_selectors(specs: list[tuple[str, dict]], rows: pl.DataFrame, targets: dict[str, pl.DataFrame], scratch: Path) -> None:
    """The selectors on a context with a fresh store: nothing cached from another run."""
    with tempfile.TemporaryDirectory(dir=scratch) as d:
        ctx = ScoringContext(store=ArtifactStore(Path(d)), model=SMOLLM2, device="cpu", targets=targets,
                             max_length=MAX_LENGTH, max_batch_tokens=MAX_TOKENS)
        for name, params in specs:
            make_selector(name, params).fit(ctx).score(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--full-confidence-runs", type=int, default=1)
    ap.add_argument("--modes", default="", help="comma-separated subset of the modes (default: all)")
    ap.add_argument("--note", default="", help="the machine's load during the run, for the record")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lm_scoring.json")
    args, bench = parse_bench_args(ap)
    if bench is None:
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rows = pl.read_ndjson(bench / "pool.jsonl").sample(n=args.rows, seed=0)
    targets = {t: pl.read_ndjson(bench / "targets" / t / "dev.jsonl") for t in TASKS}
    lm = cached_lm(SMOLLM2, "cpu", None)  # the selectors' call, argument for argument: lru_cache keys on the call
    model, tok = lm.model, lm.tokenizer
    seqs = sequences(tok, rows)
    counter = Counter(model.get_decoder())
    scratch = args.work_dir / "lm_scoring"
    scratch.mkdir(parents=True, exist_ok=True)

    modes: dict[str, Any] = {f"raw:{k}": (lambda k=k: raw_forward(model, seqs[k], tok.pad_token_id)) for k in seqs}
    modes["decoder:cond"] = lambda: raw_forward(model, seqs["cond"], tok.pad_token_id, decoder_only=True)
    modes["kernel:cond"] = lambda: response_nll(model, encode(tok, rows["instruction"].to_list(), rows["response"].to_list(), MAX_LENGTH),
                                                tok.pad_token_id, MAX_TOKENS)
    for name, (specs, _) in SELECTOR_MODES.items():
        modes[name] = lambda specs=specs: run_selectors(specs, rows, targets, scratch)
    if args.modes:
        keep = set(args.modes.split(","))
        modes = {k: v for k, v in modes.items() if k in keep or k.startswith("raw:")}

    # Warm-up (untimed): model, tokenizer, MiniLM for confidence's relevance, allocator.
    raw_forward(model, seqs["cond"][:8], tok.pad_token_id)
    run_selectors([("confidence", {"components": ["relevance"]})], rows.head(4), targets, scratch)
    times: dict[str, list[float]] = {k: [] for k in modes}
    cpu: dict[str, list[float]] = {k: [] for k in modes}
    fed: dict[str, tuple[int, int, int]] = {}

    def timed(name: str, fn) -> None:
        before = counter.snapshot()
        t, c = time.perf_counter(), time.process_time()
        fn()
        times.setdefault(name, []).append(time.perf_counter() - t)
        cpu.setdefault(name, []).append(time.process_time() - c)
        fed[name] = tuple(a - b for a, b in zip(counter.snapshot(), before))  # type: ignore[assignment]
        print(f"{name}: {times[name][-1]:.2f} s wall, {cpu[name][-1]:.2f} s CPU, {fed[name][1]} real tokens", flush=True)

    for rep in range(args.repeats):
        for name, fn in modes.items():
            print(f"repeat {rep} ", end="")
            timed(name, fn)
    for _ in range(args.full_confidence_runs):
        timed(FULL_CONFIDENCE, lambda: run_selectors([("confidence", {})], rows, targets, scratch))

    cond_tokens = sum(len(e.ids) for e in seqs["cond"])
    result: dict[str, Any] = {
        "machine": f"this machine ({os.cpu_count()} cores), torch threads {torch.get_num_threads()}",
        "note": args.note, "model": lm.identity, "dtype": str(next(model.parameters()).dtype), "rows": rows.height,
        "max_length": MAX_LENGTH, "max_batch_tokens": MAX_TOKENS, "repeats": args.repeats,
        "tokens_per_sequence_set": {k: sum(len(e.ids) for e in v) for k, v in seqs.items()}, "modes": {},
    }
    for name, s in times.items():
        calls, real, padded = fed[name]
        c = cpu[name]
        row: dict[str, Any] = {"min_s": round(min(s), 3), "median_s": round(statistics.median(s), 3), "runs_s": [round(x, 3) for x in s],
                               "cpu_min_s": round(min(c), 3), "cpu_median_s": round(statistics.median(c), 3), "cpu_runs_s": [round(x, 3) for x in c],
                               "decoder_calls": calls, "real_tokens_fed": real, "padded_tokens_fed": padded,
                               "passes": round(real / cond_tokens, 2), "rows_per_s_best": round(rows.height / min(s), 2),
                               "real_tokens_per_s_best": round(real / min(s), 1)}
        sets = SELECTOR_MODES[name][1] if name in SELECTOR_MODES else [name.split(":")[1]] if name.startswith(("kernel", "decoder")) else []
        if sets and all(f"raw:{k}" in times for k in sets):
            raw_min = sum(min(times[f"raw:{k}"]) for k in sets)
            raw_med = sum(statistics.median(times[f"raw:{k}"]) for k in sets)
            raw_cpu = sum(min(cpu[f"raw:{k}"]) for k in sets)
            paired = [sum(times[f"raw:{k}"][r] for k in sets) / s[r] for r in range(len(s))]
            row.update({"raw_equivalent": [f"raw:{k}" for k in sets], "raw_min_s": round(raw_min, 3),
                        "ratio_to_raw_min": round(raw_min / min(s), 3), "ratio_to_raw_median": round(raw_med / statistics.median(s), 3),
                        "ratio_to_raw_cpu_min": round(raw_cpu / min(c), 3),
                        "ratio_to_raw_cpu_median": round(sum(statistics.median(cpu[f"raw:{k}"]) for k in sets) / statistics.median(c), 3),
                        "ratio_to_raw_same_repeat": [round(x, 3) for x in paired]})
        result["modes"][name] = row
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
