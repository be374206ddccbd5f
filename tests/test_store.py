from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

from tuneset.data.io import atomic_path, write_parquet
from tuneset.store import DONE, ArtifactStore


def test_key_is_stable_and_sensitive_to_every_part(tmp_path):
    store = ArtifactStore(tmp_path)
    k = store.key("fp1", {"shard_size": 8}, "model-a")
    assert k == ArtifactStore(tmp_path / "elsewhere").key("fp1", {"shard_size": 8}, "model-a")
    assert k != store.key("fp2", {"shard_size": 8}, "model-a")
    assert k != store.key("fp1", {"shard_size": 9}, "model-a")
    assert k != store.key("fp1", {"shard_size": 8}, "model-b")


def test_cached_runs_make_once_then_reuses(tmp_path, caplog):
    """A reuse is said (INFO), so a rerun shows the work it did not redo."""
    import logging

    caplog.set_level(logging.INFO, logger="tuneset.store")
    store = ArtifactStore(tmp_path)
    calls = []

    def make(folder):
        calls.append(folder)
        (folder / "out.txt").write_text("built")

    first = store.cached("scores", ("rows-fp", 8), make, {"from": "rows"})
    second = store.cached("scores", ("rows-fp", 8), make, {"from": "rows"})
    assert first == second == tmp_path / "scores" / store.key("scores", "rows-fp", 8)
    assert calls == [first]
    assert f"reused scores/{first.name} (built before)" in caplog.text
    assert (first / "out.txt").read_text() == "built"
    assert (first / DONE).exists()
    assert json.loads((first / "meta.json").read_text()) == {"from": "rows"}
    assert store.is_complete("scores", first.name)


def test_a_build_waiting_on_another_process_says_so_then_reuses_its_artifact(tmp_path, caplog):
    import logging
    import threading
    import time

    store, builds = ArtifactStore(tmp_path), []
    key = store.key("scores", "x")
    with caplog.at_level(logging.WARNING, logger="tuneset.store"), store.lock("scores", key):  # another builder
        waiter = threading.Thread(target=store.cached, args=("scores", ("x",), lambda d: builds.append(1)))
        waiter.start()
        time.sleep(1)
        assert waiter.is_alive() and f"waiting for another process building scores/{key}" in caplog.text
        store.begin("scores", key, {})
        store.finish("scores", key)  # the other builder finishes
    waiter.join(timeout=30)
    assert not waiter.is_alive() and builds == []


def test_cached_with_other_key_builds_again(tmp_path):
    store = ArtifactStore(tmp_path)
    calls = []
    a = store.cached("scores", ("k1",), calls.append)
    b = store.cached("scores", ("k2",), calls.append)
    c = store.cached("losses", ("k1",), calls.append)  # the kind is part of the key and the folder
    assert calls == [a, b, c] and len({a.name, b.name, c.name}) == 3 and c.parent.name == "losses"


def test_failed_build_is_not_marked_complete_and_is_retried(tmp_path):
    store = ArtifactStore(tmp_path)
    calls = []

    def failing(folder):
        calls.append("fail")
        (folder / "partial.txt").write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        store.cached("m", ("k",), failing)
    assert not store.is_complete("m", store.key("m", "k"))

    def resume(folder):
        calls.append("resume")
        assert (folder / "partial.txt").read_text() == "half"

    store.cached("m", ("k",), resume)
    assert calls == ["fail", "resume"]
    assert store.is_complete("m", store.key("m", "k"))


def test_atomic_path_leaves_nothing_when_writer_raises(tmp_path):
    target = tmp_path / "sub" / "result.parquet"
    with pytest.raises(ValueError, match="half-way"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"PAR1 partial")
            raise ValueError("half-way")
    assert not target.exists()
    assert list((tmp_path / "sub").iterdir()) == []


def test_atomic_path_keeps_previous_content_on_failure(tmp_path):
    frame = pl.DataFrame({"id": ["a", "b"], "score": [1.0, 2.0]})
    target = write_parquet(frame, tmp_path / "x.parquet")
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"garbage")
            raise ValueError
    assert pl.read_parquet(target).equals(frame)
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_every_cache_goes_through_the_one_helper():
    """No hand-written check-then-build: only the helper itself marks completion (the LESS gradient
    datastore did too, per chunk of rows; it is a per-row cache now)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "tuneset"
    hand = {str(p.relative_to(root)) for p in root.rglob("*.py") if re.search(r"\.finish\(", p.read_text())}
    assert hand == {"store.py"}
    # whole artifacts (`cached`) and per-row values (`rows`) share the store's keys, locks and layout
    calls = sum(len(re.findall(r"\.(cached|rows)\(", p.read_text())) for p in root.rglob("*.py") if p.name != "store.py")
    assert calls >= 10


def _values(keys: list[str]):
    return pl.DataFrame({"v": [float(len(k)) + ord(k[0]) for k in keys]})


def test_row_cache_computes_each_key_once_and_returns_keys_in_order(tmp_path):
    store = ArtifactStore(tmp_path)
    made: list[list[str]] = []

    def make_for(keys):
        def make(idx, _progress):
            made.append([keys[i] for i in idx])
            return _values([keys[i] for i in idx])
        return make

    cache = store.rows("feat", ("model-a",))
    keys = ["a", "bb", "a", "ccc"]
    out = cache.fetch(keys, make_for(keys), chunk=2)
    assert made == [["a", "bb"], ["ccc"]]  # duplicate key computed once, two rows a part
    assert out["v"].to_list() == _values(keys)["v"].to_list()
    made.clear()
    keys2 = ["ccc", "dd", "a"]
    out2 = store.rows("feat", ("model-a",)).fetch(keys2, make_for(keys2), chunk=8)
    assert made == [["dd"]] and out2["v"].to_list() == _values(keys2)["v"].to_list()
    assert store.rows("feat", ("model-b",)).missing(keys2) == [0, 1, 2]  # another model: nothing shared


def test_row_cache_get_names_missing_keys_and_compacts_many_parts(tmp_path):
    cache = ArtifactStore(tmp_path).rows("feat", ())
    for k in range(cache.MAX_PARTS + 3):
        cache.add([f"k{k}"], _values([f"k{k}"]))
    with pytest.raises(KeyError, match="1 keys not stored"):
        cache.get(["k0", "nope"])
    keys = [f"k{k}" for k in reversed(range(cache.MAX_PARTS + 3))]
    assert cache.get(keys)["v"].to_list() == _values(keys)["v"].to_list()
    assert len(list(cache.parts.glob("*.parquet"))) == 1  # merged into one part, values unchanged
    assert cache.get(keys)["v"].to_list() == _values(keys)["v"].to_list()


def test_row_cache_get_reads_only_the_row_groups_holding_wanted_keys(tmp_path, monkeypatch):
    """Lookups decode the row groups that hold wanted keys, not whole parts: the values of a key
    set spread over row groups and parts come back right, in the asked order, each once."""
    import pyarrow.parquet as pq

    from tuneset import store as store_mod

    monkeypatch.setattr(store_mod, "ROW_GROUP", 4)
    cache = ArtifactStore(tmp_path).rows("feat", ())
    cache.add([f"a{i}" for i in range(40)], pl.DataFrame({"v": [[float(i), 0.0] for i in range(40)]}))
    cache.add(["a3", "b0", "b1"], pl.DataFrame({"v": [[3.0, 0.0], [20.0, 0.0], [21.0, 0.0]]}))  # a3 stored twice
    read: dict[int, list[int]] = {}
    real = pq.ParquetFile.read_row_groups

    def spy(self, groups, *a, **k):
        read[self.metadata.num_rows] = list(groups)
        return real(self, groups, *a, **k)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", spy)
    out = cache.get(["b1", "a39", "a3", "a0", "b1"])
    assert [v[0] for v in out["v"].to_list()] == [21.0, 39.0, 3.0, 0.0, 21.0]
    assert read[3] == [0]
    assert read[40] == [0, 9]  # of its 10 row groups (a0-a3 ... a36-a39), the two with wanted keys
    read.clear()
    assert cache.get([f"a{i}" for i in range(40)])["v"].to_list() == [[float(i), 0.0] for i in range(40)]
    assert read == {}  # wanted rows in most row groups: one plain scan


def _machine(monkeypatch, tmp_path, name: str, url: str) -> ArtifactStore:
    """A store on `url` as seen from another machine: its own local mirror."""
    monkeypatch.setenv("TUNESET_CACHE", str(tmp_path / name))
    return ArtifactStore(url)


def test_a_store_on_an_fsspec_url_is_shared_by_machines_and_written_marker_last(tmp_path, monkeypatch):
    import fsspec

    url = f"memory://tuneset-test-{tmp_path.name}/store"
    a, b = _machine(monkeypatch, tmp_path, "a", url), _machine(monkeypatch, tmp_path, "b", url)
    assert a.root != b.root
    built: list[str] = []

    def make(d):
        built.append("x")
        write_parquet(pl.DataFrame({"v": [1, 2]}), d / "t.parquet")

    da = a.cached("thing", ("p",), make)
    fs = fsspec.filesystem("memory")
    remote = sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"/tuneset-test-{tmp_path.name}/store/thing"))
    assert remote == [DONE, "meta.json", "t.parquet"]
    db = b.cached("thing", ("p",), make)
    assert built == ["x"] and pl.read_parquet(db / "t.parquet").equals(pl.read_parquet(da / "t.parquet"))

    def killed(d):
        write_parquet(pl.DataFrame({"v": [0]}), d / "half.parquet")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        a.cached("other", ("p",), killed)
    assert not fs.exists(f"/tuneset-test-{tmp_path.name}/store/other/{a.key('other', 'p')}/{DONE}")
    b.cached("other", ("p",), make)  # never finished anywhere: built, not read half-made
    assert built == ["x", "x"]

    rows_a = a.rows("feat", ("m",))
    rows_a.fetch(["k1", "k2"], lambda idx, _: _values([["k1", "k2"][i] for i in idx]), chunk=1)
    rows_b = b.rows("feat", ("m",))
    assert rows_b.missing(["k2", "k3"]) == [1]  # the other machine's parts are seen
    assert rows_b.get(["k2", "k1"])["v"].to_list() == _values(["k2", "k1"])["v"].to_list()


def test_reports_and_figures_are_written_atomically(tmp_path):
    """Leaderboards, sweep tables, audits and their figures go through these writers: a write that
    fails half-way leaves the previous file, and a figure keeps its format though its temp name has
    no extension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tuneset.data.io import save_figure, write_csv, write_text

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = save_figure(fig, tmp_path / "board.png", dpi=50)
    plt.close(fig)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    class Killed:
        def savefig(self, f, **kw):
            Path(f).write_bytes(b"half a figure")
            raise RuntimeError("killed")

    before = png.read_bytes()
    with pytest.raises(RuntimeError):
        save_figure(Killed(), png, dpi=50)
    assert png.read_bytes() == before
    frame = pl.DataFrame({"arm": ["less"], "score": [0.9]})
    assert pl.read_csv(write_csv(frame, tmp_path / "board.csv")).equals(frame)
    assert write_text(tmp_path / "board.md", "| a |\n").read_text() == "| a |\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board.csv", "board.md", "board.png"]
    mask = os.umask(0o022)
    os.umask(mask)
    assert {p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {0o666 & ~mask}  # as open() makes them, not 0600


def test_a_finished_artifact_is_on_the_disk_before_its_completion_marker(tmp_path, monkeypatch):
    """A power loss must not leave a folder marked complete whose files never reached the disk:
    every file `make` wrote (however it wrote it) is fsynced before the marker is made."""
    synced: list[tuple[str, bool]] = []
    real = os.fsync

    def recording(fd):
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), any(tmp_path.rglob(DONE))))
        return real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    store = ArtifactStore(tmp_path)

    def make(d):
        (d / "sub").mkdir()
        (d / "sub" / "weights.bin").write_bytes(b"w" * 100)  # a plain write, as a library's save does

    d = store.cached("finetune", ("k",), make)
    before_marker = {p for p, marked in synced if not marked}
    assert {str(d / "sub" / "weights.bin"), str(d / "sub"), str(d / "meta.json"), str(d)} <= before_marker
