"""Progress that reads well in a log file: a line with step/total, rate and ETA at a steady
interval (a terminal bar shows nothing when output goes to a file, and long work looked hung)."""

from __future__ import annotations

import logging
import threading
import time

from tuneset.errors import TunesetError

log = logging.getLogger("tuneset.progress")

# Set when the process is asked to stop (the CLI sets it on SIGTERM/SIGINT). Work in worker threads
# checks it between batches: Prefect joins its task threads before a flow can end, so a shard in
# flight otherwise held the exit until it finished.
STOP = threading.Event()


class Stopped(TunesetError):
    """Unfinished work ends here because the process was asked to stop; finished work is kept."""


def check_stop() -> None:
    if STOP.is_set():
        raise Stopped("stopped on request; rerun the same command to resume")


class ProgressLog:
    """Call `update(done)` as work advances; logs at most every `every` seconds, and at the end.
    `start`: work a resumed run finished before (counted in done, not in this run's rate: a
    resumed fine-tune claimed 95 steps/s and an ETA of 0 from the steps it had not just done)."""

    def __init__(self, what: str, total: int, unit: str = "steps", every: float = 30.0, start: int = 0):
        self.what, self.total, self.unit, self.every = what, total, unit, every
        self.t0 = self.last = time.perf_counter()
        self.done = self.start = start

    def update(self, done: int, extra: str = "") -> None:
        check_stop()
        self.done = done
        now = time.perf_counter()
        if now - self.last >= self.every or done >= self.total:
            self.last = now
            log.info("%s", self.line(extra))

    def line(self, extra: str = "") -> str:
        elapsed = time.perf_counter() - self.t0
        rate = (self.done - self.start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        tail = f", {extra}" if extra else ""
        return (f"{self.what}: {self.done}/{self.total} {self.unit} ({100 * self.done / max(self.total, 1):.0f}%), "
                f"{rate:.2f} {self.unit}/s, elapsed {_hms(elapsed)}, ETA {_hms(eta)}{tail}")


def _hms(seconds: float) -> str:
    if seconds != seconds:  # NaN: no rate yet
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
