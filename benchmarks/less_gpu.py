"""LESS on a GPU: the reference path vs the fast path, on the same rows, in one run.

    python benchmarks/less_gpu.py export --shared ../shared --work-dir <wd> --bundle .gpu/less   # where the store is
    python benchmarks/less_gpu.py run --bundle .gpu/less [--out results.json]                   # on the GPU

A lent GPU machine has no model hub and no copy of the artifact store, so `export` writes what the
run needs: SmolLM2-135M's config, the first `--rows` rows of pool_small (after exact dedup) as token
ids, and the warm-up checkpoints of recipes/bench-less.yaml (LoRA on the last 4 layers) and of the
all-layer warm-up (adapters and Adam moments, cast to bf16 to travel light). The run builds the
model from its config with random weights: time and memory depend on shapes, not values.

It calls the functions the gradient datastore calls (`fast_chunk`, `reference_chunk`), with every
checkpoint, and reports rows/s, peak GPU memory and the mean cosine between the fast path's
features (with the reference's Gaussian projection) and the reference path's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def export(args) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from less import ALL_LAYERS, prepared  # benchmarks/less.py: the same recipe, rows and warm-ups

    from tuneset.models.lm import encode
    from tuneset.models.loading import load_lm
    from tuneset.selectors.less import checkpoints

    args.only, args.out = [], None
    bundle = args.bundle
    shutil.rmtree(bundle, ignore_errors=True)
    for label, extra in [("last_4_layers", []), ("all_layers", [ALL_LAYERS])]:
        rec, rows, params, warm = prepared(args, *extra)
        for folder in checkpoints(warm):
            dst = bundle / label / folder.name
            shutil.copytree(folder / "adapter", dst / "adapter")
            _cast_bf16(folder / "adam.safetensors", dst / "adam.safetensors")
            _cast_bf16(dst / "adapter" / "adapter_model.safetensors", dst / "adapter" / "adapter_model.safetensors")
            shutil.copy(folder / "state.json", dst / "state.json")
    lm = load_lm(rec.model.name, "cpu")
    lm.model.config.save_pretrained(bundle / "model")
    frame = rows.read().head(args.rows)
    enc = encode(lm.tokenizer, frame["instruction"].to_list(), frame["response"].to_list(), rec.model.max_length)
    meta = {"pad_id": lm.tokenizer.pad_token_id, "rows": [[e.ids, e.n_prompt] for e in enc],
            "dim": params.dim, "seed": params.seed}
    (bundle / "rows.json").write_text(json.dumps(meta))
    print(bundle, sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file()) // 2**20, "MiB")


def _cast_bf16(src: Path, dst: Path) -> None:
    from safetensors.torch import load_file, save_file

    save_file({k: v.to(torch.bfloat16) for k, v in load_file(str(src)).items()}, str(dst))


def _timed(fn, device: torch.device):
    """(result, seconds, peak device memory above what was allocated before, MiB; 0 off CUDA)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else 0
    t = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t, (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else 0.0


def run(args) -> None:
    from tuneset.models.lm import Encoded

    bundle, device, dtype = args.bundle, torch.device(args.device), getattr(torch, args.dtype)
    meta = json.loads((bundle / "rows.json").read_text())
    enc = [Encoded(ids, n) for ids, n in meta["rows"]]
    res = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__, "dtype": args.dtype, "rows": len(enc),
           "tokens": sum(len(e.ids) for e in enc), "model": "SmolLM2-135M shapes, random weights"}
    for label in args.settings:
        res[label] = measure(args, sorted((bundle / label).glob("epoch-*"), key=lambda p: int(p.name.split("-")[1])),
                             enc, meta, device, dtype)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)


def measure(args, folders: list[Path], enc, meta: dict, device: torch.device, dtype: torch.dtype) -> dict:
    """Every arm on the same rows under every checkpoint of one warm-up."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from tuneset.models.grads import (
        CheckpointState,
        CountSketch,
        GaussianProjector,
        adam_transform,
        fast_chunk,
        load_trainable,
        lora_factors,
        reference_chunk,
    )

    pad = meta["pad_id"]
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.bundle / "model"), dtype=dtype).to(device)
    model = load_trainable(base, folders[0] / "adapter")
    factors = lora_factors(model)
    names, dim_in = [n for n, _ in factors], sum(mod.weight.numel() for _, mod in factors)
    weights = [load_peft_weights(str(f / "adapter"), device="cpu") for f in folders]
    states = [CheckpointState(w, adam_transform(f, names)) for w, f in zip(weights, folders)]
    gauss, sketch = GaussianProjector(dim_in, meta["dim"], meta["seed"]), CountSketch(dim_in, meta["dim"], meta["seed"])

    def reference(rows):
        out = []
        for w, st in zip(weights, states):  # LESS's order: checkpoint by checkpoint, row by row
            set_peft_model_state_dict(model, w)
            out.append(reference_chunk(model, rows, pad, gauss, st.transform))
        return out

    arms = {"reference": reference,
            "fast_gaussian": lambda rows: fast_chunk(model, rows, pad, gauss, states, args.batch_tokens),
            "fast_countsketch": lambda rows: fast_chunk(model, rows, pad, sketch, states, args.batch_tokens),
            "fast_gaussian_big_batch": lambda rows: fast_chunk(model, rows, pad, gauss, states, args.big_batch_tokens)}
    out, feats = {"D": dim_in, "checkpoints": len(folders)}, {}
    for name, fn in arms.items():
        fn(enc[:8])  # warm-up: CUDA context, kernels, allocator
        feats[name], seconds, peak = _timed(lambda: fn(enc), device)
        out[name] = {"seconds": round(seconds, 3), "rows_per_s": round(len(enc) / seconds, 2), "peak_mib": round(peak)}
        print(folders[0].parent.name, name, out[name], flush=True)
    for name in arms:
        out[name]["speedup"] = round(out["reference"]["seconds"] / out[name]["seconds"], 2)
    # Same rows, same projection: the fast features should be the reference's (worst checkpoint's mean cos).
    cos = [float((torch.from_numpy(a).float() * torch.from_numpy(b).float()).sum(1).mean())
           for a, b in zip(feats["fast_gaussian"], feats["reference"])]
    out["mean_cos_fast_gaussian_vs_reference"] = round(min(cos), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export")
    ex.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ex.add_argument("--work-dir", type=Path, default=ROOT / ".tuneset" / "bench")
    ex.add_argument("--bundle", type=Path, required=True)
    ex.add_argument("--rows", type=int, default=256)
    rn = sub.add_parser("run")
    rn.add_argument("--bundle", type=Path, required=True)
    rn.add_argument("--out", type=Path)
    rn.add_argument("--settings", nargs="+", default=["last_4_layers", "all_layers"], choices=["last_4_layers", "all_layers"])
    rn.add_argument("--device", default="cuda")  # cpu: a dry run of the script, not a measurement
    rn.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    rn.add_argument("--batch-tokens", type=int, default=512)  # the CPU default
    rn.add_argument("--big-batch-tokens", type=int, default=8192)
    args = ap.parse_args()
    if args.cmd == "export":
        args.work_dir = args.work_dir.resolve()
        if not (args.shared / "bench" / "tasks.json").exists():
            print(f"skipped: no benchmark at {args.shared / 'bench'}")
            return
        return export(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("less_gpu.py run needs a CUDA GPU (--device cpu for a dry run)")
    run(args)


if __name__ == "__main__":
    main()
