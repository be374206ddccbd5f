"""Readers for JSONL, Parquet, CSV and saved Hugging Face datasets, with per-row validation.

Every bad row is either an error that names file, line and field, or (with a quarantine file)
a quarantined record carrying the same facts, so the accounting still sees every input row.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import decimal
import difflib
import functools
import glob
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import ValidationError

from tuneset.data.schema import ROW_COLUMNS, Example, rows_frame
from tuneset.errors import BadRows, DataError, TunesetError, first_line

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
        if any((path / marker).exists() for marker in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return "hf"  # dataset_dict.json: several splits, which _iter_hf names
        raise TunesetError(f"{path}: a folder is read only as a saved Hugging Face dataset (save_to_disk)")
    suffix = path.suffix.lower().lstrip(".")
    fmt = {"jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl", "parquet": "parquet", "csv": "csv"}.get(suffix)
    if fmt is None:
        raise TunesetError(f"{path}: unknown file type '.{suffix}'; valid: .jsonl, .parquet, .csv, or a dataset folder")
    return fmt


def iter_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    """(line, record) pairs; a record that cannot even be parsed comes back as its DataError.
    A fault no row can be read past (garbage Parquet, an unclosed CSV quote, a UTF-16 file)
    raises a TunesetError naming the file, quarantine or not: there is no row to set aside."""
    fmt = detect_format(path)
    if fmt == "jsonl":
        yield from _iter_jsonl(path)
    elif fmt == "parquet":
        yield from _iter_parquet(path)
    elif fmt == "csv":
        yield from _iter_csv(path)
    else:
        yield from _iter_hf(path)


# Byte-order marks of encodings that are not UTF-8: such a file has no line we could read.
_FOREIGN_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}
UTF8_BOM = b"\xef\xbb\xbf"
MAX_DEPTH = 64  # JSON nesting a row may have; deeper is a crafted or broken row, not data


def _foreign_encoding(path: Path, head: bytes) -> None:
    for bom, name in _FOREIGN_BOMS.items():
        if head.startswith(bom):
            raise TunesetError(f"{path}: the file is {name}, not UTF-8; re-save it as UTF-8")


class _RowFault(ValueError):
    """A JSON value JSON itself allows but a row must not hold (NaN, a repeated key)."""


def _no_constants(name: str) -> float:
    raise _RowFault(f"{name} is not a JSON number; write null or a string")


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _RowFault(f"key {json.dumps(k)} appears twice in one object; which one is meant is a guess")
        out[k] = v
    return out


def parse_json_line(path: Path, line_no: int, text: str) -> dict[str, Any] | DataError:
    """One JSONL line as a record, or the DataError saying why not. Stricter than json.loads:
    NaN/Infinity and repeated keys are refused, since each silently picks a value."""
    try:
        rec = json.loads(text, parse_constant=_no_constants, object_pairs_hook=_no_repeated_keys)
    except json.JSONDecodeError as e:
        return DataError(str(path), line_no, "<line>", f"broken JSON: {e.msg} (column {e.colno})", raw=text.rstrip("\r\n"))
    except _RowFault as e:
        return DataError(str(path), line_no, "<line>", str(e), raw=text.rstrip("\r\n"))
    except RecursionError:
        return DataError(str(path), line_no, "<line>", f"JSON nested deeper than Python can parse (limit {MAX_DEPTH})")
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        return DataError(str(path), line_no, "<line>", f"unreadable JSON value: {e}", raw=text.rstrip("\r\n"))
    if not isinstance(rec, dict):
        return DataError(str(path), line_no, "<line>", f"expected a JSON object, got {type(rec).__name__}",
                         raw=text.rstrip("\r\n"))
    return rec


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if line_no == 1:
                _foreign_encoding(path, raw)
                raw = raw.removeprefix(UTF8_BOM)  # Windows editors write one; it is not part of the row
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield line_no, DataError(str(path), line_no, "<line>", f"invalid UTF-8 at byte {e.start}",
                                         raw=raw.decode("utf-8", "backslashreplace").rstrip("\r\n"))
                continue
            if not text.strip():
                continue
            yield line_no, parse_json_line(path, line_no, text.rstrip("\r\n"))


def _iter_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    try:
        frame = pl.read_parquet(path)
    except Exception as e:  # polars raises several kinds for garbage, truncation, bad metadata
        raise TunesetError(f"{path}: not a readable Parquet file ({type(e).__name__}: {first_line(e)})") from None
    yield from enumerate(frame.to_dicts(), start=1)


def _iter_hf(path: Path) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    from datasets import load_from_disk

    try:
        data = load_from_disk(str(path))
    except Exception as e:  # datasets raises many kinds for a damaged folder
        raise TunesetError(f"{path}: not a readable saved Hugging Face dataset ({type(e).__name__}: {first_line(e)})") from None
    if not hasattr(data, "features"):  # a DatasetDict: which split is the pool is the user's call
        raise TunesetError(f"{path}: holds several splits ({', '.join(data)}); name one split's folder")
    yield from enumerate(data, start=1)


def _iter_csv(path: Path) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    """CSV rows by the physical line each starts on (a quoted cell may span lines). All cells are
    text, as a CSV has no types; an empty cell is an absent field. A row with more or fewer cells
    than the header is that row's error, so quarantine can set it aside."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a 10 MB cell is a long row, not a fault
    with path.open("rb") as fb:
        _foreign_encoding(path, fb.read(4))
    try:  # invalid UTF-8 reads as lone surrogates, so it is the error of its row and column
        with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            reader = csv.reader(f, strict=True)
            header = next(reader, None)
            if header is None:  # an empty shard, as an empty JSONL file is
                return
            _check_header(path, header)
            start = reader.line_num + 1
            for cells in reader:
                line, start = start, reader.line_num + 1
                if not cells:  # a blank line, as in JSONL; `,,,` is a row, and an error below
                    continue
                bad = next(((k, m) for k, c in enumerate(cells) if (m := _BYTE_ESCAPE.search(c))), None)
                if bad is not None:
                    k, byte = bad[0], ord(bad[1].group()) - 0xDC00
                    yield line, DataError(str(path), line, header[k] if k < len(header) else f"<cell {k + 1}>",
                                          f"invalid UTF-8 (byte 0x{byte:02x}); re-save the file as UTF-8")
                    continue
                if not any(c.strip() for c in cells):
                    yield line, DataError(str(path), line, "<line>", "every cell is blank")
                    continue
                if len(cells) != len(header):
                    yield line, DataError(str(path), line, "<line>",
                                          f"{len(cells)} cells, but the header names {len(header)} columns")
                    continue
                row = {k: v for k, v in zip(header, cells) if v != ""}
                if row.get("choices", "").startswith("["):  # a list as JSON text, as write_rows writes it
                    try:
                        row["choices"] = json.loads(row["choices"])
                    except json.JSONDecodeError as e:
                        yield line, DataError(str(path), line, "choices", f"is not a JSON list ({e.msg})")
                        continue
                yield line, row
    except csv.Error as e:
        raise TunesetError(f"{path}:{reader.line_num}: unreadable CSV ({e}), e.g. a quote that is never closed") from None


_BYTE_ESCAPE = re.compile("[\udc80-\udcff]")  # how errors="surrogateescape" reads a byte UTF-8 cannot


def _check_header(path: Path, header: list[str]) -> None:
    for k, name in enumerate(header, start=1):
        if _BYTE_ESCAPE.search(name):
            raise DataError(str(path), 1, f"<column {k}>", "the header holds invalid UTF-8; re-save the file as UTF-8")
        if not name.strip():
            raise DataError(str(path), 1, f"<column {k}>", "the header gives this column no name")
        if name in header[:k - 1]:
            raise DataError(str(path), 1, name, "the header names this column twice; which one is meant is a guess")


SHAPES = "instruction/response, prompt/completion (TRL), messages (chat), or Alpaca instruction/input/output"


def to_row_shape(path: Path, line: int, rec: dict[str, Any], columns: dict[str, str] | None = None) -> dict[str, Any]:
    """A record in any common shape as instruction/response: the recipe's column mapping first
    ({our field: their column}), then TRL prompt/completion, chat `messages` (the last assistant
    turn is the response, the turns before it the instruction), Alpaca `output` and `input`
    (folded into the instruction)."""
    rec = dict(rec)
    columns = columns or {}
    for ours, theirs in columns.items():  # all read before any is moved, so a swap works
        if theirs not in rec:
            raise DataError(str(path), line, theirs, f"missing (columns maps {ours} to it)")
        if ours != theirs and ours in rec and ours not in columns.values():
            raise DataError(str(path), line, ours, f"the row has its own '{ours}', which columns would replace with "
                                                   f"'{theirs}'; map it too, or drop one of them")
    mapped = {ours: rec[theirs] for ours, theirs in columns.items()}
    for theirs in set(columns.values()):
        del rec[theirs]
    rec.update(mapped)
    if "instruction" not in rec and "response" not in rec:
        if "prompt" in rec and "completion" in rec:
            rec["instruction"], rec["response"] = rec.pop("prompt"), rec.pop("completion")
        elif "messages" in rec:
            rec.update(_from_messages(path, line, rec.pop("messages")))
    if "response" not in rec and "output" in rec and "instruction" in rec:
        rec["response"] = rec.pop("output")
    if "input" in rec and isinstance(rec.get("instruction"), str):
        extra = rec.pop("input")
        if extra is not None and not isinstance(extra, str):  # dropping it would lose the row's input
            raise DataError(str(path), line, "input", f"expected text (Alpaca input), got {_type_name(extra)}")
        if extra and extra.strip():
            rec["instruction"] = f"{rec['instruction']}\n\n{extra}"
    return rec


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "true/false", type(None): "null"}.get(type(value), type(value).__name__)


def content_id(rec: dict[str, Any], taken: dict[str, int]) -> str:
    """An id from the row's content (stable across files and reorderings); a repeat of the same
    content gets `-2`, `-3`... so it stays a row that dedup can account for, not a load error."""
    base = hashlib.sha256(f"{rec.get('instruction')}\0{rec.get('response')}".encode()).hexdigest()[:16]
    taken[base] = taken.get(base, 0) + 1
    return base if taken[base] == 1 else f"{base}-{taken[base]}"


def _from_messages(path: Path, line: int, messages: Any) -> dict[str, str]:
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise DataError(str(path), line, "messages", "expected a list of {role, content} objects")
    for k, m in enumerate(messages):  # a number or object here would be str()-ed into the text
        for key in ("role", "content"):
            if not isinstance(m[key], str):
                raise DataError(str(path), line, f"messages[{k}].{key}", f"expected text, got {_type_name(m[key])}")
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


CANONICAL = frozenset(ROW_COLUMNS)


def _canonical_extras(path: Path, line: int, rec: dict[str, Any]) -> dict[str, Any] | None:
    """The extras of a row of our own canonical frame, or None for any other row. Only a stage's
    Parquet is that frame (extras as a JSON-object `metadata` column): a user's own field named
    `metadata`, in a JSONL or CSV file or holding anything but a JSON object, stays their field."""
    if path.suffix.lower() != ".parquet" or set(rec) != CANONICAL:
        return None
    meta = rec["metadata"]
    if meta is None:
        return {}
    parsed = parse_json_line(path, line, meta) if isinstance(meta, str) else None
    return parsed if isinstance(parsed, dict) else None


def validate_record(path: Path, line: int, rec: dict[str, Any]) -> Example:
    extras = _canonical_extras(path, line, rec)
    if extras is not None:
        rec = {**extras, **{k: v for k, v in rec.items() if k != "metadata"}}
    rec = json_safe(path, line, rec)
    try:
        return Example.model_validate(rec)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "<row>"
        msg = err["msg"][:1].lower() + err["msg"][1:]
        if err["type"] == "missing" and loc in ("instruction", "response"):  # a shape we do not read
            if near := difflib.get_close_matches(loc, [k for k in rec if isinstance(k, str)], n=1, cutoff=0.75):
                msg += f"; the row has '{near[0]}': misspelt?"
            msg += f"; rows may be {SHAPES}, or name their columns with the recipe's `columns`"
        raise DataError(str(path), line, loc, msg) from None


def json_safe(path: Path, line: int, rec: dict[str, Any]) -> dict[str, Any]:
    """The record with every value JSON can carry: dates and times become ISO text (Parquet and
    HF datasets have them; the metadata column is JSON). Anything that would crash a later write
    or silently change is this row's error, naming the field: a lone surrogate or NUL in text,
    NaN/Infinity, bytes, or nesting deeper than MAX_DEPTH."""

    def clean(value: Any, where: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise DataError(str(path), line, re.split(r"[.\[]", where)[0], f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            _check_text(value, where)
            return value
        if isinstance(value, bool) or value is None or isinstance(value, int):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise DataError(str(path), line, where, f"{value} is not a JSON number; write null or a string")
            return value
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    raise DataError(str(path), line, where, f"has a key that is not text ({type(k).__name__})")
                _check_text(k, where)
                out[k] = clean(v, f"{where}.{k}" if where else k, depth + 1)
            return out
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
        if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
            return value.isoformat()
        if isinstance(value, datetime.timedelta):
            return value.total_seconds()
        if isinstance(value, decimal.Decimal):
            return str(value)
        raise DataError(str(path), line, where, f"{type(value).__name__} values cannot be carried; "
                        "valid: text, numbers, true/false, null, lists, objects, dates")

    def _check_text(text: str, where: str) -> None:
        if "\x00" in text:
            raise DataError(str(path), line, where or "<key>", "contains a NUL character")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise DataError(str(path), line, where or "<key>",
                            f"contains a lone surrogate {ascii(text[e.start])} (not valid Unicode text)") from None

    try:
        return clean(rec, "", 0)
    except RecursionError:  # pragma: no cover - MAX_DEPTH stops far before Python's limit
        raise DataError(str(path), line, "<row>", f"nested deeper than {MAX_DEPTH} levels") from None


def pool_files(path: str | Path) -> list[Path]:
    """The files a pool names: one file, a saved HF dataset, a folder of JSONL/Parquet/CSV files,
    or a glob (`data/*.jsonl`), in sorted order so a pool that grows by new files keeps its rows'
    order and ids."""
    path = Path(path)
    if not path.exists() and any(ch in str(path) for ch in "*?["):  # a file named `pool[1].jsonl` is that file
        matches = [Path(p) for p in glob.glob(str(path), recursive=True)]
        _no_folders(path, [p for p in matches if p.is_dir()], "the pattern matches")
        files = sorted(p for p in matches if p.is_file())
        if not files:
            raise TunesetError(f"{path}: the pattern matches no file")
        return files
    if not path.exists():
        raise TunesetError(f"{path}: no such file or folder")
    if path.is_dir() and detect_format_or_none(path) != "hf":
        _no_folders(path, [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")], "the folder holds")
        files = sorted(p for p in path.iterdir() if p.is_file() and detect_format_or_none(p))
        if not files:
            raise TunesetError(f"{path}: the folder holds no .jsonl, .parquet or .csv file and is no saved HF dataset")
        skipped = sorted(p.name for p in path.iterdir() if p.is_file() and p not in files and not p.name.startswith("."))
        if skipped:
            log.warning("%s: not read (not .jsonl/.parquet/.csv): %s", path, ", ".join(skipped))
        return files
    return [path]


def _no_folders(path: Path, folders: list[Path], what: str) -> None:
    """A pool reads files, never what is below a folder it names: a subfolder's rows (a saved HF
    dataset among shards, a split per folder) would be left out without a word, so it is an error."""
    if folders:
        names = ", ".join(sorted(p.name + "/" for p in folders))
        raise TunesetError(f"{path}: {what} folders ({names}) whose rows would not be read; name their files "
                           f"(a recursive glob such as {Path(path if path.is_dir() else path.parent) / '**' / '*.jsonl'}), "
                           "a saved HF dataset as a pool of its own, or move them")


def detect_format_or_none(path: Path) -> str | None:
    try:
        return detect_format(path)
    except TunesetError:
        return None


def parse_row(file: Path, line: int, rec: dict[str, Any] | DataError, columns: dict[str, str] | None,
              auto: dict[str, int], answers: list[str] | None = None) -> Example:
    """One read record as a validated row: any shape `to_row_shape` knows, an id from its content
    where it has none (`auto` counts them per file), its response one of `answers` where given.
    Raises the row's DataError."""
    if isinstance(rec, DataError):
        raise rec
    rec = to_row_shape(file, line, rec, columns)
    for optional in ("id", "source"):  # a columnar file's null is JSONL's absent field
        if optional in rec and rec[optional] is None:
            del rec[optional]
    if "id" not in rec:
        rec["id"] = content_id(rec, auto)
    ex = validate_record(file, line, rec)
    if answers is not None and ex.response not in answers:
        shown = ex.response if len(ex.response) <= 60 else ex.response[:60] + "..."
        raise DataError(str(file), line, "response", f"{shown!r} is not one of the task's choices "
                                                     f"({', '.join(map(repr, answers))})")
    return ex


MAX_NAMED = 20  # bad rows one error names before reading stops: enough to show a pattern


def load_rows(path: str | Path, quarantine: str | Path | None = None, columns: dict[str, str] | None = None,
              answers: list[str] | None = None) -> LoadResult:
    """Read and validate every row (any shape `to_row_shape` knows) of every file `pool_files`
    names; with `answers` (a task's fixed choices) each row's response must be one of them. Without
    `quarantine` the bad rows raise one DataError that names them all, up to MAX_NAMED, so a file
    is fixed in one pass; with it, bad rows (and ids repeated with other content) are written there
    with file, line, field and reason.

    Rows are identified by content: a row that repeats an earlier file's row exactly (a re-sent
    file) is read once and counted in `n_resent`, so it adds nothing."""
    good: list[Example] = []
    bad: list[dict[str, Any]] = []
    errors: list[DataError] = []
    seen: dict[str, tuple[Path, int, Example]] = {}
    n = resent = 0
    stopped = False  # a row was left unread because MAX_NAMED bad rows came first
    for file in pool_files(path):
        auto: dict[str, int] = {}  # per file: a re-sent file's id-less rows get the same ids again
        for line, rec in iter_records(file):
            if stopped := len(errors) == MAX_NAMED:
                break
            n += 1
            try:
                ex = parse_row(file, line, rec, columns, auto, answers)
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
                    errors.append(e)
                else:
                    bad.append(quarantine_record(e, rec if isinstance(rec, dict) else None))
        if stopped:  # no further file is opened
            break
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise BadRows(errors, stopped)
    if quarantine is not None:
        write_jsonl(quarantine, bad)
    if not good:
        what = f"all {n} rows are bad (see {quarantine})" if n else "holds no rows"
        raise TunesetError(f"{path}: {what}; there is nothing to select from")
    if resent:
        log.warning("%d rows repeat an earlier file's rows exactly (same id and content): read once", resent)
    return LoadResult(rows=rows_frame(good), n_read=n - resent, quarantined=bad, n_resent=resent)


def quarantine_record(e: DataError, raw: dict[str, Any] | None) -> dict[str, Any]:
    """What the quarantine file says of a bad row. The raw row is ASCII-escaped JSON text (a line
    that never parsed, its text as read) and the id is kept only when it is plain text, so a row
    holding a lone surrogate or a 100-deep id can be written down too."""
    try:
        text = json.dumps(raw, default=str) if raw is not None else e.raw  # a line that never parsed: as read
        rid = raw.get("id") if raw else None
        rid = rid if rid is None or isinstance(rid, str) else json.dumps(rid, default=str)[:200]
    except (RecursionError, ValueError):
        text = rid = None  # deeper than json can write: file, line and reason still locate it
    return {"file": e.file, "line": e.line, "field": _writable(e.field), "reason": _writable(e.reason),
            "id": _writable(rid) if rid is not None else None, "raw": text}


def _writable(text: str) -> str:
    """Text as is, or ASCII-escaped where it holds what UTF-8 cannot encode (a lone surrogate)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return ascii(text)[1:-1]


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


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=1, default=str))


def write_csv(frame: pl.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.write_csv(tmp)
    return path


def write_parquet(frame: pl.DataFrame, path: str | Path, row_group_size: int | None = None) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp, row_group_size=row_group_size)
    return path


def save_figure(fig: Any, path: str | Path, dpi: int) -> Path:
    """A matplotlib figure, atomically: the format comes from `path`'s extension, as the temp
    file beside it has none of its own."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
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
    if path.suffix == ".csv":  # a CSV cell is text: anything else is written as JSON text
        records = [{k: v if isinstance(v, str) or v is None else json.dumps(v) for k, v in r.items()} for r in records]
    frame = pl.DataFrame(records, infer_schema_length=None) if records else rows.select("id", "source", "instruction", "response")
    if path.suffix == ".parquet":
        _holds_as_written(path, records, frame)
        return write_parquet(frame, path)
    return write_csv(frame, path)


def _holds_as_written(path: Path, records: list[dict[str, Any]], frame: pl.DataFrame) -> None:
    """A Parquet column has one type, so polars casts a field that is 1 in one row and "two" in
    another to text (True to 1, an object's missing key to null): the first row it would change is
    an error naming the field, rather than a file that silently differs from the rows. A whole
    number beside fractions (1 beside 2.5, read back as 1.0) is the same number and passes."""
    extras = [c for c in frame.columns if c not in CANONICAL]  # the row fields are typed already
    for k, (want, got) in enumerate(zip(records, frame.select(extras).iter_rows(named=True)), start=1):
        for name in extras:
            if _as_stored(want.get(name)) != _as_stored(got[name]):
                raise TunesetError(f"{path}: field '{name}' of row {k} (id {want['id']!r}) would be stored as "
                                   f"{json.dumps(got[name])[:80]}, not {json.dumps(want.get(name))[:80]}: a Parquet "
                                   "column holds one type; write .jsonl, which keeps each row's own")


def _as_stored(value: Any) -> str:
    """JSON text of a value with whole numbers as floats: what must survive a typed column."""
    def widen(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: widen(x) for k, x in v.items()}
        if isinstance(v, list):
            return [widen(x) for x in v]
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v
    return json.dumps(widen(value), sort_keys=True)


def collect(frame: pl.LazyFrame) -> pl.DataFrame:
    """A lazy query's result on polars' in-memory engine. Its default engine for scans now and then
    parks every one of its threads when queries run from several threads at once (as in
    pola-rs/polars#27969); it hung this project's test suite mid shard read. The cost is small:
    0.8x-1.6x of the default's time on the per-row cache's lookups (benchmarks/row_cache.py)."""
    return frame.collect(engine="in-memory")


@functools.cache
def _umask() -> int:
    """The process's umask (read once: os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def folder_siblings(path: Path) -> tuple[Path, Path]:
    """`atomic_folder`'s folders beside `path`: the new set being written, the last one moved aside."""
    return path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")


@contextlib.contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """A fresh folder beside `path` to write a set of files into, put in `path`'s place only when
    all are written: a kill midway leaves the previous set whole, never new files beside old ones
    (nor an old file the new set no longer has)."""
    path = Path(path)
    new, old = folder_siblings(path)
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    yield new
    fsync(new)
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    new.rename(path)
    fsync(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') writes to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
            # mkstemp makes the file owner-only; a plain open() would have honoured the umask.
            os.chmod(self.tmp, 0o666 & ~_umask())
            fsync(self.tmp)  # the bytes reach the disk before the name does: a power loss leaves old or new
            os.replace(self.tmp, self.path)
            fsync(self.path.parent)
        else:
            self.tmp.unlink(missing_ok=True)
