"""One shape for the extension points (selectors, curation steps, metrics): a plugin's mistake
fails when it registers, not mid-run, and a name that misses lists the valid ones."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from tuneset.errors import TunesetError, UnknownNameError, error_text, telling_error

T = TypeVar("T")


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_params_model(owner: str, model: Any) -> None:
    """At registration: a plugin's `Params` is a pydantic model that refuses unknown keys, so a
    misspelt param in a recipe fails at load instead of silently running with the default."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)) or model.model_config.get("extra") != "forbid":
        raise ValueError(f"{owner}: Params must be a pydantic model with model_config = ConfigDict(extra='forbid')")


def validate_params(owner: str, model: type[BaseModel], params: dict[str, Any] | None) -> BaseModel:
    """A recipe's params for a plugin, or one TunesetError naming the first problem and the valid params."""
    try:
        return model.model_validate(params or {})
    except ValidationError as e:
        raise TunesetError(f"{owner}: {error_text(model, telling_error(e.errors()), at=('params',))}") from None


class Registry(Generic[T]):
    """Entries by their `name` (a selector or step class, a Metric), a name that recipes and score
    columns (`name.column`) carry; `check(entry)` raises ValueError on a bad one."""

    def __init__(self, kind: str, check: Callable[[T], None]):
        self.kind, self._check, self._entries = kind, check, dict[str, T]()

    def add(self, entry: T) -> T:
        """Returns `entry`, so it serves as a class decorator; nothing is kept when a check fails."""
        name = getattr(entry, "name", None)
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"{self.kind} name {name!r} must be lowercase letters, digits and '_'")
        if name in self._entries:
            raise ValueError(f"{self.kind} name '{name}' registered twice")
        self._check(entry)
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry, or UnknownNameError listing the valid names."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._entries)
