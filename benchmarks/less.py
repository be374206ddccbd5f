"""LESS: the fast path against LESS's own recipe (the reference path), on the shared bench.

    python benchmarks/less.py --shared ../shared --work-dir .tuneset/bench [--speed-rows 256]

Uses recipes/bench-less.yaml: pool_small after exact dedup, targets banking77 and sst2, the
warm-up that `tuneset compare recipes/bench-less.yaml` trains (trained here if missing).

- speed: build the candidate datastore for the same rows (the first `--speed-rows`, all 4 warm-up
  checkpoints) with each path, each in its own process on an empty store, so rows/s and peak
  memory are each path's own (the peak-RSS count is reset after setup: it covers model loading
  and the gradient work); also with LoRA on every layer (`--all-layers-rows`).
- memory: each path's peak memory alone (setup excluded), on `--memory-rows` rows.
- projection: exact (unprojected) gradient cosines vs CountSketch and the dense Gaussian, on
  real Adam-aware gradients: how well each keeps the cosines, and what it costs per example.
- fidelity: the fast path's top 15% of pool_small vs the reference path's (both at 8192 dims,
  all warm-up checkpoints, or the first N with --checkpoints N, which also scores the exact
  unprojected LESS score as an anchor); also the fast gradients with the reference's Gaussian
  projection, to separate the gradient computation from the projection.
- reuse: add a target task (arc_easy) to a finished datastore; only its dev gradients are computed.
- layers: LoRA on the last 4 layers vs every layer (each with its own warm-up), fast path, on the
  first `--layers-rows` rows: how much of the all-layer top 15% the cheaper setting keeps.

Writes benchmarks/results/less.json; run sections alone with --only.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "bench-less.yaml"
OUT = ROOT / "benchmarks" / "results" / "less.json"


def recipe(args, *extra: str):
    from tuneset.recipe import load_recipe

    bench = args.shared / "bench"
    return load_recipe(RECIPE, [f"work_dir={args.work_dir}", f"pool={(bench / 'pool_small.jsonl').resolve()}",
                                f"tasks={(bench / 'tasks.json').resolve()}", *extra])


def prepared(args, *extra: str):
    """(recipe, rows, selector params, warm-up folder), training the warm-up only if missing."""
    from tuneset.flows.context import run_context
    from tuneset.flows.curate import curate_flow
    from tuneset.flows.warmup import warmup_task
    from tuneset.selectors.less import LessParams

    rec = recipe(args, *extra)
    rows = curate_flow(rec).rows  # exact dedup + decontamination, as compare does
    params = LessParams.model_validate(rec.score.spec("less").params)
    warm = warmup_task.fn(run_context(rec), rows, params.warmup)
    return rec, rows, params, warm


def reset_peak_rss() -> None:
    """Restart the kernel's peak-RSS count (VmHWM), so setup before the timed part is not counted."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def speed_child(args) -> None:
    """One path on an empty store: candidate features of the first N rows under every checkpoint."""
    from tuneset.flows.context import run_context
    from tuneset.selectors.less import GradientStore, checkpoints, warmup_format

    extra = [ALL_LAYERS] if args.all_layers else []
    rec, rows, params, warm = prepared(args, *extra)
    frame = rows.read().head(args.speed_rows)
    with tempfile.TemporaryDirectory() as tmp:
        from tuneset.store import ArtifactStore

        ctx = run_context(rec).scoring(0, warm)
        model_store = ctx.store
        ctx.store = ArtifactStore(tmp)
        ctx.store.root.joinpath("models").symlink_to(model_store.root / "models")  # the converted model only
        update = {"path": "fast", "projection": "gaussian"} if args.path == "fast_gaussian" else {"path": args.path}
        store = GradientStore(ctx, params.model_copy(update=update), warmup_format(warm))
        reset_peak_rss()
        base = peak_rss_mib()
        t = time.perf_counter()
        store.features(frame, checkpoints(warm), adam=True)
        wall = time.perf_counter() - t
    print(json.dumps({"path": args.path, "rows": frame.height, "seconds": round(wall, 1),
                      "examples_per_s": round(frame.height / wall, 3), "peak_rss_mib": round(peak_rss_mib()),
                      "rss_before_mib": round(base)}))


def run_child(args, path: str, all_layers: bool = False, rows: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--shared", str(args.shared), "--work-dir", str(args.work_dir), "--child", path,
           "--speed-rows", str(rows or args.speed_rows)] + (["--all-layers"] if all_layers else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


ALL_LAYERS = "score.selectors=[{name: less, params: {tasks: [banking77, sst2], projection: countsketch, warmup: {}}}]"


def speed(args) -> dict:
    prepared(args)
    prepared(args, ALL_LAYERS)  # warm-ups trained here, so the timed children only read them
    res = {}
    for label, all_layers, n in [("last_4_layers", False, args.speed_rows), ("all_layers", True, args.all_layers_rows)]:
        ref = run_child(args, "reference", all_layers, n)
        res[label] = {"reference": ref}
        for path in ("fast", "fast_gaussian"):
            res[label][path] = run_child(args, path, all_layers, n)
            res[label][f"speedup_{path}"] = round(res[label][path]["examples_per_s"] / ref["examples_per_s"], 2)
        print(label, res[label])
    return res


def memory(args) -> dict:
    """Peak memory of each path with the setup excluded, on a few rows (the features of a chunk are
    the only thing that grows with rows, 256 x 8192 fp16 = 4 MiB)."""
    prepared(args)
    prepared(args, ALL_LAYERS)
    res = {}
    for label, all_layers in [("last_4_layers", False), ("all_layers", True)]:
        res[label] = {path: run_child(args, path, all_layers, args.memory_rows) for path in ("reference", "fast")}
        print(label, res[label])
    return res


def projection(args) -> dict:
    """Exact cosines of real Adam-aware gradients vs their projections (k = 8192)."""
    import torch

    from tuneset.models.grads import (
        CountSketch,
        GaussianProjector,
        adam_transform,
        exact_features,
        load_trainable,
        lora_factors,
    )
    from tuneset.models.lm import encode
    from tuneset.models.loading import load_lm
    from tuneset.selectors.less import checkpoints

    rec, rows, params, warm = prepared(args)
    frame = rows.read().sample(args.projection_rows, seed=0)
    lm = load_lm(rec.model.name, "cpu")
    folder = checkpoints(warm)[-1]
    model = load_trainable(lm.model, folder / "adapter")
    enc = encode(lm.tokenizer, frame["instruction"].to_list(), frame["response"].to_list(), rec.model.max_length)
    g = torch.from_numpy(exact_features(model, enc, lm.tokenizer.pad_token_id,
                                        adam_transform(folder, [n for n, _ in lora_factors(model)]), params.tokens_per_batch("cpu")))
    exact = (g @ g.T).numpy()
    iu = np.triu_indices(len(g), 1)
    out = {"rows": len(g), "dim_in": g.shape[1], "k": params.dim}
    for name, proj in [("countsketch", CountSketch(g.shape[1], params.dim, 0)), ("gaussian", GaussianProjector(g.shape[1], params.dim, 0))]:
        t = time.perf_counter()
        y = proj(g)
        secs = time.perf_counter() - t
        y = y / y.norm(dim=1, keepdim=True)
        cos = (y @ y.T).numpy()
        err = cos[iu] - exact[iu]
        out[name] = {"ms_per_example": round(1000 * secs / len(g), 2), "corr_with_exact": round(float(np.corrcoef(cos[iu], exact[iu])[0, 1]), 4),
                     "max_abs_error": round(float(np.abs(err).max()), 4), "rms_error": round(float(np.sqrt((err ** 2).mean())), 4)}
    print(out)
    return out


def top_overlap(a: np.ndarray, b: np.ndarray, frac: float = 0.15) -> float:
    k = round(frac * len(a))
    ta, tb = set(np.argsort(-a, kind="stable")[:k]), set(np.argsort(-b, kind="stable")[:k])
    return len(ta & tb) / k


def fidelity(args) -> dict:
    from scipy.stats import spearmanr

    from tuneset.flows.context import run_context
    from tuneset.selectors import make_selector

    rec, rows, params, warm = prepared(args)
    frame = rows.read()
    ctx = run_context(rec).scoring(0, warm)
    res = {"rows": frame.height, "top_k": round(0.15 * frame.height), "checkpoints": args.checkpoints or "all"}
    # fast: the default (CountSketch). fast_gaussian: the fast gradients with the reference's own
    # projection, which isolates the gradient computation from the choice of projection.
    variants = {"fast": {}, "fast_gaussian": {"projection": "gaussian"}, "reference": {"path": "reference"}}
    scores = {}
    for name, update in variants.items():
        sel = make_selector("less", {**params.model_dump(), **update}).fit(ctx)
        if args.checkpoints:  # the first N warm-up epochs only (a cheaper, partial anchor)
            sel.folders = sel.folders[: args.checkpoints]
        t = time.perf_counter()
        scores[name] = sel.score(frame)
        res[name] = {"wall_s": round(time.perf_counter() - t, 1), "computed": sel.store.computed,
                     "compute_s": {k: round(v, 1) for k, v in sel.store.seconds.items()}}
        print(name, res[name])
    vals = {k: v["score"].to_numpy() for k, v in scores.items()}
    if args.checkpoints:  # the unprojected score as an anchor: which projection is closer to it?
        cache = args.work_dir / f"less_exact_scores_{args.checkpoints}.npy"
        t = time.perf_counter()
        if not cache.exists():
            np.save(cache, exact_scores(rec, ctx, frame, sel.folders, params))
        vals["exact"] = np.load(cache)
        res["exact_s"] = round(time.perf_counter() - t, 1)
        top = np.sort(vals["exact"])[::-1]
        res["exact_score_gap_rank_250_to_350"] = round(float(top[249] - top[349]), 5)
    names = list(vals)
    res["top15_overlap"] = {f"{a}_vs_{b}": round(top_overlap(vals[a], vals[b]), 4) for i, a in enumerate(names) for b in names[i + 1:]}
    res["spearman"] = {f"{a}_vs_{b}": round(float(spearmanr(vals[a], vals[b]).statistic), 4) for i, a in enumerate(names) for b in names[i + 1:]}
    for task in ("banking77", "sst2"):
        a, b = scores["fast"][f"vs_{task}"].to_numpy(), scores["reference"][f"vs_{task}"].to_numpy()
        res[f"top15_overlap_fast_vs_reference_{task}"] = round(top_overlap(a, b), 4)
    src = frame["source"].to_numpy()
    top = np.argsort(-vals["fast"], kind="stable")[: res["top_k"]]
    res["fast_top15_sources"] = {k: int(v) for k, v in zip(*np.unique(src[top], return_counts=True))}
    print(res)
    return res


def exact_scores(rec, ctx, frame, folders, params) -> np.ndarray:
    """LESS's score without any projection: mean over dev rows of cos(g, t) is g_hat . mean(t_hat),
    so one pass over the candidates with the full gradients gives it exactly."""
    from tuneset.models.grads import adam_transform, exact_features, load_trainable, lora_factors
    from tuneset.models.lm import encode
    from tuneset.models.loading import load_lm
    from tuneset.selectors.less import checkpoint_weights

    enc = lambda tok, f: encode(tok, f["instruction"].to_list(), f["response"].to_list(), rec.model.max_length)  # noqa: E731
    weights = checkpoint_weights(folders)
    per_task = {t: np.zeros(frame.height) for t in params.tasks}
    for w, folder in zip(weights, folders):
        lm = load_lm(rec.model.name, "cpu")
        model = load_trainable(lm.model, folder / "adapter")
        pad = lm.tokenizer.pad_token_id
        cand = exact_features(model, enc(lm.tokenizer, frame), pad, adam_transform(folder, [n for n, _ in lora_factors(model)]),
                              params.tokens_per_batch("cpu"))
        for t in params.tasks:
            dev = exact_features(model, enc(lm.tokenizer, ctx.targets[t]), pad, None, params.tokens_per_batch("cpu")).mean(0)
            per_task[t] += w * (cand @ dev)
    return np.max(np.stack(list(per_task.values())), axis=0)


def reuse(args) -> dict:
    from tuneset.flows.context import run_context
    from tuneset.selectors import make_selector

    rec, rows, params, warm = prepared(args)
    frame = rows.read()
    ctx = run_context(rec).scoring(0, warm)
    out = {}
    for label, tasks in [("existing_targets", ["banking77", "sst2"]), ("new_target_arc_easy", ["banking77", "sst2", "arc_easy"])]:
        sel = make_selector("less", {**params.model_dump(), "tasks": tasks}).fit(ctx)
        t = time.perf_counter()
        sel.score(frame)
        out[label] = {"wall_s": round(time.perf_counter() - t, 1), "computed_rows": sel.store.computed,
                      "compute_s": {k: round(v, 1) for k, v in sel.store.seconds.items()}}
        print(label, out[label])
    return out


def layers(args) -> dict:
    """Fast path, last 4 layers vs every layer, each with its own warm-up, on the first N rows."""
    from tuneset.flows.context import run_context
    from tuneset.selectors import make_selector

    res = {}
    scores = {}
    for label, extra in [("last_4_layers", []), ("all_layers", [ALL_LAYERS])]:
        rec, rows, params, warm = prepared(args, *extra)
        frame = rows.read().head(args.layers_rows)
        # one projection for both arms (the default, the reference's Gaussian), so the overlap
        # measures the layers alone and not the recipe's CountSketch noise at the cut
        sel = make_selector("less", {**params.model_dump(), "projection": "gaussian"}).fit(run_context(rec).scoring(0, warm))
        t = time.perf_counter()
        scores[label] = sel.score(frame)["score"].to_numpy()
        res[label] = {"wall_s": round(time.perf_counter() - t, 1), "compute_s": {k: round(v, 1) for k, v in sel.store.seconds.items()}}
    from scipy.stats import spearmanr

    res["rows"] = args.layers_rows
    res["top15_overlap"] = round(top_overlap(scores["all_layers"], scores["last_4_layers"]), 4)
    res["spearman"] = round(float(spearmanr(scores["all_layers"], scores["last_4_layers"]).statistic), 4)
    print(res)
    return res


SECTIONS = {"speed": speed, "memory": memory, "projection": projection, "reuse": reuse, "layers": layers, "fidelity": fidelity}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--work-dir", type=Path, default=ROOT / ".tuneset" / "bench")
    ap.add_argument("--only", nargs="*", choices=list(SECTIONS), default=list(SECTIONS))
    ap.add_argument("--speed-rows", type=int, default=256)
    ap.add_argument("--all-layers-rows", type=int, default=32)
    ap.add_argument("--projection-rows", type=int, default=128)
    ap.add_argument("--layers-rows", type=int, default=512)
    ap.add_argument("--memory-rows", type=int, default=16)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--checkpoints", type=int, default=0, help="fidelity over the first N checkpoints only")
    ap.add_argument("--child", choices=["fast", "fast_gaussian", "reference"], help=argparse.SUPPRESS)
    ap.add_argument("--all-layers", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.work_dir = args.work_dir.resolve()
    if not (args.shared / "bench" / "tasks.json").exists():
        print(f"skipped: no benchmark at {args.shared / 'bench'}")
        return
    if args.child:
        args.path = args.child
        return speed_child(args)
    import torch

    machine = f"{torch.get_num_threads()} CPU threads, no GPU" if not torch.cuda.is_available() else torch.cuda.get_device_name()
    for name in args.only:
        res = SECTIONS[name](args)
        results = json.loads(args.out.read_text()) if args.out.exists() else {}  # other sections kept
        results.update({"machine": machine, name: res})
        args.out.write_text(json.dumps(results, indent=1))
    print(args.out)


if __name__ == "__main__":
    main()
