"""Readers for JSONL, Parquet, CSV and saved Hugging Face datasets, with per-row validation.

Every bad row is either an error that names file, line and field, or (with a quarantine file)
a quarantined record carrying the same facts, so the accounting still sees every input row.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
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
log = logging.getLogger("tuneset.data")


@dataclass
class LoadResult:
    rows: pl.DataFrame
    n_read: int  # distinct input rows (a re-sent copy of a row is counted in n_resent instead)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    n_resent: int = 0


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


SHAPES = "instruction/response, prompt/completion (TRL), messages (chat), or Alpaca instruction/input/output"


def to_row_shape(path: Path, line: int, rec: dict[str, Any], columns: dict[str, str] | None = None) -> dict[str, Any]:
    """A record in any common shape as instruction/response: the recipe's column mapping first
    ({our field: their column}), then TRL prompt/completion, chat `messages` (the last assistant
    turn is the response, the turns before it the instruction), Alpaca `output` and `input`
    (folded into the instruction)."""
    rec = dict(rec)
    for ours, theirs in (columns or {}).items():
        if theirs not in rec:
            raise DataError(str(path), line, theirs, f"missing (columns maps {ours} to it)")
        rec[ours] = rec.pop(theirs)
    if "instruction" not in rec and "response" not in rec:
        if "prompt" in rec and "completion" in rec:
            rec["instruction"], rec["response"] = rec.pop("prompt"), rec.pop("completion")
        elif "messages" in rec:
            rec.update(_from_messages(path, line, rec.pop("messages")))
    if "response" not in rec and "output" in rec and "instruction" in rec:
        rec["response"] = rec.pop("output")
    if "input" in rec and isinstance(rec.get("instruction"), str):
        extra = rec.pop("input")
        if isinstance(extra, str) and extra.strip():
            rec["instruction"] = f"{rec['instruction']}\n\n{extra}"
    return rec


def content_id(rec: dict[str, Any], taken: dict[str, int]) -> str:
    """An id from the row's content (stable across files and reorderings); a repeat of the same
    content gets `-2`, `-3`... so it stays a row that dedup can account for, not a load error."""
    base = hashlib.sha256(f"{rec.get('instruction')}\0{rec.get('response')}".encode()).hexdigest()[:16]
    taken[base] = taken.get(base, 0) + 1
    return base if taken[base] == 1 else f"{base}-{taken[base]}"


def _from_messages(path: Path, line: int, messages: Any) -> dict[str, str]:
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise DataError(str(path), line, "messages", "expected a list of {role, content} objects")
    last = max((k for k, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None or last == 0:
        raise DataError(str(path), line, "messages", "needs an assistant turn after at least one other turn")
    before = messages[:last]
    users = [m for m in before if m["role"] == "user"]
    if len(before) == 1 and users:
        instruction = str(users[0]["content"])
    else:
        instruction = "\n".join(f"{m['role']}: {m['content']}" for m in before)
    return {"instruction": instruction, "response": str(messages[last]["content"])}


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


def pool_files(path: str | Path) -> list[Path]:
    """The files a pool names: one file, a saved HF dataset, a folder of JSONL/Parquet/CSV files,
    or a glob (`data/*.jsonl`), in sorted order so a pool that grows by new files keeps its rows'
    order and ids."""
    path = Path(path)
    if any(ch in str(path) for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise TunesetError(f"{path}: the pattern matches no file")
        return files
    if not path.exists():
        raise TunesetError(f"{path}: no such file or folder")
    if path.is_dir() and detect_format_or_none(path) != "hf":
        files = sorted(p for p in path.iterdir() if p.is_file() and detect_format_or_none(p))
        if not files:
            raise TunesetError(f"{path}: the folder holds no .jsonl, .parquet or .csv file and is no saved HF dataset")
        skipped = sorted(p.name for p in path.iterdir() if p.is_file() and p not in files and not p.name.startswith("."))
        if skipped:
            log.warning("%s: not read (not .jsonl/.parquet/.csv): %s", path, ", ".join(skipped))
        return files
    return [path]


def detect_format_or_none(path: Path) -> str | None:
    try:
        return detect_format(path)
    except TunesetError:
        return None


def load_rows(path: str | Path, quarantine: str | Path | None = None, columns: dict[str, str] | None = None) -> LoadResult:
    """Read and validate every row (any shape `to_row_shape` knows) of every file `pool_files`
    names. Without `quarantine` the first bad row raises DataError; with it, bad rows (and ids
    repeated with other content) are written there with file, line, field and reason.

    Rows are identified by content: a row that repeats an earlier file's row exactly (a re-sent
    file) is read once and counted in `n_resent`, so it adds nothing."""
    good: list[Example] = []
    bad: list[dict[str, Any]] = []
    seen: dict[str, tuple[Path, int, Example]] = {}
    n = resent = 0
    for file in pool_files(path):
        auto: dict[str, int] = {}  # per file: a re-sent file's id-less rows get the same ids again
        for line, rec in iter_records(file):
            n += 1
            try:
                if isinstance(rec, DataError):
                    raise rec
                rec = to_row_shape(file, line, rec, columns)
                if "id" not in rec:
                    rec["id"] = content_id(rec, auto)
                ex = validate_record(file, line, rec)
                if ex.id in seen:
                    first_path, first_line, first = seen[ex.id]
                    if first_path != file and first == ex:
                        resent += 1
                        continue
                    where = f"line {first_line}" if first_path == file else f"{first_path} line {first_line}"
                    raise DataError(str(file), line, "id", f"repeats the id of {where}")
                seen[ex.id] = (file, line, ex)
                good.append(ex)
            except DataError as e:
                if quarantine is None:
                    raise
                raw = rec if isinstance(rec, dict) else None
                bad.append({"file": e.file, "line": e.line, "field": e.field, "reason": e.reason,
                            "id": raw.get("id") if raw else None, "raw": json.dumps(raw, default=str) if raw else None})
    if quarantine is not None:
        write_jsonl(quarantine, bad)
    if resent:
        log.warning("%d rows repeat an earlier file's rows exactly (same id and content): read once", resent)
    return LoadResult(rows=rows_frame(good), n_read=n - resent, quarantined=bad, n_resent=resent)


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
