"""Peak memory of a 300-row LoRA fine-tune of the default model (issue 14, item 9: once 7.5 GB RSS),
and where it goes.

    OMP_NUM_THREADS=1 python benchmarks/finetune_memory.py [--shared ../shared] [--rows 300]
        [--caps 2048 512] [--repeats 1]

Each run is a fresh child process running the product's `tuneset.finetune.sft.train` with the
recipe defaults (LoRA r16 on q/k/v/o, batch 8, max_length 256, `--epochs`, default 1: memory per
step does not grow with epochs) and `micro_batch_tokens` set to each of `--caps` in turn (2048 =
8 x 256: every batch in one piece, as before the cap existed), caps alternated, `--repeats` times,
on `--rows` rows: the bench's pool_small (seed-0 sample) where
`--shared` has it, else the shipped demo pool. A thread in the child samples VmRSS every 20 ms; the
child reports its VmRSS after importing, after loading the model, after wrapping it with LoRA and
after training, and its VmHWM (the kernel's peak). Parameter, trainable and Adam-state bytes are
counted from the model. Time is CPU time (`time.process_time`: with one torch thread, the work
done, far less sensitive than wall time to other jobs on the cores). Writes benchmarks/results/finetune_memory.json (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_POOL = ROOT / "tuneset" / "demo" / "data" / "pool.jsonl"


def status_mib(field: str) -> float:
    """A /proc/self/status memory field (VmRSS, VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def sample_rows(path: Path, n: int, seed: int = 0) -> list[dict]:
    rows = [json.loads(line) for line in path.open()]
    return random.Random(seed).sample(rows, min(n, len(rows)))


def child(rows_path: Path, epochs: float, cap: int) -> dict:
    """One fine-tune in this process, measured; returns the figures."""
    samples: list[float] = []
    stop = threading.Event()

    def sampler() -> None:
        while not stop.is_set():
            samples.append(status_mib("VmRSS"))
            time.sleep(0.02)

    threading.Thread(target=sampler, daemon=True).start()
    import polars as pl
    import torch

    from tuneset.finetune import sft
    from tuneset.models.loading import SMOLLM2
    from tuneset.recipe import FinetuneConfig

    marks = {"imported": status_mib("VmRSS")}
    load_lm, wrap_lora = sft.load_lm, sft.wrap_lora
    counts: dict[str, int] = {}

    def measured_load(*a, **k):
        lm = load_lm(*a, **k)
        marks["model_loaded"] = status_mib("VmRSS")
        counts["param_bytes"] = sum(p.numel() * p.element_size() for p in lm.model.parameters())
        return lm

    def measured_wrap(model, cfg):
        wrapped = wrap_lora(model, cfg)
        marks["lora_wrapped"] = status_mib("VmRSS")
        trainable = [p for p in wrapped.parameters() if p.requires_grad]
        counts["trainable_bytes"] = sum(p.numel() * p.element_size() for p in trainable)
        counts["adam_state_bytes"] = 2 * counts["trainable_bytes"]
        return wrapped

    sft.load_lm, sft.wrap_lora = measured_load, measured_wrap
    rows = pl.read_ndjson(rows_path).select("instruction", "response")
    cfg = FinetuneConfig(epochs=epochs, micro_batch_tokens=cap)
    with tempfile.TemporaryDirectory() as out:
        t0, c0 = time.perf_counter(), time.process_time()
        result = sft.train(rows, cfg, SMOLLM2, Path(out), max_length=256, device="cpu")
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    marks["trained"] = status_mib("VmRSS")
    stop.set()
    peak = status_mib("VmHWM")
    return {"micro_batch_tokens": cap, "rss_mib": {k: round(v) for k, v in marks.items()}, "peak_rss_mib": round(peak),
            "peak_sampled_mib": round(max(samples)), "bytes": counts, "steps": result.steps,
            "rows": result.rows, "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1), "torch_threads": torch.get_num_threads(),
            "real_tokens": result.real_tokens, "padded_tokens": result.padded_tokens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--caps", type=int, nargs="+", default=[2048, 512])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--goal-mib", type=float, default=2000 / 1.048576)  # 2 GB
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "finetune_memory.json")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.epochs, args.caps[0])))
        return
    pool = args.shared / "bench" / "pool_small.jsonl"
    source = pool if pool.exists() else DEMO_POOL
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        rows_path = Path(tmp) / "rows.jsonl"
        rows_path.write_text("".join(json.dumps(r) + "\n" for r in sample_rows(source, args.rows)))
        for i in range(args.repeats):
            for cap in args.caps:
                out = subprocess.run([sys.executable, __file__, "--child", str(rows_path), "--epochs", str(args.epochs),
                                      "--caps", str(cap)], capture_output=True, text=True, check=True, env=os.environ)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"repeat {i + 1}/{args.repeats}, cap {cap}: peak {runs[-1]['peak_rss_mib']} MiB, "
                      f"{runs[-1]['cpu_seconds']} CPU s, {runs[-1]['rss_mib']}", flush=True)
    by_cap = {}
    for cap in args.caps:
        rs = [r for r in runs if r["micro_batch_tokens"] == cap]
        peaks, secs = [r["peak_rss_mib"] for r in rs], [r["cpu_seconds"] for r in rs]
        by_cap[str(cap)] = {"peak_rss_mib_min": min(peaks), "peak_rss_mib_median": statistics.median(peaks),
                            "cpu_seconds_min": min(secs), "cpu_seconds_median": statistics.median(secs),
                            "goal_met": max(peaks) <= args.goal_mib}
    summary = {"rows_from": str(source.relative_to(source.parents[1])), "rows": args.rows, "epochs": args.epochs,
               "goal_mib": round(args.goal_mib), "torch_threads": runs[0]["torch_threads"], "by_cap": by_cap,
               "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
