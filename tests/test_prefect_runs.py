"""Prefect integration: what a command leaves in Prefect (run names, tags, one parent run) and
what importing tuneset leaves on disk (nothing in the current directory)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner


def test_importing_the_flows_creates_nothing_in_the_current_directory(tmp_path_factory):
    cwd, home = tmp_path_factory.mktemp("cwd"), tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if k not in ("TUNESET_HOME", "PREFECT_HOME", "PREFECT_API_URL")}
    env["HOME"] = str(home)
    code = "import tuneset.flows, tuneset.flows.compare, tuneset.flows.select, tuneset.flows.serve, tuneset.cli"
    subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, check=True, timeout=300)
    assert list(cwd.iterdir()) == []
    assert (home / ".tuneset" / "prefect").is_dir()  # Prefect's home is the user's, not the directory's


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.logging.configuration import setup_logging
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        setup_logging()
        yield


def test_select_is_one_named_tagged_parent_run(prefect_server, tiny_recipe, tmp_path):
    from prefect.client.orchestration import get_client

    from tuneset.cli import app

    r = tiny_recipe()
    res = CliRunner().invoke(app, [
        "select", str(r.pool), "--selector", "length", "--target", str(tmp_path / "tasks.json"), "--budget", "12",
        "--out", str(tmp_path / "sel.jsonl"), "--set", "name=oneoff", "--set", f"work_dir={r.work_dir}",
        "--set", f"model.name={r.model.name}", "--set", f"model.embedder={r.model.embedder}", "--set", "model.device=cpu"])
    assert res.exit_code == 0, res.output
    with get_client(sync_client=True) as client:
        runs = [f for f in client.read_flow_runs() if "recipe:oneoff" in f.tags]
    top = [f for f in runs if f.parent_task_run_id is None]
    assert [f.name for f in top] == ["oneoff-select"]
    assert {f.name for f in runs} == {"oneoff-select", "oneoff-curate", "oneoff-score"}
    assert all({"tuneset", "command:select"} <= set(f.tags) for f in runs), [f.tags for f in runs]
