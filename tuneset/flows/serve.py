"""Serve a recipe's pipeline on a cron schedule (a long-running process; stop it with SIGTERM).

Schedules need a real Prefect API (the ephemeral one cannot schedule): with PREFECT_API_URL set
we use that server, otherwise we start a local `prefect server` for the lifetime of `serve`."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from tuneset.errors import TunesetError
from tuneset.flows.pipeline import scheduled_pipeline

log = logging.getLogger("tuneset.serve")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def prefect_api():
    """Yield an API URL: the user's server, or a local one we start and stop."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield PREFECT_API_URL.value()
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise TunesetError("could not start a local Prefect server; start one with `prefect server start` "
                                       "and set PREFECT_API_URL") from None
                time.sleep(1)
        log.info("started a local Prefect server at %s (UI: http://127.0.0.1:%d)", url, port)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def serve(recipe_path: str, cron: str, overrides: list[str] | None = None, name: str | None = None) -> None:
    from prefect.schedules import Cron

    try:
        schedule = Cron(cron)
    except ValueError as e:
        raise TunesetError(f"bad cron expression '{cron}': {e}") from None
    with prefect_api():
        scheduled_pipeline.serve(
            name=name or Path(recipe_path).stem,
            schedule=schedule,
            limit=1,  # one run at a time: a tick that comes while the last still runs waits, never overlaps
            parameters={"recipe_path": str(Path(recipe_path).resolve()), "overrides": overrides or []},
        )
