"""Content-addressed artifact store: `<root>/<kind>/<key>/` with meta.json and a completion marker.

A key hashes everything the artifact depends on (data fingerprint, stage config, model identity,
package version), so a changed input gets a fresh folder and stale shards never mix in. Shards are
written one file at a time by atomic rename: an interrupted run keeps every finished shard.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from filelock import FileLock, Timeout

from tuneset.data.fingerprint import fingerprint
from tuneset.data.io import atomic_path, collect, fsync, write_parquet
from tuneset.progress import ProgressLog

log = logging.getLogger("tuneset.store")
DONE = "_COMPLETE"
BUILT = "_BUILT"  # local only: built, not yet uploaded (a URL store's upload was cut short)


class ArtifactStore:
    """`root` is a local folder, or an fsspec URL (`s3://bucket/prefix`, `gs://...`) that remote
    workers share. A URL store keeps a local mirror (under the user cache) that every reader and
    writer works in, as with a local store: an artifact is built there, then uploaded file by file
    with its completion marker last, so a reader elsewhere sees it whole or not at all; a finished
    artifact another machine built is downloaded on first use."""

    def __init__(self, root: str | Path):
        self.remote: Remote | None = Remote.of(str(root)) if _is_url(root) else None
        self.root = self.remote.mirror if self.remote else Path(root)

    def key(self, *parts: Any) -> str:
        return fingerprint(*parts)

    def dir(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def is_complete(self, kind: str, key: str) -> bool:
        if (self.dir(kind, key) / DONE).exists():
            return True
        return self.remote is not None and self.remote.fetch(f"{kind}/{key}", self.dir(kind, key))

    def lock(self, kind: str, key: str) -> FileLock:
        (self.root / kind).mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / kind / f"{key}.lock"))

    def begin(self, kind: str, key: str, meta: dict[str, Any]) -> Path:
        """Folder for an artifact being built; meta.json records what it was built from."""
        d = self.dir(kind, key)
        d.mkdir(parents=True, exist_ok=True)
        with atomic_path(d / "meta.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
        return d

    def finish(self, kind: str, key: str) -> Path:
        """Marks the built folder complete; with a URL store, publishes it first, unless another
        machine (whose lock is its own) published the key while this one built: the first
        published build is the one every machine uses, never a mix of two builds' files."""
        d = self.dir(kind, key)
        for f in sorted(d.rglob("*"), key=lambda p: -len(p.parts)):  # files, then their folders
            if not f.is_symlink():
                fsync(f)  # what `make` wrote is on the disk before the marker that says it is whole
        fsync(d)
        if self.remote is not None:
            (d / BUILT).touch()
            if self.remote.published(f"{kind}/{key}"):  # lost the race: its files only, none of ours beside them
                for f in d.iterdir():
                    if f.name != BUILT:
                        shutil.rmtree(f) if f.is_dir() else f.unlink()
                self.remote.fetch(f"{kind}/{key}", d)
            else:
                self.remote.publish(d, f"{kind}/{key}")
        (d / DONE).touch()
        fsync(d)
        return d

    def cached(self, kind: str, parts: tuple[Any, ...], make: Callable[[Path], None], meta: dict[str, Any] | None = None) -> Path:
        """The one caching helper: the finished folder `<kind>/<key of (kind, *parts)>/`, built by
        `make(folder)` only if its completion marker is missing.

        A lock keeps two writers from building the same key; the marker is written last, so a
        reader never sees a half-built artifact, and `make` may resume from files a killed run
        left in the folder (finished shards)."""
        key = self.key(kind, *parts)
        d = self.dir(kind, key)
        if self.is_complete(kind, key):  # said, so a rerun shows what it did not redo
            log.info("reused %s/%s (built before)", kind, key)
            return d
        with held(self.lock(kind, key), f"another process building {kind}/{key}"):
            if self.is_complete(kind, key):
                return d
            if not (d / BUILT).exists():  # else only its upload is left to do
                self.begin(kind, key, meta or {})
                make(d)
            return self.finish(kind, key)


    def rows(self, kind: str, parts: tuple[Any, ...], meta: dict[str, Any] | None = None) -> RowCache:
        """A per-row cache under `<kind>/<key of (kind, *parts)>/`: values keyed by each row's own
        content, so a grown, shrunk or reordered table reuses every row it has seen before."""
        key = self.key(kind, *parts)
        d = self.dir(kind, key)
        if not (d / "meta.json").exists():
            self.begin(kind, key, meta or {})
        return RowCache(d, self.lock(kind, key), self.remote and self.remote.child(f"{kind}/{key}/parts"))


@contextmanager
def held(lock: FileLock, waiting_for: str):
    """`lock`, taken at once or after saying what the run waits for: another process building the
    same artifact (then reused), or another run of the recipe, looks like a hang otherwise."""
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("waiting for %s (%s)", waiting_for, lock.lock_file)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


KEY = "_key"
ROW_GROUP = 16_384  # rows per Parquet row group in a per-row cache: what a lookup decodes per hit


class RowCache:
    """Values per row key, stored as immutable part files (`parts/<hash of their keys>.parquet`).

    Parts are written by atomic rename and never modified, so concurrent writers need no lock (the
    same row computed twice is stored twice and read once) and a killed run keeps every finished
    part. Reads and compaction take the folder's lock."""

    MAX_PARTS = 64  # beyond this, `get` merges the parts into one (local stores only)

    def __init__(self, folder: Path, lock: FileLock, remote: Remote | None = None):
        self.folder, self._lock, self.remote = folder, lock, remote
        self.parts = folder / "parts"

    def _files(self) -> list[Path]:
        if self.remote is not None:  # parts other machines added since, and ours an upload missed
            self.remote.sync(self.parts)
        return sorted(self.parts.glob("*.parquet")) if self.parts.exists() else []

    def known(self) -> set[str]:
        with self._lock:
            files = self._files()
            return set(collect(pl.scan_parquet(files).select(KEY))[KEY].to_list()) if files else set()

    def missing(self, keys: Sequence[str]) -> list[int]:
        """Index of the first occurrence of every key not stored yet."""
        known, seen, out = self.known(), set(), []
        for i, k in enumerate(keys):
            if k not in known and k not in seen:
                seen.add(k)
                out.append(i)
        return out

    def add(self, keys: Sequence[str], values: pl.DataFrame) -> Path:
        if values.height != len(keys):
            raise ValueError(f"{len(keys)} keys but {values.height} value rows")
        path = self.parts / f"{fingerprint(list(keys))}.parquet"
        self.parts.mkdir(parents=True, exist_ok=True)
        write_parquet(values.with_columns(pl.Series(KEY, list(keys), dtype=pl.String)), path, ROW_GROUP)
        if self.remote is not None:
            self.remote.put(path, path.name)
        return path

    def get(self, keys: Sequence[str]) -> pl.DataFrame:
        """The stored values of `keys`, one row per key in their order; every key must be stored."""
        with self._lock:
            files = self._files()
            if len(files) > self.MAX_PARTS and self.remote is None:
                files = [self._compact(files)]
            wanted = pl.DataFrame({KEY: list(keys)}, schema={KEY: pl.String})
            stored = _rows_with_keys(files, set(keys))
        if stored is None or stored.height < wanted.unique().height:
            raise KeyError(f"{self.folder}: {len(keys) - (0 if stored is None else stored.height)} keys not stored")
        return wanted.join(stored, on=KEY, how="left", maintain_order="left").drop(KEY)

    def fetch(self, keys: Sequence[str], make: Callable[[list[int], ProgressLog | None], pl.DataFrame], chunk: int,
              what: str = "") -> pl.DataFrame:
        """`get(keys)`, computing the missing ones first with `make(indices, progress)`, `chunk`
        rows per part. Named by `what`, one progress log spans every missing row and `make`
        advances it as rows finish: a log restarting at 0% per part hid how far a long pass was."""
        todo = self.missing(keys)
        progress = ProgressLog(what, len(todo), "rows") if what and todo else None
        for s in range(0, len(todo), chunk):
            idx = todo[s:s + chunk]
            self.add([keys[i] for i in idx], make(idx, progress))
        return self.get(keys)

    def _compact(self, files: list[Path]) -> Path:
        merged = pl.read_parquet(files).unique(KEY, keep="first", maintain_order=True)
        out = write_parquet(merged, self.parts / f"{fingerprint(merged[KEY].to_list())}.parquet", ROW_GROUP)
        for f in files:
            if f != out:
                f.unlink()
        return out


def _rows_with_keys(files: list[Path], keys: set[str]) -> pl.DataFrame | None:
    """The stored rows whose key is in `keys`, the first copy of each in file order. The key
    columns are read first; where the wanted rows sit in under half of the row groups, only those
    groups' values are decoded. Decoding everything made every lookup as slow as the cache is big:
    13 s for 77 dev texts against a 1M-row embedding cache (benchmarks/README.md, "Per-row cache
    lookups"); a full read still decodes every part in one scan, as before."""
    if not files:
        return None
    import pyarrow.parquet as pq

    want = pl.DataFrame({KEY: list(keys)}, schema={KEY: pl.String}).lazy()
    footers = [pq.ParquetFile(f) for f in files]

    def scan() -> pl.DataFrame:
        return collect(pl.scan_parquet(files).join(want, on=KEY, how="semi").unique(KEY, keep="first", maintain_order=True))

    if 2 * len(keys) >= sum(pf.metadata.num_rows for pf in footers):  # most rows wanted: no key pass
        return scan()
    hits = collect(pl.scan_parquet(files, include_file_paths="_file").select(KEY, "_file")
                   .with_columns(pl.int_range(pl.len()).over("_file").alias("_pos"))
                   .join(want, on=KEY, how="semi").unique(KEY, keep="first", maintain_order=True))
    by_name = {str(f): pf for f, pf in zip(files, footers)}
    plans, hit_groups = [], 0
    for name, pos in hits.group_by("_file", maintain_order=True).agg("_pos").iter_rows():
        pf = by_name[name]
        starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
        group_of = np.searchsorted(starts, np.asarray(pos), side="right") - 1
        plans.append((pf, starts, np.asarray(pos), group_of))
        hit_groups += len(np.unique(group_of))
    if 2 * hit_groups >= sum(pf.num_row_groups for pf in footers):  # most values wanted: one scan
        return scan()
    pieces = []
    for pf, starts, pos, group_of in plans:
        groups = np.unique(group_of)
        sizes = np.diff(starts)[groups]
        first = dict(zip(groups.tolist(), (np.cumsum(sizes) - sizes).tolist()))  # its row in the groups read
        local = [first[g] + p - starts[g] for p, g in zip(pos.tolist(), group_of.tolist())]
        pieces.append(pl.from_arrow(pf.read_row_groups(groups.tolist()))[local])
    return pl.concat(pieces, how="vertical_relaxed")


def _is_url(root: str | Path) -> bool:
    return isinstance(root, str) and "://" in root and not root.startswith("file://")


class Remote:
    """A store folder on an fsspec filesystem, mirrored in a local folder."""

    def __init__(self, fs, path: str, mirror: Path):
        self.fs, self.path, self.mirror = fs, path.rstrip("/"), mirror

    @classmethod
    def of(cls, url: str) -> Remote:
        from fsspec.core import url_to_fs

        from tuneset.runtime import cache_dir

        fs, path = url_to_fs(url)
        return cls(fs, path, cache_dir() / "store-mirror" / fingerprint(url))

    def child(self, rel: str) -> Remote:
        return Remote(self.fs, f"{self.path}/{rel}", self.mirror / rel)

    def put(self, local: Path, rel: str) -> None:
        self.fs.put_file(str(local), f"{self.path}/{rel}")

    def publish(self, local: Path, rel: str) -> None:
        """Every file of the finished folder `local`, then its completion marker, last."""
        for f in sorted(p for p in local.rglob("*") if p.is_file() and p.name not in (DONE, BUILT)):
            self.fs.put_file(str(f), f"{self.path}/{rel}/{f.relative_to(local).as_posix()}")
        self.fs.pipe_file(f"{self.path}/{rel}/{DONE}", b"")

    def published(self, rel: str) -> bool:
        return self.fs.exists(f"{self.path}/{rel}/{DONE}")

    def fetch(self, rel: str, local: Path) -> bool:
        """Download the finished artifact `rel` into `local` (marker last); False if not finished."""
        if not self.published(rel):
            return False
        for src in self.fs.find(f"{self.path}/{rel}"):
            name = src[len(self.path) + len(rel) + 2:]
            if name != DONE:
                with atomic_path(local / name) as tmp:
                    self.fs.get_file(src, str(tmp))
        (local / DONE).touch()
        return True

    def sync(self, local: Path) -> None:
        """Immutable parts (names never change) both ways: the remote's that `local` lacks come
        down, and `local`'s that the remote lacks go up: a part whose upload a kill cut short is
        found on the disk by every later run, which would otherwise never compute, so never send, it."""
        remote = {src.rsplit("/", 1)[-1]: src for src in self.fs.find(self.path)} if self.fs.exists(self.path) else {}
        local.mkdir(parents=True, exist_ok=True)
        for name, src in remote.items():
            if not (local / name).exists():
                with atomic_path(local / name) as tmp:
                    self.fs.get_file(src, str(tmp))
        for f in sorted(local.glob("*.parquet")):
            if f.name not in remote:
                self.put(f, f.name)


def write_npy(array, path: Path) -> Path:
    """`np.save`, atomically (a killed writer leaves no half-written array behind)."""
    import numpy as np

    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.save(f, array)
    return path
