"""A run's context, resolved once from its recipe: the store, the run folder, the tasks, and the
selector specs and directions the flows need. Flows build it once with `run_context` and pass it
down, instead of every function climbing back up to the recipe to rebuild them.

It holds no DataFrames and loads no models, so it is cheap to build, and a remote task worker
receives only its recipe and resolves its own. Task rows (dev and test files) are read through `task_rows`, cached per process by
path and file state: a compare reads each dev file once, not once per selector, shard and
evaluation, and an edited file is read again."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from tuneset.data.fingerprint import file_stamp
from tuneset.data.io import load_rows, pool_files
from tuneset.errors import TunesetError
from tuneset.models.loading import resolve_device
from tuneset.recipe import Recipe, SelectorSpec, TaskSpec
from tuneset.selectors import ScoringContext, make_selector
from tuneset.store import ArtifactStore

_ROWS: dict[tuple, pl.DataFrame] = {}
_ROWS_LOCK = threading.Lock()


def task_rows(path: str | Path, answers: list[str] | None = None) -> pl.DataFrame:
    """A task file's validated rows, each answer one of `answers` where the task fixes them; read
    once per process while its files are unchanged (keyed by each file's `file_stamp`; a file
    changed moments ago is read afresh every time)."""
    stamps = tuple(file_stamp(f) for f in pool_files(path))
    if None in stamps:
        return load_rows(path, answers=answers).rows
    key = (stamps, tuple(answers) if answers is not None else None)
    with _ROWS_LOCK:
        if key not in _ROWS:
            _ROWS[key] = load_rows(path, answers=answers).rows
        return _ROWS[key].clone()


@dataclass(frozen=True)
class RunContext:
    """What every stage of one run reads: built by `run_context`, never mutated."""

    recipe: Recipe
    store: ArtifactStore
    root: Path  # runs/<recipe name>
    tasks: tuple[TaskSpec, ...]

    def __reduce__(self):
        """Sent to a task worker as its recipe alone, and resolved again there: a URL store's local
        mirror belongs to each machine, and the worker reads task rows through its own cache."""
        return run_context, (self.recipe,)

    def run_dir(self, *parts: str) -> Path:
        """A folder under the run's folder, created on first use."""
        d = self.root.joinpath(*parts)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def split(self, task: TaskSpec, split: str) -> pl.DataFrame:
        path = getattr(task, split)
        if path is None:
            raise TunesetError(f"task '{task.name}' has no {split} rows; evaluation needs a test file (tasks: ... test: path)")
        if not Path(path).exists():  # checked here, not at load: scoring and selecting need only dev rows
            raise TunesetError(f"task '{task.name}': {split} rows not found: {path} (evaluation and decontamination read them)")
        return task_rows(path, task.choices)

    def targets(self) -> dict[str, pl.DataFrame]:
        """The dev rows of every task but the controls: what target-aware selectors and policies aim at."""
        return {t.name: self.split(t, "dev") for t in self.recipe.target_specs()}

    def scoring(self, seed: int = 0, warmup: str | None = None) -> ScoringContext:
        """The selectors' context for this run (models load lazily, on a selector's first use)."""
        m = self.recipe.model
        return ScoringContext(
            store=self.store, model=m.name, embedder=m.embedder, device=m.device, targets=self.targets(),
            seed=seed, max_length=m.max_length, max_batch_tokens=m.max_batch_tokens, warmup=warmup, adapter=m.adapter,
        )

    def spec(self, name: str) -> SelectorSpec:
        """The recipe's spec for selector `name` (its params), or its defaults."""
        return self.recipe.score.spec(name)

    def directions(self, specs: list[SelectorSpec]) -> dict[str, bool]:
        """Whether a higher score is better, per selector (params may decide it)."""
        return {s.name: make_selector(s.name, s.params).higher_is_better for s in specs}

    def with_recipe(self, **update) -> RunContext:
        """The context of this recipe with some fields replaced (another curation, prompt format)."""
        return run_context(self.recipe.model_copy(update=update))


def run_context(recipe: Recipe) -> RunContext:
    """Resolve a recipe into its run context; cheap (no rows read, no models loaded).

    `model.device: auto` is resolved here, where the run starts: a task worker rebuilds the context
    from this recipe, so a GPU worker under a CPU head computes on the device (and under the cache
    keys, `precision_tag`) the head reads back, not its own."""
    if recipe.model.device == "auto":
        recipe = recipe.model_copy(update={"model": recipe.model.model_copy(update={"device": resolve_device("auto").type})})
    work = Path(recipe.work_dir)
    store = ArtifactStore(recipe.store or work / "store")  # a folder, or an fsspec URL workers share
    return RunContext(recipe, store, work / "runs" / recipe.name, tuple(recipe.task_specs()))
