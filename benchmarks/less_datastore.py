"""The LESS gradient datastore: the store's per-row cache against the per-chunk `.npy` files it
replaced, on features shaped like pool_small's (1,999 rows x 4 warm-up checkpoints x 8,192 fp16).

    python benchmarks/less_datastore.py [--rows 1999] [--checkpoints 4] [--dim 8192] [--repeats 3]

`chunks`: one `.npy` per (256-row chunk, checkpoint), read back by concatenating a checkpoint's
chunks (the layout before). `rows`: `RowCache.fetch` / `get` with `feature_frame` and
`frame_features`, what `GradientStore.features` does now. Same random features, each layout in
its own fresh folder, alternating, `--repeats` times; min and median seconds, and whether both read
back the written values exactly. Computing these features takes about an hour on a 2-core CPU
(benchmarks/README.md, "The bench with references"), so the figure to read is the datastore's
share of that. Writes benchmarks/results/less_datastore.json (`--out`).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from tuneset.data.fingerprint import text_keys
from tuneset.selectors.less import GRAD_CHUNK, feature_frame, frame_features
from tuneset.store import ArtifactStore, write_npy

ROOT = Path(__file__).resolve().parent.parent


def chunks_layout(folder: Path, feats: list[np.ndarray]) -> tuple[float, float, list[np.ndarray]]:
    t = time.perf_counter()
    n = feats[0].shape[0]
    for s in range(0, n, GRAD_CHUNK):
        for c, f in enumerate(feats):
            write_npy(f[s:s + GRAD_CHUNK], folder / f"{s}-{c}.npy")
    write_s = time.perf_counter() - t
    t = time.perf_counter()
    out = [np.concatenate([np.load(folder / f"{s}-{c}.npy") for s in range(0, n, GRAD_CHUNK)]).astype(np.float32)
           for c in range(len(feats))]
    return write_s, time.perf_counter() - t, out


def rows_layout(folder: Path, feats: list[np.ndarray], keys: list[str]) -> tuple[float, float, list[np.ndarray]]:
    cache = ArtifactStore(folder).rows("grads", ("bench",))
    t = time.perf_counter()
    cache.fetch(keys, lambda idx, _p: feature_frame([f[idx] for f in feats]), GRAD_CHUNK)
    write_s = time.perf_counter() - t
    t = time.perf_counter()
    out = frame_features(cache.get(keys), len(feats))
    return write_s, time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1999)
    ap.add_argument("--checkpoints", type=int, default=4)
    ap.add_argument("--dim", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "less_datastore.json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((args.rows, args.dim)).astype(np.float16) for _ in range(args.checkpoints)]
    want = [f.astype(np.float32) for f in feats]
    keys = text_keys([f"row {i}" for i in range(args.rows)])
    times: dict[str, dict[str, list[float]]] = {k: {"write": [], "read": []} for k in ("chunks", "rows")}
    exact = {"chunks": True, "rows": True}
    for _ in range(args.repeats):
        for name in ("chunks", "rows"):
            with tempfile.TemporaryDirectory() as tmp:
                w, r, out = chunks_layout(Path(tmp), feats) if name == "chunks" else rows_layout(Path(tmp), feats, keys)
            times[name]["write"].append(w)
            times[name]["read"].append(r)
            exact[name] &= all(np.array_equal(a, b) for a, b in zip(out, want))
    summary = {name: {op: {"min": round(min(v), 3), "median": round(statistics.median(v), 3)} for op, v in ops.items()}
               for name, ops in times.items()}
    result = {"rows": args.rows, "checkpoints": args.checkpoints, "dim": args.dim, "repeats": args.repeats,
              "machine": platform.machine(), "seconds": summary, "exact": exact}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("| layout | write s (min / median) | read s (min / median) | reads back exactly |\n|---|---|---|---|")
    for name in ("chunks", "rows"):
        s = summary[name]
        print(f"| {name} | {s['write']['min']:.3f} / {s['write']['median']:.3f} | {s['read']['min']:.3f} / "
              f"{s['read']['median']:.3f} | {exact[name]} |")


if __name__ == "__main__":
    main()
