"""Crash safety: `kill -9` a `tuneset compare` at random moments, rerun it, and check that it ends
as a run never interrupted did (issue 14).

    python benchmarks/crash.py [--work-dir <dir>] [--trials 20] [--seed 0] [--times stratified|uniform]
                               [--kill group|leader] [--out benchmarks/results/crash.json]

The run: the tests' tiny models (tests/tiny_models.py) on the first 60 demo pool rows; a compare
of `random`, `relabel_ppl` (its own curation: confident-learning relabelling, which scores
`label_quality`) and `knn_dedup` (its own curation: SemDeDup near-duplicate removal) at a budget of
16 rows, with the no-fine-tune and full-pool baselines. One `python -m tuneset.cli compare` goes
through curate (the compare's dedup/decontaminate and both strategies' curations, each scoring what
it reads), score (perplexity, embedding_knn, random), fine-tune (LoRA, 5 arms) and evaluate
(test and dev rows), writing the leaderboard after every arm.

1. Reference: one uninterrupted run; its duration and its per-stage timeline, from the log. Each
   log line closes an interval of the timeline, and the interval is put in the stage of the work
   that line reports: startup (imports, Prefect server, recipe checks: before the first line),
   curate (anything inside a `*-curate` flow, its score subflows included), score, fine-tune,
   evaluate, select+board (a strategy's selection and the interim leaderboard), exit (after the
   last line). A control run, also uninterrupted, checks that two clean runs agree at all.
2. Trials: each in a fresh run folder (the same path every time, so that store keys that hold
   paths are comparable; the previous one is moved to `trials/<n>`) with one Prefect home shared
   by every run, as a user's ~/.tuneset is. The command starts in a new session; it is killed with
   SIGKILL to its whole process group (`--kill leader`: to the command's process alone, as the
   OOM killer does, so that its Prefect server must die by its parent-death signal).
   Kill times:
   - `stratified` (default): 5 kills in each of curate, score, fine-tune and compare (evaluate or
     select+board), in turn. For a stage, a moment is drawn uniformly (seeded) over the reference
     time spent in it; it falls in the interval after some reference log line L, at offset d into
     it. The trial waits until its own log shows L (the same message, the same occurrence), waits
     d x p more, and kills; p, the run's pace, is the time its log took over the ~10 s of reference
     log before L, over the reference's (clamped to 0.25-4). Uniform times over the whole run hit
     startup most often (the Prefect server and imports take 40% of the run on this loaded
     machine) and can miss short stages altogether.
   - `uniform`: a time drawn uniformly in (0, reference duration) after the launch.
   The stage a kill hit is read afterwards from the killed run's own log: its last line is found in
   the reference log, and the work in progress is what the reference's next line reports.
3. After each kill: every process of the group (and every descendant seen while it ran) must be
   gone within a few seconds, else it is an orphan (recorded, then killed); the store's entries
   without a completion marker are listed with their files. Then the same command again, to the
   end, and the results against the reference: the leaderboard CSV, runs.csv (timings aside), each
   curation's audit and curated rows, and every finished store entry (rows, per-row caches,
   scores, score tables, selections, fine-tuned adapters, evaluations) by content. Every entry
   that was unfinished at the kill must be finished by the rerun with each of its files rewritten
   (not read as it was).

Writes `--out` (JSON) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "tuneset" / "demo" / "data"
DONE = "_COMPLETE"  # tuneset.store.DONE
PACE_WINDOW_S = 10.0  # a kill's delay is scaled by the run's pace against the reference's over this much log
TARGETS = {"curate": ("curate",), "score": ("score",), "fine-tune": ("fine-tune",), "compare": ("evaluate", "select+board")}
RECIPE = """\
name: crash
pool: {work}/pool.jsonl
tasks: {work}/tasks.json
work_dir: {work}/run/work
model: {{name: {work}/models/lm, embedder: {work}/models/embedder/st, device: cpu, max_length: 64}}
score: {{shard_size: 16}}
compare:
  strategies:
    - random
    - {{name: relabel_ppl, weights: {{-perplexity: 1}}, curate: {{relabel: {{min_prob: 0.6}}}}}}
    - {{name: knn_dedup, weights: {{embedding_knn: 1}}, curate: {{near_dedup: 0.98}}}}
  budgets: [16]
  seeds: [0]
  baselines: [none, full]
finetune: {{epochs: 2, batch_size: 4, lr: 0.05}}
evaluate: {{max_test_rows: 12, max_new_tokens: 4}}
"""


# ---------------------------------------------------------------- set-up


def setup(work: Path) -> Path:
    """Tiny models, a 60-row pool, the demo tasks and the recipe, under `work`."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import build_tiny_embedder, build_tiny_lm

    if not (work / "models" / "lm" / "config.json").exists():
        build_tiny_lm(work / "models" / "lm")
    if not (work / "models" / "embedder" / "st" / "modules.json").exists():
        build_tiny_embedder(work / "models" / "embedder")
    rows = (DEMO / "pool.jsonl").read_text().splitlines()[:60]
    (work / "pool.jsonl").write_text("\n".join(rows) + "\n")
    tasks = json.loads((DEMO / "tasks.json").read_text())
    for t in tasks.values():
        t["dev"], t["test"] = str(DEMO / t["dev"]), str(DEMO / t["test"])
    (work / "tasks.json").write_text(json.dumps(tasks))
    recipe = work / "crash.yaml"
    recipe.write_text(RECIPE.format(work=work))
    return recipe


def command_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    return env | {"TUNESET_HOME": str(work / "home"), "TUNESET_CACHE": str(work / "cache"), "HF_HUB_OFFLINE": "1",
                  "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


# ---------------------------------------------------------------- processes


def proc_table() -> dict[int, tuple[int, int, int, str, int]]:
    """pid -> (ppid, process group, session, state, start time) of every process."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(stat.parent.name)] = (int(f[1]), int(f[2]), int(f[3]), f[0], int(f[19]))
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    except OSError:
        return "?"


class Family:
    """Every process of a command started in a new session: its group and session, and every
    descendant, as seen so far (pid with start time, so a reused pid is not mistaken for one)."""

    def __init__(self, leader: int):
        self.leader = leader
        self.seen: dict[tuple[int, int], str] = {}

    def members(self, table) -> set[tuple[int, int]]:
        ours = {p for p, (_, pgrp, sid, _, _) in table.items() if self.leader in (pgrp, sid)}
        ours |= {p for p, _ in self.seen if p in table and (p, table[p][4]) in self.seen}
        grew = True
        while grew:
            kids = {p for p, (ppid, *_rest) in table.items() if ppid in ours} - ours
            ours |= kids
            grew = bool(kids)
        return {(p, table[p][4]) for p in ours if p in table}

    def scan(self) -> None:
        table = proc_table()
        for key in self.members(table):
            c = cmdline(key[0])  # read again each time: a child's first one is its parent's, until it execs
            if c not in ("?", "") or key not in self.seen:  # (and an exiting one's is empty)
                self.seen[key] = c

    def alive(self) -> list[tuple[int, str]]:
        """Members seen, or still in the group or session, that are running (not zombies)."""
        table = proc_table()
        keys = self.members(table) | {k for k in self.seen if k[0] in table and table[k[0]][4] == k[1]}
        return [(p, self.seen.get((p, st)) or cmdline(p)) for p, st in sorted(keys) if table[p][3] != "Z"]


# ---------------------------------------------------------------- log lines and stages


LINE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \| \w+\s*\| (.*)$")


@dataclass
class Line:
    t: float  # seconds since the launch
    msg: str  # without the time stamp
    key: str = ""
    nth: int = 0  # occurrence of `key` so far
    stage: str = ""  # the work this line reports (the interval before it)


def normalise(msg: str) -> str:
    msg = re.sub(r"https?://\S+", "<url>", msg)
    return re.sub(r"\d+(\.\d+)?", "#", msg)


def parse_log(text: str, launch: float) -> list[Line]:
    """The time-stamped lines of a command's output (continuations of multi-line messages and the
    final printout dropped), with times since `launch` and each line's normalised key."""
    base = datetime.fromtimestamp(launch)
    lines: list[Line] = []
    counts: dict[str, int] = {}
    for raw in text.split("\n")[:-1]:  # only whole lines
        m = LINE.match(raw)
        if not m:
            continue
        h, mi, s, ms, msg = m.groups()
        at = base.replace(hour=int(h), minute=int(mi), second=int(s), microsecond=int(ms) * 1000)
        if at < base - timedelta(hours=12):
            at += timedelta(days=1)
        key = normalise(msg)
        counts[key] = counts.get(key, 0) + 1
        lines.append(Line(at.timestamp() - launch, msg, key, counts[key]))
    return lines


FLOW = re.compile(r"^Flow run '([^']+)' - (.*)$")


def classify(lines: list[Line]) -> None:
    """Each line's stage: that of the work done since the line before it."""
    curate_depth = 0
    stage = "startup"
    for ln in lines:
        m = FLOW.match(ln.msg)
        flow, text = (m.group(1), m.group(2)) if m else ("", ln.msg)
        opens = text.startswith("Beginning subflow run")
        closes = text.startswith("Finished in state")
        if flow.endswith("-curate"):
            stage = "curate"
            curate_depth += 1 if opens else -1 if closes else 0
        elif curate_depth > 0:
            stage = "curate"
        elif flow.endswith("-compare"):
            stage = "startup" if text.startswith(("Beginning flow run", "View at")) else "select+board"
        elif flow.endswith("-score") or re.match(r"Task run '(score|prepare)-", ln.msg) or \
                re.match(r"tuneset\.(score|progress - (score|prepare)) ", ln.msg):
            stage = "score"
        elif "'finetune-" in ln.msg or "fine-tune" in ln.msg:
            stage = "fine-tune"
        elif ln.msg.startswith(("Task run 'evaluate-", "tuneset.progress - evaluate", "tuneset.train_eval")):
            stage = "evaluate"
        ln.stage = stage


def timeline(lines: list[Line], duration: float) -> list[dict]:
    """Intervals (start, end, stage, the line that ends it) covering (0, duration)."""
    out, t0 = [], 0.0
    for i, ln in enumerate(lines):
        out.append({"start": t0, "end": ln.t, "stage": ln.stage, "anchor": i - 1, "line": ln.msg[:120]})
        t0 = ln.t
    out.append({"start": t0, "end": duration, "stage": "exit", "anchor": len(lines) - 1, "line": "(process exit)"})
    return out


def stage_seconds(tl: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for iv in tl:
        out[iv["stage"]] = out.get(iv["stage"], 0.0) + max(0.0, iv["end"] - iv["start"])
    return {k: round(v, 2) for k, v in out.items()}


def stage_at_kill(killed: list[Line], ref: list[Line]) -> tuple[str, str, str]:
    """(stage, the reference line the killed run was working towards, the killed run's last line)."""
    if not killed:
        return "startup", ref[0].msg[:100], ""
    last = killed[-1]
    for j, ln in enumerate(ref):
        if ln.key == last.key and ln.nth == last.nth:
            if j + 1 < len(ref):
                return ref[j + 1].stage, ref[j + 1].msg[:100], last.msg[:100]
            return "exit", "(process exit)", last.msg[:100]
    return "unknown", "", last.msg[:100]


# ---------------------------------------------------------------- running the command


@dataclass
class Run:
    rc: int | None
    seconds: float
    launch: float
    lines: list[Line]
    killed_at: float | None = None
    orphans: list[tuple[int, str]] = field(default_factory=list)
    processes: list[str] = field(default_factory=list)
    pace: float | None = None  # a kill's delay was scaled by this (the run's pace against the reference's)


def run_command(work: Path, recipe: Path, log: Path, kill: dict | None = None, kill_mode: str = "group",
                timeout: float = 1800.0) -> Run:
    """`python -m tuneset.cli compare <recipe>` in a new session; with `kill`, SIGKILLed
    (`{"after_s": t}` after the launch, or `{"anchor": (key, nth), "delay": d}` d seconds after its
    log shows that line). Then every process it started must be gone."""
    out = log.open("w")
    launch = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "tuneset.cli", "compare", str(recipe)], cwd=work, env=command_env(work),
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    fam = Family(proc.pid)
    killed_at, anchor_seen, last_scan = None, None, 0.0
    while proc.poll() is None:
        now = time.time()
        if now - last_scan > 0.25:
            fam.scan()
            last_scan = now
        if now - launch > timeout:  # a hung run: stop it; its rc says so (-9)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        if kill is not None and killed_at is None:
            due = None
            if "after_s" in kill:
                due = launch + kill["after_s"]
            elif anchor_seen is None:
                seen = {(ln.key, ln.nth): ln.t for ln in parse_log(log.read_text(errors="replace"), launch)}
                if tuple(kill["anchor"]) in seen:
                    anchor_seen = time.time()
                    # this run's pace against the reference's over the window before the anchor
                    back = tuple(kill["window"][0])
                    ratio = (seen[tuple(kill["anchor"])] - seen[back]) / kill["window"][1] if back in seen and kill["window"][1] > 1 else 1.0
                    ratio = min(max(ratio, 0.25), 4.0)
                    kill = {**kill, "pace": ratio}
            if anchor_seen is not None:
                due = anchor_seen + kill["delay"] * kill["pace"]
            if due is not None and time.time() >= due:
                fam.scan()
                if kill_mode == "group":
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    os.kill(proc.pid, signal.SIGKILL)
                killed_at = time.time() - launch
                proc.wait()
                break
        time.sleep(0.02)
    seconds = time.time() - launch
    out.close()
    orphans = []
    deadline = time.time() + (15 if kill_mode == "leader" else 5)
    while True:  # the kernel delivers parent-death signals and tears processes down in its own time
        orphans = fam.alive()
        if not orphans or time.time() > deadline:
            break
        time.sleep(0.2)
    for pid, _ in orphans:  # ours to clean up: descendants of the command we started
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    processes = sorted({" ".join(c.split()[:6]) for c in fam.seen.values()})
    return Run(proc.returncode, seconds, launch, parse_log(log.read_text(errors="replace"), launch), killed_at, orphans, processes,
               (kill or {}).get("pace"))


# ---------------------------------------------------------------- results


VOLATILE_JSON = {"seconds", "seconds_this_run", "rows_computed", "rows_reused"}


def _h(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def frame_digest(frame) -> str:
    return _h([str(frame.schema), frame.to_dicts()])


def file_digest(path: Path) -> str | None:
    """Content of one artifact file, its timings left out; None: not compared."""
    import polars as pl

    name = path.name
    if name in (DONE, "timing.json") or name.startswith(".") or path.suffix in (".png", ".lock"):
        return None
    if path.suffix == ".parquet":
        return frame_digest(pl.read_parquet(path))
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return _h({k: [str(v.dtype), list(v.shape), hashlib.sha256(v.tobytes()).hexdigest()] for k, v in load_file(path).items()})
    if path.suffix == ".json":
        def strip(o):
            if isinstance(o, dict):
                return {k: strip(v) for k, v in o.items() if k not in VOLATILE_JSON}
            return [strip(v) for v in o] if isinstance(o, list) else o

        return _h(strip(json.loads(path.read_text())))
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


ROW_CACHE_KINDS: set[str] = set()  # store kinds of per-row caches (no completion marker), from the reference


def is_row_cache(entry: Path) -> bool:
    return (entry / "parts").is_dir() or entry.parent.name in ROW_CACHE_KINDS


def results_digest(run: Path) -> dict[str, str]:
    """What a finished compare produced, by content: '<what>' -> digest."""
    import polars as pl

    out: dict[str, str] = {}
    work = run / "work"
    cmp = work / "runs" / "crash" / "compare"
    for name, drop in (("leaderboard.csv", []), ("runs.csv", ["train_s", "eval_s"])):
        if (cmp / name).exists():
            out[f"board/{name}"] = frame_digest(pl.read_csv(cmp / name).drop(drop))
    for cur in sorted((work / "runs").glob("*/curate")):
        for name in ("audit.parquet", "curated.jsonl"):
            if (cur / name).exists():
                out[f"curation/{cur.parent.name}/{name}"] = file_digest(cur / name) or ""
    store = work / "store"
    for entry in sorted(p for p in store.glob("*/*") if p.is_dir()):
        rel = entry.relative_to(store).as_posix()
        if is_row_cache(entry):  # per-row values, whatever parts they were written in
            parts = sorted((entry / "parts").glob("*.parquet"))
            if parts:
                # every distinct (key, values) row: a key stored twice with other values shows
                frame = pl.read_parquet(parts)
                frame = frame.with_columns(pl.Series("_row", [_h(r) for r in frame.drop("_key").to_dicts()]))
                frame = frame.unique(["_key", "_row"], keep="first").sort("_key", "_row").drop("_row")
                out[f"store/{rel}/rows"] = frame_digest(frame)
            continue
        if not (entry / DONE).exists():
            continue
        for f in sorted(p for p in entry.rglob("*") if p.is_file()):
            d = file_digest(f)
            if d is not None:
                out[f"store/{rel}/{f.relative_to(entry).as_posix()}"] = d
    return out


def differences(ref: dict[str, str], got: dict[str, str]) -> list[str]:
    return sorted(k for k in ref.keys() | got.keys() if ref.get(k) != got.get(k))


def category(key: str) -> str:
    parts = key.split("/")
    return parts[1] if parts[0] == "store" else parts[0]


def unfinished_entries(run: Path) -> dict[str, dict[str, list[int]]]:
    """Store entries begun but not finished: entry -> {file: [inode, mtime_ns]} (its data files)."""
    store = run / "work" / "store"
    out = {}
    for entry in sorted(p for p in store.glob("*/*") if p.is_dir()):
        if is_row_cache(entry) or (entry / DONE).exists():
            continue
        files = {}
        for f in entry.rglob("*"):
            rel = f.relative_to(entry).as_posix()
            if f.is_file() and not f.name.startswith(".") and rel != "meta.json" and not rel.startswith("resume") \
                    and f.name != "pending.parquet":
                st = f.stat()
                files[rel] = [st.st_ino, st.st_mtime_ns]
        out[entry.relative_to(store).as_posix()] = files
    return out


def stray_temp_files(run: Path) -> list[str]:
    """Temp files of atomic writes a kill left (`.<name>.<random>`): never read (every reader
    globs names that do not start with a dot), but still on disk."""
    return sorted(p.relative_to(run).as_posix() for p in (run / "work").rglob(".*") if p.is_file())


def recomputed(run: Path, before: dict[str, dict[str, list[int]]]) -> list[str]:
    """Entries unfinished at the kill that the rerun did not finish, or in which it kept a file
    as the killed run left it (read rather than rewritten)."""
    store = run / "work" / "store"
    bad = []
    for entry, files in before.items():
        if not (store / entry / DONE).exists():
            bad.append(f"{entry}: still unfinished")
            continue
        for rel, (ino, mtime) in files.items():
            f = store / entry / rel
            if f.exists() and f.stat().st_ino == ino and f.stat().st_mtime_ns == mtime:
                bad.append(f"{entry}/{rel}: kept as the killed run left it")
    return bad


# ---------------------------------------------------------------- the benchmark


def plan_kills(rng: random.Random, ref_tl: list[dict], ref_lines: list[Line], n: int, mode: str, duration: float) -> list[dict]:
    kills = []
    groups = list(TARGETS)
    for i in range(n):
        if mode == "uniform":
            kills.append({"target": "-", "after_s": rng.uniform(0, duration)})
            continue
        target = groups[i % len(groups)]
        ivs = [iv for iv in ref_tl if iv["stage"] in TARGETS[target] and iv["end"] > iv["start"] and iv["anchor"] >= 0]
        u = rng.uniform(0, sum(iv["end"] - iv["start"] for iv in ivs))
        for iv in ivs:
            span = iv["end"] - iv["start"]
            if u <= span:
                break
            u -= span
        a = ref_lines[iv["anchor"]]
        back = next((ln for ln in reversed(ref_lines[:iv["anchor"]]) if ln.t <= a.t - PACE_WINDOW_S), ref_lines[0])
        kills.append({"target": target, "anchor": [a.key, a.nth], "delay": u, "anchor_line": a.msg[:100],
                      "window": [[back.key, back.nth], a.t - back.t], "planned_s": iv["start"] + u})
    return kills


def fresh_run_dir(work: Path, keep_as: str | None) -> Path:
    run = work / "run"
    if run.exists():
        if keep_as:
            dest = work / keep_as
            shutil.rmtree(dest, ignore_errors=True)
            dest.parent.mkdir(parents=True, exist_ok=True)
            run.rename(dest)
        else:
            shutil.rmtree(run)
    run.mkdir()
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", type=Path, default=ROOT / ".tuneset" / "crash")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--times", choices=["stratified", "uniform"], default="stratified")
    ap.add_argument("--kill", choices=["group", "leader"], default="group")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "crash.json")
    args = ap.parse_args()
    if not sys.platform.startswith("linux"):
        sys.exit("needs Linux (/proc, process groups)")
    work = args.work_dir.resolve()
    shutil.rmtree(work / "home", ignore_errors=True)
    shutil.rmtree(work / "trials", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    recipe = setup(work)
    result: dict = {"machine": f"{platform.machine()} Linux, {os.cpu_count()} cores, load average at start "
                               f"{os.getloadavg()[0]:.1f} (shared with a background benchmark)",
                    "command": " ".join(["python", *sys.argv]), "recipe": recipe.read_text(),
                    "times": args.times, "kill": args.kill, "seed": args.seed}

    run = fresh_run_dir(work, None)
    print("reference run ...", flush=True)
    ref = run_command(work, recipe, run / "compare.log")
    if ref.rc != 0:
        sys.exit(f"the reference run failed (rc {ref.rc}); see {run / 'compare.log'}")
    ROW_CACHE_KINDS.update(p.parent.parent.name for p in (run / "work" / "store").glob("*/*/parts"))
    classify(ref.lines)
    ref_tl = timeline(ref.lines, ref.seconds)
    ref_digest = results_digest(run)
    result["reference"] = {"seconds": round(ref.seconds, 1), "stage_seconds": stage_seconds(ref_tl), "artifacts_compared": len(ref_digest),
                           "processes": ref.processes, "orphans_after_exit": ref.orphans,
                           "timeline": [{**{k: round(v, 2) if isinstance(v, float) else v for k, v in iv.items()}} for iv in ref_tl]}
    print(f"  {ref.seconds:.1f}s; stages {stage_seconds(ref_tl)}; {len(ref_digest)} artifacts compared", flush=True)

    run = fresh_run_dir(work, "reference")
    print("control run (uninterrupted) ...", flush=True)
    ctl = run_command(work, recipe, run / "compare.log")
    ctl_diff = differences(ref_digest, results_digest(run)) if ctl.rc == 0 else ["(failed)"]
    result["control"] = {"seconds": round(ctl.seconds, 1), "rc": ctl.rc, "identical": not ctl_diff, "differences": ctl_diff[:20],
                         "orphans_after_exit": ctl.orphans}
    print(f"  {ctl.seconds:.1f}s; identical to the reference: {not ctl_diff} {ctl_diff[:5]}", flush=True)

    rng = random.Random(args.seed)
    trials = []
    for i, plan in enumerate(plan_kills(rng, ref_tl, ref.lines, args.trials, args.times, ref.seconds), start=1):
        run = fresh_run_dir(work, "control" if i == 1 else f"trials/{i - 1:02d}")
        killed = run_command(work, recipe, run / "killed.log", plan, args.kill)
        stage, towards, last = stage_at_kill(killed.lines, ref.lines) if killed.killed_at is not None else ("finished", "", "")
        unfinished = unfinished_entries(run)
        strays_at_kill = stray_temp_files(run)
        rerun = run_command(work, recipe, run / "rerun.log")
        diff = differences(ref_digest, results_digest(run)) if rerun.rc == 0 else ["(rerun failed)"]
        not_redone = recomputed(run, unfinished)
        strays_after = stray_temp_files(run)
        t = {"trial": i, "target": plan["target"], "plan": {k: v for k, v in plan.items() if k != "anchor"},
             "kill_at_s": None if killed.killed_at is None else round(killed.killed_at, 2), "pace": killed.pace, "stage": stage,
             "working_on": towards, "last_line": last, "processes": killed.processes,
             "orphans": [f"{p} {c}" for p, c in killed.orphans],
             "unfinished_at_kill": {k: sorted(v) for k, v in unfinished.items()},
             "stray_temp_files_at_kill": strays_at_kill, "stray_temp_files_after_rerun": strays_after, "not_recomputed": not_redone,
             "rerun_s": round(rerun.seconds, 1), "rerun_rc": rerun.rc, "rerun_orphans": [f"{p} {c}" for p, c in rerun.orphans],
             "identical": not diff and not not_redone, "differences": diff[:30],
             "differences_by_kind": {c: sum(category(k) == c for k in diff) for c in sorted({category(k) for k in diff})}}
        trials.append(t)
        print(f"trial {i:2d}: target {t['target']:9s} killed at {t['kill_at_s']}s in {stage:12s} ({towards[:60]}); "
              f"unfinished {len(unfinished)}; orphans {len(t['orphans'])}; rerun {t['rerun_s']}s rc {rerun.rc}; "
              f"identical {t['identical']} {diff[:3]} {not_redone[:2]}", flush=True)
        result["trials"] = trials
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    fresh_run_dir(work, f"trials/{len(trials):02d}")

    stages: dict[str, int] = {}
    for t in trials:
        stages[t["stage"]] = stages.get(t["stage"], 0) + 1
    result["summary"] = {
        "trials": len(trials), "identical": sum(t["identical"] for t in trials),
        "with_orphans": sum(bool(t["orphans"]) for t in trials), "orphans": sum(len(t["orphans"]) for t in trials),
        "rerun_orphans": sum(len(t["rerun_orphans"]) for t in trials), "reruns_failed": sum(t["rerun_rc"] != 0 for t in trials),
        "stages_hit": stages, "issue_stages_hit": {g: sum(t["stage"] in s for t in trials) for g, s in TARGETS.items()},
        "unfinished_entries_at_kill": sum(len(t["unfinished_at_kill"]) for t in trials),
        "unfinished_entries_not_recomputed": sum(len(t["not_recomputed"]) for t in trials),
        "control_identical": result["control"]["identical"], "reference_seconds": result["reference"]["seconds"]}
    args.out.write_text(json.dumps(result, indent=1))
    print(markdown(result))


def markdown(result: dict) -> str:
    rows = ["| # | target | killed at (s) | stage hit (from the log) | working on | unfinished entries | orphans | rerun (s) | identical |",
            "|---|---|---|---|---|---|---|---|---|"]
    for t in result["trials"]:
        rows.append(f"| {t['trial']} | {t['target']} | {t['kill_at_s']} | {t['stage']} | {t['working_on'][:70].replace('|', '/')} | "
                    f"{len(t['unfinished_at_kill'])} | {len(t['orphans'])} | {t['rerun_s']} | {'yes' if t['identical'] else 'NO'} |")
    s = result.get("summary", {})
    if s:
        rows.append(f"\nIdentical {s['identical']}/{s['trials']}; orphans {s['orphans']} (after reruns: {s['rerun_orphans']}); "
                    f"failed reruns {s['reruns_failed']}; stages hit {s['stages_hit']}; store entries unfinished at a kill "
                    f"{s['unfinished_entries_at_kill']}, not recomputed by the rerun {s['unfinished_entries_not_recomputed']}; "
                    f"uninterrupted run {s['reference_seconds']} s, control run identical: {s['control_identical']}.")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
