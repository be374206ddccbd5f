"""End to end at a million rows of real text (issue 17): embed + `got` + `dsir` + `semdedup` through
`tuneset score` with the fast embedding tier, its wall time by stage and peak memory; then, on a
50k-row subsample of the same pool, how much of MiniLM's selection the fast tier keeps.

    python benchmarks/million.py --shared ../shared --work-dir /root/million --stage build [--rows 1000000]
    python benchmarks/million.py --shared ../shared --work-dir /root/million --stage score
    python benchmarks/million.py --shared ../shared --work-dir /root/million --stage fidelity [--fidelity-rows 50000]

`--stage all` runs the three in order. The work dir holds the pool, the recipes, the store and
the logs (never the repository); results go to benchmarks/results/million.json (`--out`).

- build: every row of the shared raw datasets (`<shared>/data/raw`, parsed by `raw_rows`: the
  classification sets in the bench pool's own prompt templates, the QA / reasoning / instruction
  sets as question -> answer) plus the bench pool, exact duplicates dropped: the distinct base
  rows. Copy 0 is the base rows as they are; copies 1, 2, ... perturb every base row with a
  generator seeded by the copy (`perturb`: word dropout 10%, one adjacent swap), until `--rows`
  rows (base rows in a seeded random order, so a short pool samples every source); then shuffled
  (seed 0). Written to `<work-dir>/pool-<rows>.parquet`.
- score: `tuneset score` on that pool with `model.embedder=minilm-static`, selectors got, dsir
  and semdedup, targets the dev rows of banking77, sst2 and arc_easy; one process from start to
  score table, embedding included. Wall time by stage from the timestamped log, per-selector
  seconds from the store's timing.json, peak memory: the largest process's max RSS
  (getrusage of the children: exact, but a maximum over every child this script has run, so
  per run only in `--stage score`), the largest process's and the process tree's summed RSS
  (sampled every 0.2 s).
- fidelity: `--fidelity-rows` rows drawn from the pool (seed 0), scored by the same recipe with
  `minilm` and with `minilm-static` (same store, so the static embeddings come from the 1M run):
  top-15% overlap per selector, SemDeDup's duplicate pairs; plus, on the same embeddings,
  SemDeDup at the static tier's threshold that flags as many rows (benchmarks/embedders.py).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from bench_args import parse_bench_args

ROOT = Path(__file__).resolve().parent.parent
TASKS = ["banking77", "sst2", "arc_easy"]
SELECTORS = ["got", "dsir", "semdedup"]
FAST = "minilm-static"
REF = "minilm"

# ------------------------------------------------------------------------------ the pool

BANKING = "Classify this online banking customer message into its intent.\nMessage: {}\nIntent:"
CLINC = "Classify this request to a voice assistant into its intent.\nRequest: {}\nIntent:"
TREC = ("What kind of answer does this question expect? Answer with one of: abbreviation, entity, description, "
        "person, location, number.\nQuestion: {}\nAnswer type:")
TREC_TYPES = {"ABBR": "abbreviation", "ENTY": "entity", "DESC": "description", "HUM": "person", "LOC": "location", "NUM": "number"}
SST2 = "Is the sentiment of this movie review positive or negative?\nReview: {}\nSentiment:"
SST5 = "Rate the sentiment of this movie review: very negative, negative, neutral, positive or very positive.\nReview: {}\nRating:"
SST5_LABELS = ["very negative", "negative", "neutral", "positive", "very positive"]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def raw_rows(raw: Path) -> list[tuple[str, str, str]]:
    """(source, instruction, response) for every row of the shared raw datasets, all splits."""
    out: list[tuple[str, str, str]] = []
    for split in ("train", "test"):
        with (raw / "banking77" / f"{split}.csv").open(newline="") as f:
            out += [("banking77", BANKING.format(r["text"]), r["category"]) for r in csv.DictReader(f)]
    for rows in json.loads((raw / "clinc150" / "data_full.json").read_text()).values():
        out += [("clinc150", CLINC.format(text), intent) for text, intent in rows]
    for name in ("raw_train_5500.label", "raw_TREC_10.label"):
        for line in (raw / "trec" / name).read_text(encoding="latin-1").splitlines():
            label, _, q = line.partition(" ")
            if q:
                out.append(("trec", TREC.format(q.strip()), TREC_TYPES[label.split(":")[0]]))
    for split in ("train", "dev", "test"):
        for line in (raw / "sst2" / f"stsa.binary.{split}").read_text(encoding="latin-1").splitlines():
            out.append(("sst2", SST2.format(line[2:].strip()), "positive" if line[0] == "1" else "negative"))
        for line in (raw / "sst2" / f"stsa.fine.{split}").read_text(encoding="latin-1").splitlines():
            out.append(("sst5", SST5.format(line[2:].strip()), SST5_LABELS[int(line[0])]))
    for split in ("train", "test"):
        out += [("gsm8k", r["question"], r["answer"]) for r in _jsonl(raw / "gsm8k" / f"{split}.jsonl")]
    for r in _jsonl(raw / "gsm8k" / "example_model_solutions.jsonl"):  # model-written solutions, right or wrong
        out += [("gsm8k_model", r["question"], v["solution"]) for k, v in r.items() if isinstance(v, dict) and v.get("solution")]
    for path in sorted(glob.glob(str(raw / "nutcracker" / "*" / "*.json"))) + [str(raw / "nutcracker" / "mmlu_dev_5shot_all.jsonl")]:
        src = "nutcracker/" + (Path(path).parent.name if path.endswith(".json") else "mmlu")
        out += [(src, f"Question: {r['centerpiece']}\nAnswer:", r["correct_options_literal"][0]) for r in _jsonl(Path(path))]
    for path in sorted((raw / "bbh").glob("*.json")):
        out += [(f"bbh/{path.stem}", e["input"], e["target"]) for e in json.loads(path.read_text())["examples"]]
    for path in sorted((raw / "flan_cot").glob("*.tsv")):
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                q, a, cot = (p.replace("\\n", "\n") for p in parts)
                out.append((f"flan_cot/{path.stem.removesuffix('_train')}", q, f"{cot} So the answer is {a}."))
    out += [(r["source"], r["prompt"], r["completion"]) for r in _jsonl(raw / "t0_p3_subset" / "t0_p3_subset.jsonl")]
    for name in ("seed_tasks.jsonl", "user_oriented_instructions.jsonl"):
        for r in _jsonl(raw / "self_instruct_human" / name):
            for inst in r["instances"]:
                prompt = r["instruction"] + (f"\n{inst['input']}" if inst["input"].strip() else "")
                out.append(("self_instruct", prompt, inst["output"]))
    for r in _jsonl(raw / "dolly_subset" / "dolly_subset.jsonl"):
        out.append(("dolly", r["instruction"] + (f"\n{r['context']}" if r.get("context") else ""), r["response"]))
    return [(s, i.strip(), r.strip()) for s, i, r in out if i.strip() and str(r).strip()]


def perturb(text: str, rng: np.random.Generator, drop: float = 0.1) -> str:
    """Word dropout (each space-separated word with probability `drop`, never all of them) and one
    swap of two adjacent words, at a random place. Line breaks stay inside their words."""
    words = text.split(" ")
    if len(words) < 3:
        return text
    keep = rng.random(len(words)) >= drop
    if not keep.any():
        keep[rng.integers(len(words))] = True
    words = [w for w, k in zip(words, keep) if k]
    if len(words) >= 2:
        i = int(rng.integers(len(words) - 1))
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def build_pool(shared: Path, rows: int, seed: int = 0, base_rows: int | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """`rows` rows: the distinct base rows (raw datasets + bench pool; the first `base_rows` of
    them in a seeded order, where given), then perturbed copies."""
    base = raw_rows(shared / "data" / "raw")
    bench = pl.read_ndjson(shared / "bench" / "pool.jsonl")
    base += [(f"bench/{s}", i, r) for s, i, r in bench.select("source", "instruction", "response").iter_rows()]
    seen: set[tuple[str, str]] = set()
    distinct = []
    for s, i, r in base:
        if (i, r) not in seen:
            seen.add((i, r))
            distinct.append((s, i, r))
    distinct = [distinct[k] for k in np.random.default_rng(seed).permutation(len(distinct))]  # a short pool samples every source
    distinct = distinct[:base_rows] if base_rows else distinct
    n_base = len(distinct)
    copies = -(-rows // n_base)
    src, ins, resp, ids = [], [], [], []
    for c in range(copies):
        rng = np.random.default_rng([seed, c])
        for k, (s, i, r) in enumerate(distinct):
            if len(ids) >= rows:
                break
            src.append(s)
            ids.append(f"m{k}-c{c}")
            if c == 0:
                ins.append(i)
                resp.append(r)
            else:
                ins.append(perturb(i, rng))
                resp.append(perturb(r, rng) if len(r.split(" ")) >= 4 else r)  # labels stay labels
    frame = pl.DataFrame({"id": ids, "source": src, "instruction": ins, "response": resp})
    frame = frame.sample(fraction=1.0, shuffle=True, seed=seed)
    by_source: dict[str, int] = {}
    for s, _, _ in distinct:
        top = s.split("/")[0] if not s.startswith("bench/") else "bench_pool"
        by_source[top] = by_source.get(top, 0) + 1
    info = {"rows": frame.height, "raw_rows_read": len(base) - bench.height, "bench_pool_rows": bench.height,
            "distinct_base_rows": n_base, "base_rows_by_source": dict(sorted(by_source.items(), key=lambda kv: -kv[1])),
            "copies": copies, "last_copy_rows": rows - (copies - 1) * n_base,
            "distinct_texts": frame.select(pl.concat_str(["instruction", "response"], separator="\n").n_unique()).item(),
            "perturbation": "copy c >= 1: per copy, numpy default_rng([seed, c]); each space-separated word of the "
                            "instruction (and of a response of >= 4 words) dropped with p=0.1 (never all), then one random "
                            "adjacent pair swapped; copy 0 unchanged; rows shuffled with seed 0",
            "mean_chars": round(float(frame.select((pl.col("instruction").str.len_chars() + pl.col("response").str.len_chars()).mean()).item()), 1)}
    return frame, info


# ------------------------------------------------------------------------------ running `tuneset score`


def write_recipe(work: Path, name: str, pool: Path, shared: Path, embedder: str, shard_size: int) -> Path:
    recipe = {"name": name, "pool": str(pool), "tasks": str(shared / "bench" / "tasks.json"), "task_names": TASKS,
              "work_dir": str(work), "model": {"embedder": embedder},
              "score": {"selectors": [{"name": s} for s in SELECTORS], "shard_size": shard_size}}
    path = work / f"{name}.yaml"
    path.write_text(json.dumps(recipe, indent=1))  # JSON is YAML
    return path


def command_env(work: Path) -> dict[str, str]:
    """The CLI's environment: its own Prefect home (no contention with other runs' database)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    return env | {"TUNESET_HOME": str(work / "home"), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "1000",
                  "TOKENIZERS_PARALLELISM": env.get("TOKENIZERS_PARALLELISM", "false")}


def _tree_rss(proc) -> tuple[int, int]:
    """(summed RSS of the process and its descendants, largest single RSS), bytes."""
    import psutil

    total = biggest = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    for p in procs:
        try:
            rss = p.memory_info().rss
        except psutil.Error:
            continue
        total += rss
        biggest = max(biggest, rss)
    return total, biggest


def run_logged(cmd: list[str], env: dict[str, str], log_path: Path) -> dict[str, Any]:
    """Run `cmd`, stamping every output line with seconds since start (into `log_path`), and
    sampling the process tree's memory; returns wall time, peak memory and the stamped lines."""
    import psutil

    lines: list[tuple[float, str]] = []
    peak = {"tree": 0, "largest_sampled": 0}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    ps = psutil.Process(proc.pid)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            tree, big = _tree_rss(ps)
            peak["tree"], peak["largest_sampled"] = max(peak["tree"], tree), max(peak["largest_sampled"], big)
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with log_path.open("w") as log:
        assert proc.stdout is not None
        for line in proc.stdout:
            t = time.perf_counter() - t0
            lines.append((t, line.rstrip("\n")))
            log.write(f"[{t:8.1f}] {line}")
            log.flush()
    rc = proc.wait()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    if rc != 0:
        tail = "\n".join(line for _, line in lines[-30:])
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}:\n{tail}")
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": round(wall, 1), "peak_rss_largest_process_mib": round(ru.ru_maxrss / 1024),
            "peak_rss_largest_process_sampled_mib": round(peak["largest_sampled"] / 2**20),
            "peak_rss_tree_sampled_mib": round(peak["tree"] / 2**20),
            "children_cpu_s": round(ru.ru_utime + ru.ru_stime, 1), "lines": lines}


def stages(lines: list[tuple[float, str]], wall: float, embedder: str = FAST) -> list[dict[str, Any]]:
    """Seconds per stage, from the stamped log: the flow's start, and per selector its prepare
    fan-out (its last progress line, minus the rows / rate it reports) and its global step (from
    its "global step" line to the next selector's prepare, or to the flow's end)."""

    def when(pattern: str) -> float:
        return next(t for t, line in lines if re.search(pattern, line))

    marks = [("start-up: imports, Prefect's server", 0.0), ("read, validate, fingerprint and store the pool", when(r"Beginning flow run"))]
    for s in SELECTORS:
        prog = [(t, m) for t, line in lines if (m := re.search(rf"prepare {s}: (\d+)/(\d+) rows \(100%\), ([\d.]+) rows/s", line))]
        if not prog:  # its scores were in the store already (dsir reads no embeddings: another tier's run made them)
            continue
        t_end, m = prog[-1]
        what = {"got": f"embed ({embedder}): got's prepare shards", "dsir": "dsir: prepare shards (nothing to prepare)",
                "semdedup": "semdedup: prepare shards (embeddings read from the cache)"}[s]
        marks.append((what, t_end - int(m.group(1)) / float(m.group(3))))
        marks.append((f"{s}: global step", when(rf"{s}: pool-wide selector, global step")))
    marks.append(("score table, exit", when(r"Flow run .* Finished in state")))
    ends = [t for _, t in marks[1:]] + [wall]
    return [{"stage": n, "start_s": round(t, 1), "seconds": round(e - t, 1)} for (n, t), e in zip(marks, ends)]


def selector_timings(work: Path, rows_fp: str | None = None) -> dict[str, Any]:
    """Each selector's timing.json (seconds of its `make`: prepare fan-out + global step), newest."""
    out: dict[str, Any] = {}
    for meta in sorted((work / "store" / "scores").glob("*/meta.json"), key=lambda p: p.stat().st_mtime):
        m = json.loads(meta.read_text())
        timing = meta.parent / "timing.json"
        if timing.exists() and (rows_fp is None or m.get("rows") == rows_fp):
            out[m["selector"]] = {k: round(v, 1) if isinstance(v, float) else v for k, v in json.loads(timing.read_text()).items()}
    return out


def score(work: Path, shared: Path, pool: Path, name: str, embedder: str, shard_size: int) -> tuple[dict[str, Any], pl.DataFrame]:
    """`tuneset score` on `pool` as one logged process; returns its figures and the score table."""
    recipe = write_recipe(work, name, pool, shared, embedder, shard_size)
    cmd = [str(Path(sys.executable).parent / "tuneset"), "score", str(recipe)]
    res = run_logged(cmd, command_env(work), work / f"{name}.log")
    lines = res.pop("lines")
    at = max((k for k, (_, line) in enumerate(lines) if line.startswith("scores:")), default=None)
    table = "".join(line.strip() for _, line in lines[at:])[len("scores:"):].strip() if at is not None else None
    if not table or not Path(table).exists():
        raise RuntimeError(f"no score table in {work / f'{name}.log'}")
    rows_fp = json.loads((Path(table).parent / "meta.json").read_text())
    tables = list(rows_fp["tables"].values())
    fp = json.loads((Path(tables[0]).parent / "meta.json").read_text())["rows"]
    res.update({"command": " ".join(cmd), "recipe": json.loads(recipe.read_text()), "log": str(work / f"{name}.log"),
                "stages": stages(lines, res["wall_s"], embedder), "selectors_timing_json": selector_timings(work, fp), "score_table": table})
    return res, pl.read_parquet(table)


# ------------------------------------------------------------------------------ fidelity


def top_overlap(ref: pl.DataFrame, fast: pl.DataFrame, col: str, higher: bool = True, frac: float = 0.15) -> float:
    from embedders import top_overlap as overlap

    j = ref.select("id", col).join(fast.select("id", col), on="id", suffix="_f", maintain_order="left")
    sign = 1.0 if higher else -1.0
    return round(overlap(sign * j[col].to_numpy(), sign * j[f"{col}_f"].to_numpy(), frac), 4)


def dup_pairs(table: pl.DataFrame) -> set[frozenset[str]]:
    d = table.filter(pl.col("semdedup.duplicate_of") != "")
    return {frozenset(p) for p in zip(d["id"].to_list(), d["semdedup.duplicate_of"].to_list())}


def fidelity(work: Path, shared: Path, pool: pl.DataFrame, n: int, shard_size: int) -> dict[str, Any]:
    """Score an `n`-row sample of the pool with MiniLM and with the fast tier; compare."""
    from embedders import fidelity as embed_fidelity

    from tuneset.selectors.base import row_text
    from tuneset.selectors.context import ScoringContext
    from tuneset.store import ArtifactStore

    sub = pool.sample(n=min(n, pool.height), seed=0, shuffle=True)
    path = work / f"sample-{sub.height}.parquet"
    sub.write_parquet(path)
    runs, tables = {}, {}
    for emb in (FAST, REF):  # the fast one first: MiniLM's hour is last
        runs[emb], tables[emb] = score(work, shared, path, f"sample{sub.height}-{emb}", emb, shard_size)
        print(f"sample {emb}: {runs[emb]['wall_s']} s", flush=True)
    ref, fast = tables[REF], tables[FAST]
    ref_pairs, fast_pairs = dup_pairs(ref), dup_pairs(fast)
    shared_pairs = len(ref_pairs & fast_pairs)
    ref_flag, fast_flag = set(ref.filter(pl.col("semdedup") == 0)["id"]), set(fast.filter(pl.col("semdedup") == 0)["id"])
    out: dict[str, Any] = {
        "rows": sub.height, "sample": "pool.sample(n, seed=0)", "runs": runs,
        "got_top15_overlap": top_overlap(ref, fast, "got"),
        "got_per_task_top15_overlap": {t: top_overlap(ref, fast, f"got.vs_{t}") for t in TASKS},
        "dsir_top15_overlap": top_overlap(ref, fast, "dsir"),  # no embedder: 1.0 by construction, a check
        "semdedup_at_0.95": {"minilm_flagged_rows": len(ref_flag), "fast_flagged_rows": len(fast_flag),
                             "flagged_rows_shared": len(ref_flag & fast_flag),
                             "minilm_pairs": len(ref_pairs), "fast_pairs": len(fast_pairs), "shared_pairs": shared_pairs,
                             "recall_of_minilm_pairs": round(shared_pairs / max(len(ref_pairs), 1), 3),
                             "precision": round(shared_pairs / max(len(fast_pairs), 1), 3),
                             "recall_of_minilm_flagged_rows": round(len(ref_flag & fast_flag) / max(len(ref_flag), 1), 3)},
    }
    # The same selections on the stored embeddings (cache hits), with benchmarks/embedders.py's
    # math: embedding_knn too, and SemDeDup at the fast tier's count-matched threshold.
    store = ArtifactStore(work / "store")
    texts = row_text(sub)
    devs = [row_text(pl.read_ndjson(shared / "bench" / "targets" / t / "dev.jsonl")) for t in TASKS]
    embs = {}
    for emb in (REF, FAST):
        ctx = ScoringContext(store=store, embedder=emb, device="cpu")
        embs[emb] = (ctx.embeddings(texts), [ctx.embeddings(d) for d in devs])
    out["on_stored_embeddings"] = embed_fidelity(embs[REF][0], embs[FAST][0], embs[REF][1], embs[FAST][1])
    return out


# ------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=["build", "score", "fidelity", "all"], default="all")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--base-rows", type=int, help="use only this many distinct base rows (a small test of the copies)")
    ap.add_argument("--fidelity-rows", type=int, default=50_000)
    ap.add_argument("--shard-size", type=int, default=65536, help="score.shard_size: rows per prepare task")
    ap.add_argument("--note", default="", help="the machine's load during the run, for the record")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "million.json")
    args, bench = parse_bench_args(ap)
    if bench is None:
        return
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    pool_path = work / f"pool-{args.rows}.parquet"
    result: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    if result.get("pool", {}).get("rows") not in (None, args.rows):
        result = {}  # another size: start over
    result["machine"] = f"this machine ({os.cpu_count()} cores, {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB)"

    def save() -> None:
        args.out.write_text(json.dumps(result, indent=1))

    if args.stage in ("build", "all"):
        t = time.perf_counter()
        frame, info = build_pool(args.shared, args.rows, base_rows=args.base_rows)
        frame.write_parquet(pool_path)
        result["pool"] = {**info, "path": str(pool_path), "build_s": round(time.perf_counter() - t, 1)}
        print(json.dumps(result["pool"], indent=1), flush=True)
        save()
    if args.stage in ("score", "all"):
        res, _ = score(work, args.shared, pool_path, f"million{args.rows}", FAST, args.shard_size)
        res["note"] = args.note
        res["env"] = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM")}
        result["score"] = res
        print(json.dumps(res, indent=1), flush=True)
        save()
    if args.stage in ("fidelity", "all"):
        pool = pl.read_parquet(pool_path)
        result["fidelity"] = fidelity(work, args.shared, pool, args.fidelity_rows, args.shard_size)
        result["fidelity"]["note"] = args.note
        print(json.dumps({k: v for k, v in result["fidelity"].items() if k != "runs"}, indent=1), flush=True)
        save()


if __name__ == "__main__":
    main()
