"""A Prefect API for a command's lifetime that cannot outlive it.

Prefect's ephemeral mode starts a temporary server per run, and a SIGKILLed run orphans it (each
one costs 5-16% of a core until someone notices). Ours is started with a parent-death signal, so
the kernel stops it whenever the command dies, however it dies. With PREFECT_API_URL set, the
user's server is used and nothing is started.

Servers start one at a time per Prefect home: each migrates the shared SQLite database on start, and
two commands started together on a fresh home raced there ("duplicate column name"), so one died
before it answered."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tuneset.errors import TunesetError

log = logging.getLogger("tuneset.api")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass  # not Linux: the server is still stopped on every ordinary exit


def _drain_to_api(timeout: float = 10.0) -> None:
    """Send the run logs and events still queued while our server is up. Prefect's workers drain
    at interpreter exit, when the server is already stopped: each batch then retried against a
    closed port, and a finished command sat ~70 s in its exit ("Error logging to API")."""
    import asyncio

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    try:
        asyncio.get_running_loop()
        return  # drain_all would hand back a coroutine; an async caller drains its own
    except RuntimeError:
        pass
    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=timeout)
        except Exception as e:  # a worker that cannot drain must not mask the command's outcome
            log.debug("could not drain %s: %s", worker.__name__, e)


def _start_lock():
    """A lock beside the Prefect home's database, held from a server's start until it answers."""
    from filelock import FileLock
    from prefect.settings import PREFECT_HOME

    home = Path(PREFECT_HOME.value()).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return FileLock(str(home / "tuneset-server-start.lock"))


def _wait_healthy(proc: subprocess.Popen, url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise TunesetError("could not start a local Prefect server; start one with `prefect server start` "
                                   "and set PREFECT_API_URL") from None
            time.sleep(0.5)


@contextmanager
def prefect_api() -> Iterator[str]:
    """Yield an API URL: the user's server, or a loopback one we start, tied to this process."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield PREFECT_API_URL.value()
        return
    with _start_lock():
        port = _free_port()
        url = f"http://127.0.0.1:{port}/api"
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "error"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy(),
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        try:
            _wait_healthy(proc, url)
        except BaseException:
            proc.terminate()
            raise
    try:
        log.debug("local Prefect API at %s (UI: http://127.0.0.1:%d)", url, port)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                _drain_to_api()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
