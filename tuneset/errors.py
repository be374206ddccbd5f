"""Errors a user can act on: each names where the problem is and what would be valid."""

from __future__ import annotations


class TunesetError(Exception):
    """Base class for errors that are the user's to fix (bad input, bad config)."""


class DataError(TunesetError):
    """A row of an input file is malformed; the message names file, line and field."""

    def __init__(self, file: str, line: int, field: str, reason: str):
        self.file, self.line, self.field, self.reason = file, line, field, reason
        super().__init__(f"{file}:{line}: field '{field}': {reason}")


class UnknownNameError(TunesetError, KeyError):
    """A name (selector, metric, policy...) is not registered; lists the valid ones."""

    def __init__(self, kind: str, name: str, valid: list[str]):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} '{name}'; valid: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]
