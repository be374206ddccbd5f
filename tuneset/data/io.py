"""Readers for JSONL, Parquet, CSV and saved Hugging Face datasets, with per-row validation.

Every bad row is either an error that names file, line and field, or (with a quarantine file)
a quarantined record carrying the same facts, so the accounting still sees every input row.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import ValidationError

from tuneset.data.schema import Example, rows_frame
from tuneset.errors import DataError, TunesetError

FORMATS = ("jsonl", "parquet", "csv", "hf")


@dataclass
class LoadResult:
    rows: pl.DataFrame
    n_read: int
    quarantined: list[dict[str, Any]] = field(default_factory=list)


def detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            return "hf"
        raise TunesetError(f"{path}: a folder is read only as a saved Hugging Face dataset (save_to_disk)")
    suffix = path.suffix.lower().lstrip(".")
    fmt = {"jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl", "parquet": "parquet", "csv": "csv"}.get(suffix)
    if fmt is None:
        raise TunesetError(f"{path}: unknown file type '.{suffix}'; valid: .jsonl, .parquet, .csv, or a dataset folder")
    return fmt


def iter_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    """(line, record) pairs; a record that cannot even be parsed comes back as its DataError."""
    fmt = detect_format(path)
    if fmt == "jsonl":
        yield from _iter_jsonl(path)
    elif fmt == "parquet":
        yield from enumerate(pl.read_parquet(path).to_dicts(), start=1)
    elif fmt == "csv":
        frame = pl.read_csv(path, infer_schema_length=0)  # all text: a CSV has no types to check
        yield from ((i + 2, rec) for i, rec in enumerate(frame.to_dicts()))  # line 1 is the header
    else:
        from datasets import load_from_disk

        yield from enumerate(load_from_disk(str(path)), start=1)


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield line_no, DataError(str(path), line_no, "<line>", f"invalid UTF-8 at byte {e.start}")
                continue
            if not text.strip():
                continue
            try:
                rec = json.loads(text.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                yield line_no, DataError(str(path), line_no, "<line>", f"broken JSON: {e.msg} (column {e.colno})")
                continue
            if not isinstance(rec, dict):
                yield line_no, DataError(str(path), line_no, "<line>", f"expected a JSON object, got {type(rec).__name__}")
                continue
            yield line_no, rec


def validate_record(path: Path, line: int, rec: dict[str, Any]) -> Example:
    if "metadata" in rec and (rec["metadata"] is None or isinstance(rec["metadata"], str)):
        # Our own canonical frame (Parquet saved by a stage) carries extras as a JSON column.
        meta = rec.pop("metadata")
        try:
            rec = {**(json.loads(meta) if meta else {}), **rec}
        except json.JSONDecodeError:
            raise DataError(str(path), line, "metadata", "is not a JSON object") from None
    try:
        return Example.model_validate(rec)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "<row>"
        raise DataError(str(path), line, loc, err["msg"][:1].lower() + err["msg"][1:]) from None


def load_rows(path: str | Path, quarantine: str | Path | None = None) -> LoadResult:
    """Read and validate every row. Without `quarantine` the first bad row raises DataError;
    with it, bad rows (and repeated ids) are written there with file, line, field and reason."""
    path = Path(path)
    if not path.exists():
        raise TunesetError(f"{path}: no such file")
    good: list[Example] = []
    bad: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    n = 0
    for line, rec in iter_records(path):
        n += 1
        try:
            if isinstance(rec, DataError):
                raise rec
            ex = validate_record(path, line, rec)
            if ex.id in seen:
                raise DataError(str(path), line, "id", f"repeats the id of line {seen[ex.id]}")
            seen[ex.id] = line
            good.append(ex)
        except DataError as e:
            if quarantine is None:
                raise
            raw = rec if isinstance(rec, dict) else None
            bad.append({"file": e.file, "line": e.line, "field": e.field, "reason": e.reason,
                        "id": raw.get("id") if raw else None, "raw": json.dumps(raw, default=str) if raw else None})
    if quarantine is not None:
        write_jsonl(quarantine, bad)
    return LoadResult(rows=rows_frame(good), n_read=n, quarantined=bad)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Plain JSONL (our own artifacts); user input goes through load_rows."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


ROW_FORMATS = (".jsonl", ".parquet", ".csv")


def write_rows(path: str | Path, rows: pl.DataFrame) -> Path:
    """Rows back in the input schema (metadata fields flattened back in), as JSONL, Parquet or CSV
    by the file's extension; a CSV cell holding a list (choices) is JSON text."""
    path = Path(path)
    if path.suffix not in ROW_FORMATS:
        raise TunesetError(f"{path}: cannot tell the format from '{path.suffix or 'no extension'}'; "
                           f"valid: {', '.join(ROW_FORMATS)}")

    def record(r: dict[str, Any]) -> dict[str, Any]:
        out = {k: r[k] for k in ("id", "source", "instruction", "response")}
        if r.get("choices") is not None:
            out["choices"] = r["choices"]
        if r.get("metadata"):
            out.update(json.loads(r["metadata"]))
        return out

    records = [record(r) for r in rows.iter_rows(named=True)]
    if path.suffix == ".jsonl":
        return write_jsonl(path, records)
    frame = pl.DataFrame(records, infer_schema_length=None) if records else rows.select("id", "source", "instruction", "response")
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            frame.write_parquet(tmp)
        else:
            frame.with_columns(pl.col(c).map_elements(json.dumps, return_dtype=pl.String)
                               for c, t in frame.schema.items() if isinstance(t, (pl.List, pl.Struct))).write_csv(tmp)
    return path


class atomic_path:
    """Context manager yielding a temp path beside `path`, renamed over it only on success."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
