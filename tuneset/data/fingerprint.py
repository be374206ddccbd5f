"""Stable content fingerprints: the same rows always give the same key, on any machine."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import polars as pl

from tuneset import __version__

_CONTENT = ["id", "source", "instruction", "response", "choices"]

RACY_SECONDS = 2.0  # a file changed this recently may change again within its timestamp's tick


def file_stamp(path: str | os.PathLike) -> tuple | None:
    """What stands for a file's content in a per-process memo: its resolved path, device, inode,
    size, mtime and ctime (a rename, copy or write changes ctime even where mtime is carried over).
    None for a file changed (ctime) in the last RACY_SECONDS, as git does for racily clean entries: a
    rewrite of the same size within one timestamp tick would keep every field, so such a file is
    read afresh rather than served from a memo."""
    st = os.stat(path)
    # ctime alone: every write sets it and utime cannot, so a future mtime (an archive's, a skewed
    # clock's) does not keep a settled file out of the memo
    if time.time_ns() - st.st_ctime_ns < RACY_SECONDS * 1e9:
        return None
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def fingerprint(*parts: Any) -> str:
    """sha256 of JSON-canonical parts plus the package version (a new version never reuses stale work)."""
    payload = json.dumps([__version__, *parts], sort_keys=True, default=_default, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _default(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if hasattr(obj, "__fspath__"):
        return str(obj)
    raise TypeError(f"cannot fingerprint {type(obj).__name__}")


def dataset_fingerprint(rows: pl.DataFrame, columns: Sequence[str] = _CONTENT) -> str:
    """Hash of row contents in order (of `columns`, default id and content); metadata is excluded
    because no stage reads it."""
    h = hashlib.sha256()
    cols = [c for c in columns if c in rows.columns]
    for rec in rows.select(cols).iter_rows():
        h.update(json.dumps(rec, separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()[:24]


def row_keys(rows: pl.DataFrame, columns: list[str] | None = None) -> list[str]:
    """One content key per row (id and content by default): what a per-row cache is keyed by, so
    a row keeps its key wherever it sits in whichever table."""
    cols = [c for c in (columns or _CONTENT) if c in rows.columns]
    return [hashlib.blake2b(json.dumps(rec, separators=(",", ":")).encode(), digest_size=12).hexdigest()
            for rec in rows.select(cols).iter_rows()]


def text_keys(texts: list[str]) -> list[str]:
    return [hashlib.blake2b(t.encode(), digest_size=12).hexdigest() for t in texts]
