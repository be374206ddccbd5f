"""Serve a recipe's pipeline on a cron schedule (a long-running process; stop it with SIGTERM).

Schedules need a real Prefect API (the ephemeral one cannot schedule): with PREFECT_API_URL set
we use that server, otherwise a local one lives as long as `serve` (`prefect_api`)."""

from __future__ import annotations

import logging
from pathlib import Path

from tuneset.errors import TunesetError
from tuneset.flows.api import prefect_api
from tuneset.flows.pipeline import scheduled_pipeline

log = logging.getLogger("tuneset.serve")


def cron_schedule(cron: str):
    """The schedule `cron` stands for, or a one-line error naming it (checked before any server starts)."""
    from prefect.schedules import Cron

    try:
        return Cron(cron)
    except ValueError as e:
        raise TunesetError(f"bad cron expression '{cron}': {e}; e.g. '0 3 * * *' (03:00 daily)") from None


def serve(recipe_path: str, cron: str, overrides: list[str] | None = None) -> None:
    schedule = cron_schedule(cron)
    with prefect_api():
        scheduled_pipeline.serve(
            name=Path(recipe_path).stem,
            schedule=schedule,
            limit=1,  # one run at a time here; the recipe's run lock also guards against other processes
            tags=["tuneset", "command:serve", f"recipe:{Path(recipe_path).stem}"],
            parameters={"recipe_path": str(Path(recipe_path).resolve()), "overrides": overrides or []},
        )
