"""Per-row cache lookups: `RowCache.get` against the read it replaced, on an embedding cache shaped
like a scored pool (issue 17: 77 dev-text lookups took 13 s against a 1M-row cache).

    python benchmarks/row_cache.py [--rows 300000] [--dim 256] [--repeats 5]

The cache: `--rows` pool rows of `--dim` float32 values, added in 10,000-row parts (as score shards
add them), then one 77-row part (the targets' dev texts, embedded later); then the same rows
compacted into one part (what `get` does past `MAX_PARTS` parts). Lookups, per layout:
- `dev77`: the 77 dev keys (one part, or one contiguous stretch of the compacted file);
- `random77`: 77 pool keys drawn at random (scattered over parts and row groups);
- `all`: every key (a pool-wide selector's full read).
`baseline` is the previous read: a lazy scan of every part, semi-joined with the wanted keys (every
value decoded). `get` reads every key column and decodes only the row groups that hold a wanted
key. `get_default_engine` is `get` with its queries on polars' default engine, which the store
used until it pinned the in-memory one (the default one hung now and then across threads). They
alternate, `--repeats` times; min and median seconds, and whether they return the same values. Writes benchmarks/results/row_cache.json (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from tuneset.store import KEY, ArtifactStore, RowCache

ROOT = Path(__file__).resolve().parent.parent


def baseline_get(cache: RowCache, keys: list[str]) -> pl.DataFrame:
    """The read `RowCache.get` did before: scan every part whole, semi-join the wanted keys."""
    files = sorted(cache.parts.glob("*.parquet"))
    wanted = pl.DataFrame({KEY: keys}, schema={KEY: pl.String})
    stored = (pl.scan_parquet(files).join(wanted.lazy().unique(), on=KEY, how="semi")
              .unique(KEY, keep="first", maintain_order=True).collect())
    return wanted.join(stored, on=KEY, how="left", maintain_order="left").drop(KEY)


def build(cache: RowCache, n: int, dim: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    pool = [f"pool-{i:08d}" for i in range(n)]
    for s in range(0, n, 10_000):
        part = pool[s:s + 10_000]
        cache.add(part, pl.DataFrame({"emb": rng.standard_normal((len(part), dim), dtype=np.float32)}))
    dev = [f"dev-{i:03d}" for i in range(77)]
    cache.add(dev, pl.DataFrame({"emb": rng.standard_normal((77, dim), dtype=np.float32)}))
    return pool, dev


def default_engine(get, keys: list[str]) -> pl.DataFrame:
    """`get` with its lazy queries on polars' default engine, as before `tuneset.data.io.collect`
    pinned them to the in-memory one (the default one hung now and then across threads)."""
    import tuneset.store

    pinned = tuneset.store.collect
    tuneset.store.collect = lambda frame: frame.collect()
    try:
        return get(keys)
    finally:
        tuneset.store.collect = pinned


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "row_cache.json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = ArtifactStore(Path(tmp) / "store").rows("embed", ("bench",))
        pool, dev = build(cache, args.rows, args.dim, rng)
        lookups = {"dev77": dev, "random77": [pool[i] for i in rng.choice(len(pool), 77, replace=False)],
                   "all": pool + dev}
        for layout in ("parts", "compacted"):
            if layout == "compacted":
                cache._compact(sorted(cache.parts.glob("*.parquet")))
            n_files = len(list(cache.parts.glob("*.parquet")))
            size = sum(f.stat().st_size for f in cache.parts.glob("*.parquet"))
            for name, keys in lookups.items():
                times: dict[str, list[float]] = {"baseline": [], "get": [], "get_default_engine": []}
                outs = {}
                for _ in range(args.repeats):
                    for how, fn in (("baseline", lambda k: baseline_get(cache, k)), ("get", cache.get),
                                    ("get_default_engine", lambda k: default_engine(cache.get, k))):
                        t0 = time.perf_counter()
                        outs[how] = fn(keys)
                        times[how].append(time.perf_counter() - t0)
                same = outs["baseline"].equals(outs["get"]) and outs["get"].equals(outs["get_default_engine"])
                row = {"files": n_files, "mib": round(size / 2**20), "keys": len(keys), "same_values": same,
                       **{f"{h}_s_{s}": round(f(t), 4) for h, t in times.items()
                          for s, f in (("min", min), ("median", statistics.median))}}
                row["speedup_min"] = round(row["baseline_s_min"] / row["get_s_min"], 2)
                row["speedup_median"] = round(row["baseline_s_median"] / row["get_s_median"], 2)
                results[f"{layout}/{name}"] = row
                print(f"{layout}/{name}: {row}", flush=True)
        shutil.rmtree(cache.folder, ignore_errors=True)
    table = ["| layout / lookup | keys | baseline s (min / median) | get s (min / median) | speed-up (min / median) "
             "| get on polars' default engine s (min / median) | same values |", "|---|---|---|---|---|---|---|"]
    for k, r in results.items():
        table.append(f"| {k} | {r['keys']:,} | {r['baseline_s_min']:.3f} / {r['baseline_s_median']:.3f} | "
                     f"{r['get_s_min']:.3f} / {r['get_s_median']:.3f} | {r['speedup_min']:.1f}x / "
                     f"{r['speedup_median']:.1f}x | {r['get_default_engine_s_min']:.3f} / "
                     f"{r['get_default_engine_s_median']:.3f} | {r['same_values']} |")
    out = {"rows": args.rows, "dim": args.dim, "repeats": args.repeats,
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
           "results": results, "table": table}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
