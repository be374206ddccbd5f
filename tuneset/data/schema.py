"""The row schema every stage agrees on."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

ROW_COLUMNS = ["id", "source", "instruction", "response", "choices", "metadata"]
ROW_SCHEMA = {
    "id": pl.String,
    "source": pl.String,
    "instruction": pl.String,
    "response": pl.String,
    "choices": pl.List(pl.String),
    "metadata": pl.String,
}


class Example(BaseModel):
    """One instruction/response pair. Strict types: a number where text belongs is an error, not a cast."""

    model_config = ConfigDict(strict=True, extra="allow")

    id: str  # blank or whitespace-only is refused by _not_blank, with one message
    instruction: str
    response: str
    source: str = "unknown"
    choices: list[str] | None = None

    @field_validator("id", "instruction", "response", "source")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty or whitespace")
        return v

    @field_validator("choices")
    @classmethod
    def _choices_nonempty(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if v is not None and len(v) < 2:
            raise ValueError("needs at least two choices")
        response = info.data.get("response")
        if v is not None and response is not None and response not in v:
            raise ValueError(f"does not contain the row's response {response!r}")
        return v

    def extras(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


GROUP_FIELDS = ("source", "response", "instruction")  # the row fields that can name groups
MISSING = "(none)"


def group_values(rows: pl.DataFrame, name: str) -> pl.Series | None:
    """Each row's value of field `name`, as text: a row field, or one of the user's own fields kept
    in `metadata` (a `domain` or `language` column of their data). Rows without it get "(none)",
    a group of their own rather than a dropped row. None when no row has the field."""
    if name in GROUP_FIELDS or name == "id":
        return rows[name].cast(pl.String)
    if name not in ROW_COLUMNS:
        values = [json.loads(m).get(name) if m else None for m in rows["metadata"].to_list()]
        if any(v is not None for v in values):
            return pl.Series(name, [MISSING if v is None else v if isinstance(v, str) else json.dumps(v) for v in values])
    return None


def group_fields(rows: pl.DataFrame) -> list[str]:
    """Every field `group_values` can read on these rows: the row fields and the metadata keys."""
    keys = {k for m in rows["metadata"].drop_nulls().to_list() for k in json.loads(m)}
    return [*GROUP_FIELDS, *sorted(keys - set(ROW_COLUMNS))]


def rows_frame(examples: list[Example]) -> pl.DataFrame:
    """Examples as the canonical frame; extra fields travel as a JSON `metadata` column."""
    return pl.DataFrame(
        {
            "id": [e.id for e in examples],
            "source": [e.source for e in examples],
            "instruction": [e.instruction for e in examples],
            "response": [e.response for e in examples],
            "choices": [e.choices for e in examples],
            "metadata": [json.dumps(e.extras(), sort_keys=True) if e.model_extra else None for e in examples],
        },
        schema=ROW_SCHEMA,
    )
