"""Tiny built-in demo dataset (pool, noise truth, target tasks); see ``data/README.md``."""

from pathlib import Path

DEMO_DIR = Path(__file__).parent / "data"


def demo_tasks_file() -> Path:
    """Path of the demo ``tasks.json`` (task paths inside it are relative to its folder)."""
    return DEMO_DIR / "tasks.json"


def demo_pool_file() -> Path:
    """Path of the demo candidate pool ``pool.jsonl``."""
    return DEMO_DIR / "pool.jsonl"


def demo_recipe_file() -> Path:
    """The demo's compare recipe (pool and tasks paths relative to it)."""
    return Path(__file__).parent / "demo.yaml"
