"""Errors a user can act on: each names where the problem is and what would be valid."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel


class TunesetError(Exception):
    """Base class for errors that are the user's to fix (bad input, bad config)."""


class DataError(TunesetError):
    """A row of an input file is malformed; the message names file, line and field."""

    def __init__(self, file: str, line: int, field: str, reason: str, raw: str | None = None):
        self.file, self.line, self.field, self.reason = file, line, field, reason
        self.raw = raw  # the line as read, where it never became a record (broken JSON): for the quarantine file
        super().__init__(f"{file}:{line}: field '{field}': {reason}")


class BadRows(DataError):
    """Several bad rows of one read, named together, so fixing a file takes one run rather than
    one run per row. A DataError of its first row, so code that handles one bad row handles it."""

    def __init__(self, errors: list[DataError], stopped: bool):
        first = errors[0]
        super().__init__(first.file, first.line, first.field, first.reason, first.raw)
        self.errors = errors
        head = f"the first {len(errors)} bad rows (reading stopped there)" if stopped else f"{len(errors)} bad rows"
        self.args = (f"{head}: " + "; ".join(map(str, errors)),)  # one line, as every error of ours


class UnknownNameError(TunesetError, KeyError):
    """A name (selector, metric, policy...) is not registered; lists the valid ones."""

    def __init__(self, kind: str, name: str, valid: list[str]):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} '{name}'; valid: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


def first_line(e: BaseException) -> str:
    """An exception's first line, cut at 200 characters: a third-party error as one line of ours."""
    text = str(e).strip().splitlines()
    return text[0][:200] if text else "no detail"


def telling_error(errors: list[Any]) -> Any:
    """The pydantic error to show: a misspelt key first (`metrc` explains the `metric` that is
    "Field required" beside it), else the first field's. Where that field is a union, the member
    that got furthest into the value is the one the user meant (`{a: x}` is a mapping with a bad
    number, not a misspelt 'equal'); members that failed at once are named together."""
    if (typo := next((e for e in errors if e["type"] == "extra_forbidden"), None)) is not None:
        return typo
    field = _field_of(errors[0]["loc"])
    tried = [e for e in errors if _field_of(e["loc"]) == field and len(e["loc"]) > len(field)]
    if len(tried) < 2:
        return errors[0]
    deepest = max(len(e["loc"]) for e in tried)
    best = [e for e in tried if len(e["loc"]) == deepest]
    members = {e["loc"][len(field)] for e in best}
    if len(members) == 1:  # one member's errors (two rows of one list) are not alternatives: the first
        return best[0]
    first_per_member = {e["loc"][len(field)]: e for e in reversed(best)}
    best = [e for e in best if first_per_member[e["loc"][len(field)]] is e]
    msgs = list(dict.fromkeys(e["msg"] for e in best))
    rest = [m.removeprefix("Input should be ") if m.startswith("Input should be ") else m[:1].lower() + m[1:]
            for m in msgs[1:]]
    return {**best[0], "msg": ", or ".join([msgs[0], *rest])}


def _field_of(loc: tuple) -> tuple:
    """A location up to its first union member: the field whose union was tried."""
    for i, part in enumerate(loc):
        if _union_tag(part):
            return tuple(loc[:i])
    return tuple(loc)


def error_text(model: type[BaseModel], err: Any, at: tuple[str, ...] = ()) -> str:
    """One pydantic error as `field.path: message`, the path under `at`; an unknown key lists the
    valid ones."""
    loc, key = err["loc"], ()
    if err["type"] == "extra_forbidden":  # the last part is the user's own key, whatever it looks like
        loc, key = loc[:-1], loc[-1:]
    loc = tuple(p for p in loc if not _union_tag(p)) + tuple(key)
    where = ".".join(str(p) for p in (*at, *loc))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        if parent is not None:
            msg += f"; valid: {', '.join(parent.model_fields) or 'none'}"
    return f"{where}: {msg}" if where else msg  # a check across fields names its fields itself


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model a validation error's `loc` points into (through lists, dicts, optionals)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = current.model_fields if isinstance(current, type) and issubclass(current, BaseModel) else {}
        if part not in fields:
            return None
        current = _first_model(fields[part].annotation)
        if current is None:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _union_tag(part: Any) -> bool:
    """pydantic names the union member it tried in `loc` (`list[TaskSpec]`, `int`, `literal[...]`)."""
    return isinstance(part, str) and ("[" in part or part in ("int", "str", "float", "bool", "dict", "list", "none"))


def _first_model(tp: Any) -> type[BaseModel] | None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in typing.get_args(tp):
        found = _first_model(arg)
        if found is not None:
            return found
    return None
