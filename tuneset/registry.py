"""One shape for the extension points (selectors, curation steps, metrics): a plugin's mistake
fails when it registers, not mid-run, and a name that misses lists the valid ones."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Generic, TypeVar

from tuneset.errors import UnknownNameError

T = TypeVar("T")


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
