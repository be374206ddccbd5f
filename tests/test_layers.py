"""Layers never import upward: every import between tuneset's packages points to a lower floor.

    python tests/test_layers.py     # prints every arrow with its floors
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "tuneset"

# Lowest first. A package may import only packages on floors below its own (not its siblings).
FLOORS: dict[str, int] = {
    "errors": 0, "runtime": 0, "demo": 0,
    "registry": 1, "progress": 1,
    "data": 2, "recipe": 2,
    "store": 3,
    "models": 4,
    "selectors": 5, "selection": 5, "curation": 5, "finetune": 5, "evaluate": 5,
    "flows": 6,
    "cli": 7,
}


def import_edges() -> dict[str, set[str]]:
    """package -> the tuneset packages its modules import (module-level and inside functions)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("").parts
        if rel == ("__init__",):
            continue
        pkg = rel[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                parts = name.split(".")
                if parts[0] == "tuneset" and len(parts) > 1 and parts[1] != pkg:
                    edges[pkg].add(parts[1])
    return edges


def test_every_package_has_a_floor():
    packages = {p.relative_to(ROOT).with_suffix("").parts[0] for p in ROOT.rglob("*.py")} - {"__init__"}
    assert packages == set(FLOORS), f"new or removed package: give it a floor in FLOORS: {packages ^ set(FLOORS)}"


def test_no_package_imports_one_on_its_own_floor_or_above():
    upward = [f"{a} (floor {FLOORS[a]}) -> {b} (floor {FLOORS[b]})"
              for a, targets in import_edges().items() for b in targets if FLOORS[b] >= FLOORS[a]]
    assert upward == []


if __name__ == "__main__":
    for a, targets in sorted(import_edges().items(), key=lambda kv: (FLOORS[kv[0]], kv[0])):
        print(f"{a} ({FLOORS[a]}) -> " + ", ".join(f"{b} ({FLOORS[b]})" for b in sorted(targets, key=FLOORS.get)))
