"""A scheduled curation flow over a growing pool, end to end (issue 13).

    python benchmarks/schedule.py --work-dir <dir> [--ticks 6]

Starts a Prefect server, serves the demo pipeline on a one-minute cron (`tuneset serve`) over a
pool folder, and, as a separate producer, drops a new file of 20 demo rows into the folder every
minute (one of them a re-sent copy of an earlier file). Midway it also starts a manual
`tuneset pipeline` run of the same recipe beside the schedule (an overlapping tick). It then lists
the runs (`tuneset runs`), the run-report artifacts through the Prefect API, and the serve log's
per-tick "rows new" lines, into `<work-dir>/schedule.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "tuneset" / "demo" / "data"
BATCH = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_recipe(work: Path) -> Path:
    tasks = json.loads((DEMO / "tasks.json").read_text())
    for t in tasks.values():
        t["dev"], t["test"] = str(DEMO / t["dev"]), str(DEMO / t["test"])
    (work / "tasks.json").write_text(json.dumps(tasks))
    recipe = work / "scheduled.yaml"
    recipe.write_text(
        "name: scheduled\npool: pool\ntasks: tasks.json\nwork_dir: work\nmodel: {max_length: 128}\n"
        "score: {selectors: [length, perplexity]}\nselect: {weights: {length: 1, -perplexity: 1}, budget: 20}\n"
        "schedule: {retrain_min_change: 1.0}\nfinetune: {epochs: 1}\nevaluate: {max_test_rows: 20, max_new_tokens: 8}\n")
    return recipe


def drop(pool: Path, lines: list[str], k: int) -> Path:
    """File k of the producer: the next 20 demo rows, written then renamed (never read half-written)."""
    path = pool / f"{k:03d}.jsonl"
    tmp = pool / f".{k:03d}.tmp"
    tmp.write_text("\n".join(lines[k * BATCH:(k + 1) * BATCH]) + "\n")
    tmp.replace(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", type=Path, default=ROOT / ".tuneset" / "schedule")
    ap.add_argument("--ticks", type=int, default=6)
    args = ap.parse_args()
    work = args.work_dir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    (work / "pool").mkdir(parents=True)
    recipe = write_recipe(work)
    lines = (DEMO / "pool.jsonl").read_text().splitlines()
    drop(work / "pool", lines, 0)

    port = free_port()
    env = {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_HOME": str(work / "prefect")}
    bin_dir = Path(sys.executable).parent
    server = subprocess.Popen([str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=open(work / "server.log", "w"), stderr=subprocess.STDOUT)
    serve = None
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        serve = subprocess.Popen([str(bin_dir / "tuneset"), "serve", str(recipe), "--cron", "* * * * *"], env=env,
                                 stdout=open(work / "serve.log", "w"), stderr=subprocess.STDOUT)
        k, t0, manual = 1, time.time(), None
        while time.time() - t0 < 60 * (args.ticks + 1):
            time.sleep(60 - (time.time() - t0) % 60 + 5)  # just after each tick starts
            path = drop(work / "pool", lines, k)
            if k == 3:  # a re-sent copy of the first file: adds nothing
                shutil.copy(work / "pool" / "000.jsonl", work / "pool" / "003-resent.jsonl")
            if k == 4 and manual is None:  # a manual run beside the schedule
                manual = subprocess.Popen([str(bin_dir / "tuneset"), "pipeline", str(recipe)], env=env,
                                          stdout=open(work / "manual.log", "w"), stderr=subprocess.STDOUT)
            print(f"dropped {path.name}", flush=True)
            k += 1
        if manual is not None:
            manual.wait(timeout=900)
        time.sleep(30)
        runs = subprocess.run([str(bin_dir / "tuneset"), "runs", str(recipe)], env={**env, "COLUMNS": "200"},
                              capture_output=True, text=True).stdout
        artifacts = subprocess.run([str(bin_dir / "prefect"), "artifact", "ls"], env={**env, "COLUMNS": "200"},
                                   capture_output=True, text=True).stdout
    finally:
        for p in (serve, server):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=60)
    ticks = [line for line in (work / "serve.log").read_text().splitlines() if "rows new" in line or "Run report" in line]
    manual_log = (work / "manual.log").read_text().splitlines() if (work / "manual.log").exists() else []
    text = ("# Scheduled pipeline over a growing pool\n\n## tuneset runs\n\n```\n" + runs + "```\n\n## prefect artifact ls\n\n```\n"
            + artifacts + "```\n\n## Serve log: each tick's new rows and report\n\n```\n" + "\n".join(ticks)
            + "\n```\n\n## The overlapping manual run\n\n```\n" + "\n".join(line for line in manual_log if "rows new" in line or "Run report" in line)
            + "\n```\n")
    (work / "schedule.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
