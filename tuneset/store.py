"""Content-addressed artifact store: `<root>/<kind>/<key>/` with meta.json and a completion marker.

A key hashes everything the artifact depends on (data fingerprint, stage config, model identity,
package version), so a changed input gets a fresh folder and stale shards never mix in. Shards are
written one file at a time by atomic rename: an interrupted run keeps every finished shard.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
from filelock import FileLock

from tuneset.data.fingerprint import fingerprint
from tuneset.data.io import atomic_path

log = logging.getLogger("tuneset.store")
DONE = "_COMPLETE"


class ArtifactStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def key(self, *parts: Any) -> str:
        return fingerprint(*parts)

    def dir(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def is_complete(self, kind: str, key: str) -> bool:
        return (self.dir(kind, key) / DONE).exists()

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
        d = self.dir(kind, key)
        (d / DONE).touch()
        return d

    def cached(self, kind: str, parts: tuple[Any, ...], make: Callable[[Path], None], meta: dict[str, Any] | None = None) -> Path:
        """The one caching helper: the finished folder `<kind>/<key of (kind, *parts)>/`, built by
        `make(folder)` only if its completion marker is missing.

        A lock keeps two writers from building the same key; the marker is written last, so a
        reader never sees a half-built artifact, and `make` may resume from files a killed run
        left in the folder (finished shards)."""
        key = self.key(kind, *parts)
        d = self.dir(kind, key)
        if (d / DONE).exists():
            log.debug("reuse %s/%s", kind, key)
            return d
        with self.lock(kind, key):
            if (d / DONE).exists():
                return d
            self.begin(kind, key, meta or {})
            make(d)
            return self.finish(kind, key)


def write_npy(array, path: Path) -> Path:
    """`np.save`, atomically (a killed writer leaves no half-written array behind)."""
    import numpy as np

    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.save(f, array)
    return path


def write_parquet(frame: pl.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)
    return path
