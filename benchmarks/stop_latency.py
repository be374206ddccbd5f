"""How fast `tuneset score` stops on SIGTERM or SIGINT in the middle of a score shard, and that it
leaves no process behind (issue 14, item 7: the signals were once ignored for >35 s mid-shard).

    OMP_NUM_THREADS=1 python benchmarks/stop_latency.py [--trials 5] [--seed 0]

Each trial starts, in a fresh work dir and its own session, `python -m tuneset.cli score` on the
shipped demo recipe with `perplexity` and `ifd` on the default model (SmolLM2-135M: LM forward
passes, the longest-running shard kind; 256-row shards). Once its log shows the first shard done
(others still running), it waits a seeded random 0.5-4 s, sends the signal to the command's
process alone (as `kill <pid>` or a service manager does: the command must stop its own workers
and Prefect server) and measures:
- `exit_s`: signal to the command's exit (waitpid);
- `tree_s`: signal until every process of its tree seen while it ran is gone;
- the exit status, and any process still alive 15 s after the signal (an orphan, then killed).
Signals alternate TERM, INT. Writes benchmarks/results/stop_latency.json (`--out`) and prints a
Markdown table with min / median / max per signal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from crash import Family

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "tuneset" / "demo" / "demo.yaml"
SHARD_STARTED = "score perplexity: "  # a shard finished; the next ones are running


def trial(sig: signal.Signals, delay: float, work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    env["TUNESET_HOME"] = str(work / "home")
    log = work / "score.log"
    cmd = [sys.executable, "-m", "tuneset.cli", "score", str(DEMO), "--set", f"work_dir={work / 'run'}",
           "--set", "score.selectors=[perplexity, ifd]"]
    with log.open("w") as out:
        # SIGINT back to its default: a job started in the background (`&`, nohup) inherits it
        # ignored, and Python then never turns it into KeyboardInterrupt.
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    family = Family(proc.pid)  # the command's processes, as crash.py tracks them
    deadline = time.monotonic() + 600
    while SHARD_STARTED not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"no score shard started (exit {proc.returncode}); see {log}")
        family.scan()
        time.sleep(0.1)
    end = time.monotonic() + delay
    while time.monotonic() < end:
        family.scan()
        time.sleep(0.05)
    if proc.poll() is not None:
        raise RuntimeError(f"the command finished before the signal; see {log}")
    family.scan()
    t0 = time.monotonic()
    proc.send_signal(sig)
    proc.wait(timeout=120)
    exit_s = time.monotonic() - t0
    while family.alive() and time.monotonic() - t0 < 15:
        time.sleep(0.05)
    tree_s = time.monotonic() - t0
    orphans = family.alive()
    for p, _ in orphans:
        os.kill(p, signal.SIGKILL)
    return {"signal": sig.name, "delay_s": round(delay, 2), "exit_s": round(exit_s, 2),
            "tree_s": round(tree_s, 2), "returncode": proc.returncode, "processes": len(family.seen),
            "orphans": len(orphans), "last_log": log.read_text(errors="replace").strip().splitlines()[-1][:160]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=5, help="per signal")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "stop_latency.json")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    runs = []
    for i in range(2 * args.trials):
        sig = (signal.SIGTERM, signal.SIGINT)[i % 2]
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(trial(sig, rng.uniform(0.5, 4.0), Path(tmp)))
        print(json.dumps(runs[-1]), flush=True)
    table = ["| signal | trials | exit s (min / median / max) | whole tree gone s (max) | nonzero exit | orphans |",
             "|---|---|---|---|---|---|"]
    for name in ("SIGTERM", "SIGINT"):
        rs = [r for r in runs if r["signal"] == name]
        ex = [r["exit_s"] for r in rs]
        table.append(f"| {name} | {len(rs)} | {min(ex):.2f} / {statistics.median(ex):.2f} / {max(ex):.2f} | "
                     f"{max(r['tree_s'] for r in rs):.2f} | {sum(r['returncode'] != 0 for r in rs)}/{len(rs)} | "
                     f"{sum(r['orphans'] for r in rs)} |")
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "runs": runs, "table": table}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
