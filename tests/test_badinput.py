"""Every case of the bad-input corpus (tests/badinput.py) ends as it says: a one-line error that
names file, line and field, a quarantine whose accounting adds up, or every row kept. Nothing
raises anything else, and no row disappears."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from badinput import Case, cases, run_cli, write_case  # noqa: E402

from tuneset.data.io import load_rows, write_rows  # noqa: E402
from tuneset.errors import DataError, TunesetError  # noqa: E402

CORPUS = cases()
LOADS = [c for c in CORPUS if c.run != "cli"]
CLI = [c for c in CORPUS if c.run == "cli"]


def test_the_corpus_is_big_enough_and_covers_every_outcome():
    assert len(CORPUS) >= 200
    assert {c.expect for c in CORPUS} == {"error", "quarantine", "ok"}
    assert 20 <= len(CLI) <= 40


def _check_error(case: Case, e: TunesetError) -> None:
    msg = str(e)
    assert "\n" not in msg, f"not one line: {msg!r}"
    assert "Traceback" not in msg
    for text in case.names:
        assert text in msg, f"{text!r} not in {msg!r}"
    if case.line is not None or case.field is not None:
        assert isinstance(e, DataError), f"a row's fault must be a DataError: {msg}"
        assert Path(e.file).name in msg and f":{e.line}: field '{e.field}'" in msg
    if case.line is not None:
        assert e.line == case.line, msg
    if case.field is not None:
        assert e.field == case.field or e.field.startswith(f"{case.field}."), msg


@pytest.mark.parametrize("case", LOADS, ids=[c.name for c in LOADS])
def test_load_case(case: Case, tmp_path: Path) -> None:
    write_case(case, tmp_path)
    qfile = tmp_path / "q.jsonl" if case.run == "quarantine" else None
    if case.expect == "error":
        with pytest.raises(TunesetError) as info:
            load_rows(tmp_path / case.target, quarantine=qfile, columns=case.columns)
        _check_error(case, info.value)
        if qfile is not None and case.rows is not None:  # every row bad: still each one accounted for
            assert len(qfile.read_text().splitlines()) == case.rows
        return
    res = load_rows(tmp_path / case.target, quarantine=qfile, columns=case.columns)
    assert res.n_read == case.rows, "rows silently lost or invented"
    assert res.rows.height == case.kept
    assert res.n_read == res.rows.height + len(res.quarantined)
    if case.expect == "quarantine":
        written = [json.loads(ln) for ln in qfile.read_text(encoding="utf-8").splitlines()]
        assert len(written) == len(res.quarantined) == case.rows - case.kept
        assert sorted(q["line"] for q in written) == sorted(case.bad_lines)
        assert all(q["file"] and q["field"] and q["reason"] for q in written)
    else:
        assert not res.quarantined
    # what was kept can be written and read back: no crash later, no row lost on the way out
    for suffix in (".jsonl", ".parquet"):
        out = write_rows(tmp_path / f"out{suffix}", res.rows)
        assert load_rows(out).rows.height == case.kept


@pytest.fixture(scope="module", autouse=True)
def prefect_logging_on_real_stderr():
    """Import the flows (and so Prefect) outside a CliRunner: Prefect binds its log handler to the
    stderr it sees first, and a closed CliRunner buffer there breaks every later module's logging."""
    from prefect.logging.configuration import setup_logging

    import tuneset.flows.compare  # noqa: F401

    setup_logging()
    yield


@pytest.fixture(scope="module")
def flow_results(tmp_path_factory) -> dict[str, dict]:
    """The flow-running CLI cases, run by tests/badinput.py in one process of their own against
    one Prefect server (under pytest's capture, Prefect's print logging loops into a RecursionError)."""
    root = tmp_path_factory.mktemp("flows")
    names = [c.name for c in CLI if c.flow]
    proc = subprocess.run([sys.executable, str(Path(__file__).parent / "badinput.py"), "--run-flows", str(root),
                           str(root / "result.json"), *names], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((root / "result.json").read_text())
    for k, name in enumerate(names):
        out[name]["folder"] = str(root / f"case{k}")
    return out


@pytest.mark.parametrize("case", CLI, ids=[c.name for c in CLI])
def test_cli_case(case: Case, tmp_path: Path, request) -> None:
    if case.flow:
        res = request.getfixturevalue("flow_results")[case.name]
        folder = Path(res["folder"])
    else:
        res, folder = run_cli(case, tmp_path), tmp_path
    try:
        _check_cli(case, res, folder)
    except AssertionError:
        if case.known:
            pytest.xfail(case.known)
        raise


def _check_cli(case: Case, res: dict, folder: Path) -> None:
    output = str(res["output"])
    assert res["exception"] is None, res["exception"]
    assert "Traceback" not in output, output
    assert not res["logged_tracebacks"], f"Prefect logged a traceback with: {res['logged_tracebacks']}"
    if case.expect == "error":
        assert res["exit_code"] == 2, output
        assert output.startswith("error: ") and output.count("\n") == 1, output
        for text in case.names:
            assert text in output, output
    else:
        assert res["exit_code"] == 0, output
        assert len((folder / "out.jsonl").read_text().splitlines()) == case.kept
    assert not (folder.parent.parent / "escaped").exists(), "a recipe name wrote outside its work dir"
