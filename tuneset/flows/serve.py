"""Serve a recipe's pipeline on a cron schedule (a long-running process; stop it with SIGTERM)."""

from __future__ import annotations

from pathlib import Path

from tuneset.flows.pipeline import scheduled_pipeline


def serve(recipe_path: str, cron: str, overrides: list[str] | None = None, name: str | None = None) -> None:
    from prefect.schedules import Cron

    Cron(cron)  # validate early: a bad expression should fail here, not at the first tick
    scheduled_pipeline.serve(
        name=name or Path(recipe_path).stem,
        schedule=Cron(cron),
        parameters={"recipe_path": str(Path(recipe_path).resolve()), "overrides": overrides or []},
    )
