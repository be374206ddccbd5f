"""The artifact store on S3, against a local S3 emulator (moto's server) started by the test."""

from __future__ import annotations

import socket

import polars as pl
import pytest

from tuneset.data.io import write_parquet
from tuneset.store import DONE, ArtifactStore


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_url():
    """A bucket on a moto S3 server on a free loopback port; s3fs finds it through the
    FSSPEC_S3_* environment (endpoint and credentials), as a user's config would."""
    import os

    import boto3
    from moto.server import ThreadedMotoServer

    port = _port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "FSSPEC_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # fsspec reads FSSPEC_* variables when it is first imported, which in a full suite was long
    # ago: give s3fs the endpoint through its live config too, and drop cached filesystems.
    import fsspec.config
    import s3fs

    old_conf = fsspec.config.conf.get("s3")
    fsspec.config.conf["s3"] = {"endpoint_url": env["FSSPEC_S3_ENDPOINT_URL"]}
    s3fs.S3FileSystem.clear_instance_cache()
    boto3.client("s3", endpoint_url=env["FSSPEC_S3_ENDPOINT_URL"]).create_bucket(Bucket="tuneset")
    yield "s3://tuneset/store"
    server.stop()
    s3fs.S3FileSystem.clear_instance_cache()
    if old_conf is None:
        fsspec.config.conf.pop("s3", None)
    else:
        fsspec.config.conf["s3"] = old_conf
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_two_machines_share_an_s3_store_and_a_killed_build_resumes(s3_url, tmp_path, monkeypatch):
    import s3fs

    monkeypatch.setenv("TUNESET_CACHE", str(tmp_path / "a"))
    a = ArtifactStore(s3_url)
    monkeypatch.setenv("TUNESET_CACHE", str(tmp_path / "b"))
    b = ArtifactStore(s3_url)
    calls: list[int] = []

    def make(d):
        """Two shards; the first run is killed after the first, which a resumed run keeps."""
        calls.append(1)
        if not (d / "s0.parquet").exists():
            write_parquet(pl.DataFrame({"v": [0]}), d / "s0.parquet")
            if len(calls) == 1:
                raise KeyboardInterrupt("killed")
        write_parquet(pl.DataFrame({"v": [1]}), d / "s1.parquet")

    with pytest.raises(KeyboardInterrupt):
        a.cached("scores", ("x",), make)
    fs = s3fs.S3FileSystem()
    key = a.key("scores", "x")
    assert not fs.exists(f"tuneset/store/scores/{key}/{DONE}")  # nothing half-made is published
    d = a.cached("scores", ("x",), make)  # resumes: the first shard is not recomputed
    assert sorted(p.name for p in d.iterdir() if p.suffix == ".parquet") == ["s0.parquet", "s1.parquet"]
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"tuneset/store/scores/{key}")) == [DONE, "meta.json", "s0.parquet", "s1.parquet"]
    calls.clear()
    got = b.cached("scores", ("x",), make)  # another machine reads it, builds nothing
    assert calls == [] and pl.read_parquet(got / "s1.parquet")["v"].to_list() == [1]

    a.rows("emb", ("m",)).fetch(["t1", "t2"], lambda idx, _: pl.DataFrame({"x": [float(i) for i in idx]}), chunk=1)
    assert b.rows("emb", ("m",)).missing(["t1", "t2", "t3"]) == [2]


def test_a_build_whose_upload_was_cut_short_is_uploaded_again_not_rebuilt(s3_url, tmp_path, monkeypatch):
    """A fine-tune's upload takes long: killed there, the rerun uploads what the local mirror
    already holds whole instead of training again."""
    import s3fs

    from tuneset.store import Remote

    monkeypatch.setenv("TUNESET_CACHE", str(tmp_path / "a"))
    store, builds = ArtifactStore(s3_url), []

    def make(d):
        builds.append(1)
        write_parquet(pl.DataFrame({"v": [1]}), d / "weights.parquet")

    publish = Remote.publish

    def killed(*args):
        raise KeyboardInterrupt("killed mid-upload")

    monkeypatch.setattr(Remote, "publish", killed)
    with pytest.raises(KeyboardInterrupt):
        store.cached("finetune", ("y",), make)
    monkeypatch.setattr(Remote, "publish", publish)
    d = store.cached("finetune", ("y",), make)
    key = store.key("finetune", "y")
    assert builds == [1] and pl.read_parquet(d / "weights.parquet")["v"].to_list() == [1]
    assert sorted(p.rsplit("/", 1)[-1] for p in s3fs.S3FileSystem().find(f"tuneset/store/finetune/{key}")) == [
        DONE, "meta.json", "weights.parquet"]  # the local-only marker is not uploaded


def test_two_machines_building_one_key_at_once_both_use_the_first_published_build(s3_url, tmp_path, monkeypatch):
    """Each machine's lock is its own: when both build a key, the one that finishes second takes
    the published build instead of overwriting it, so no reader sees a mix of the two."""
    import s3fs

    monkeypatch.setenv("TUNESET_CACHE", str(tmp_path / "a"))
    a = ArtifactStore(s3_url)
    monkeypatch.setenv("TUNESET_CACHE", str(tmp_path / "b"))
    b = ArtifactStore(s3_url)

    def b_builds_meanwhile(d):  # a's build, during which b builds and publishes the same key
        write_parquet(pl.DataFrame({"v": [1]}), d / "w.parquet")
        write_parquet(pl.DataFrame({"v": [1]}), d / "shard-1.parquet")  # a file b's build does not have
        b.cached("finetune", ("z",), lambda e: write_parquet(pl.DataFrame({"v": [2]}), e / "w.parquet"))

    got = a.cached("finetune", ("z",), b_builds_meanwhile)
    key = a.key("finetune", "z")
    with s3fs.S3FileSystem().open(f"tuneset/store/finetune/{key}/w.parquet", "rb") as f:
        assert pl.read_parquet(f)["v"].to_list() == [2]
    assert pl.read_parquet(got / "w.parquet")["v"].to_list() == [2]
    assert sorted(p.name for p in got.glob("*.parquet")) == ["w.parquet"]  # b's build alone, none of a's beside it


def test_a_cached_row_part_whose_upload_was_cut_short_reaches_the_other_machines(s3_url, tmp_path, monkeypatch):
    """The part is on this machine's disk, so no later run computes (or sends) those rows again:
    the next read sends it, and another machine then reuses the rows instead of computing them."""
    from tuneset.store import Remote

    monkeypatch.setenv("TUNESET_CACHE", str(tmp_path / "a"))
    a = ArtifactStore(s3_url)
    monkeypatch.setenv("TUNESET_CACHE", str(tmp_path / "b"))
    b = ArtifactStore(s3_url)
    put = Remote.put

    def killed(*args):
        raise KeyboardInterrupt("killed mid-upload")

    monkeypatch.setattr(Remote, "put", killed)
    with pytest.raises(KeyboardInterrupt):
        a.rows("emb", ("cut",)).fetch(["t1"], lambda idx, _: pl.DataFrame({"x": [1.0]}), chunk=1)
    monkeypatch.setattr(Remote, "put", put)
    assert a.rows("emb", ("cut",)).missing(["t1"]) == []  # here, on the disk
    assert b.rows("emb", ("cut",)).missing(["t1"]) == []  # and now there too


@pytest.fixture(scope="module")
def prefect_harness():
    from prefect.logging.configuration import setup_logging
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        setup_logging()
        yield


def test_a_score_run_with_its_store_on_s3_completes_after_a_kill_and_matches_a_local_store(
        s3_url, prefect_harness, tiny_recipe, tmp_path, monkeypatch):
    from polars.testing import assert_frame_equal

    from tuneset.flows.score import score_flow
    from tuneset.selectors.base import Selector

    monkeypatch.setenv("TUNESET_CACHE", str(tmp_path / "mirror"))
    picks = "score.selectors=[perplexity, semdedup]"
    remote = tiny_recipe(picks, f"store={s3_url}/flows")
    real, calls = Selector.score, []

    def killed_on_second(self, frame):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(self, frame)

    monkeypatch.setattr(Selector, "score", killed_on_second)
    with pytest.raises(BaseException):  # noqa: B017  (Prefect may wrap the interrupt)
        score_flow(remote)
    monkeypatch.setattr(Selector, "score", real)
    monkeypatch.setenv("TUNESET_CACHE", str(tmp_path / "other-machine"))  # resumed elsewhere: only S3 is shared
    on_s3 = score_flow(remote).read()
    local = score_flow(tiny_recipe(picks, f"work_dir={tmp_path / 'local'}")).read()
    assert_frame_equal(on_s3, local)
