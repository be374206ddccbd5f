"""A recipe checked against everything it names before any work starts: a typo in a selector,
a parameter, a weight column or a path fails in a second with one line, not after minutes of
scoring with a traceback. Lives above the selector, metric and curation-step registries, which the
recipe module cannot see."""

from __future__ import annotations

from pathlib import Path

from tuneset.curation.steps import resolve_steps
from tuneset.data.io import pool_files
from tuneset.errors import TunesetError, UnknownNameError
from tuneset.evaluate.metrics import metric_names, rows_without_choices
from tuneset.flows.context import task_rows
from tuneset.models.embed import folder_problem
from tuneset.recipe import CurateConfig, PolicyConfig, Recipe, Strategy
from tuneset.selectors import get_selector, make_selector, selector_names


def check_recipe(recipe: Recipe, where: str = "recipe", selects: bool = False, evaluates: bool = False,
                 curates: bool = False) -> Recipe:
    """Raise a TunesetError naming the first field that cannot work; return the recipe. With
    `selects` (select, pipeline, serve), `select.weights` may only name selectors the recipe scores;
    with `evaluates` (evaluate, pipeline, serve, compare), every task needs its test rows; a command
    that curates (`curates`, or `selects`) reads the test rows it names (curation's evaluation rows)."""
    if not recipe.score.selectors:
        raise TunesetError(f"{where}: score.selectors: name at least one selector, e.g. [random]; valid: "
                           + ", ".join(selector_names()))
    for i, spec in enumerate(recipe.score.selectors):
        _selector(spec.name, f"{where}: score.selectors[{i}]")
        try:
            make_selector(spec.name, spec.params)
        except TunesetError as e:
            raise TunesetError(f"{where}: score.selectors[{i}] ({spec.name}): {e}") from None
        if "targets" in get_selector(spec.name).uses and not recipe.target_specs():
            raise TunesetError(f"{where}: score.selectors[{i}] ({spec.name}) reads the target tasks' dev rows: give the "
                               "recipe tasks that are not controls (a one-off select: --target tasks.json)")
    for t in recipe.task_specs():
        if t.metric not in metric_names():
            raise TunesetError(f"{where}: task '{t.name}': metric: {UnknownNameError('metric', t.metric, metric_names())}")
    _policy(recipe.select, f"{where}: select", recipe)
    if selects:
        scored = [s.name for s in recipe.score.selectors]
        for col in recipe.select.weights:
            name = col.lstrip("-").split(".")[0]
            if name not in scored:
                raise TunesetError(f"{where}: select.weights: '{col}' needs selector '{name}', which score.selectors "
                                   f"does not run ({', '.join(scored)}); add it there")
    for st in recipe.compare.strategies:
        _policy(st, f"{where}: compare.strategies ({st.name})", recipe)
    for i, rule in enumerate(recipe.curate.filters):
        _column(rule.column, f"{where}: curate.filters[{i}].column")
    _curation(recipe.curate, where)
    for st in recipe.compare.strategies:
        if st.curate is not None:
            _curation(st.curate, f"{where}: compare.strategies ({st.name})")
    try:
        pool_files(recipe.pool)
    except TunesetError as e:
        hint = (" (a relative path resolves against the recipe's folder in the recipe, against the current "
                "directory in --set)") if where.endswith((".yaml", ".yml")) else ""
        raise TunesetError(f"{where}: pool: {e}{hint}") from None
    embedder = Path(recipe.model.embedder).expanduser()
    if embedder.is_dir() and (problem := folder_problem(embedder)) is not None:
        raise TunesetError(f"{where}: model.embedder: {problem}")
    if recipe.work_dir.exists() and not recipe.work_dir.is_dir():
        raise TunesetError(f"{where}: work_dir: {recipe.work_dir} is a file; name a folder")
    # Scoring reads dev rows only: test rows matter where a command evaluates or curates.
    reads_test = evaluates or curates or selects
    for t in recipe.task_specs():
        if not Path(t.dev).is_file():
            raise TunesetError(f"{where}: task '{t.name}': dev rows not found: {t.dev}")
        if evaluates and t.test is None:
            raise TunesetError(f"{where}: task '{t.name}' has no test rows, which evaluation reads; give its `test` file")
        if reads_test and t.test is not None and not Path(t.test).is_file():
            raise TunesetError(f"{where}: task '{t.name}': test rows not found: {t.test}")
        for path in (t.dev, t.test if reads_test else None):
            if path is None:
                continue
            try:  # read now, into the per-process cache the run reads them from
                rows = task_rows(path, t.choices)
            except TunesetError as e:
                raise TunesetError(f"{where}: task '{t.name}': {e}") from None
            if missing := rows_without_choices(t, rows):
                raise TunesetError(f"{where}: task '{t.name}': {t.metric} scores answer options, which "
                                   f"{len(missing)} of the rows of {path} lack (first: id '{missing[0]}'); give each row `choices`, or the "
                                   "task `choices`")
    curations = [("curate", recipe.curate)] + [(f"compare.strategies ({st.name}).curate", st.curate)
                                               for st in recipe.compare.strategies if st.curate is not None]
    for name, cfg in curations:
        if cfg.judge_rows is not None:
            try:
                pool_files(cfg.judge_rows)
            except TunesetError as e:
                raise TunesetError(f"{where}: {name}.judge_rows: {e}") from None
    for name, path in recipe.compare.references.items():
        if not Path(path).is_file():
            raise TunesetError(f"{where}: compare.references.{name}: no such file: {path}")
    return recipe


def _selector(name: str, where: str) -> None:
    if name not in selector_names():
        raise TunesetError(f"{where}: {UnknownNameError('selector', name, selector_names())}")


def _curation(cfg: CurateConfig, where: str) -> None:
    """Step names, their order against their settings, and step params."""
    try:
        resolve_steps(cfg)
    except TunesetError as e:
        raise TunesetError(f"{where}: {e}") from None


def _column(column: str, where: str) -> None:
    """A score column is `<selector>` or `<selector>.<component>`, optionally with a leading '-'."""
    _selector(column.lstrip("-").split(".")[0], where)


def _policy(policy: PolicyConfig, where: str, recipe: Recipe | None = None) -> None:
    for col in policy.columns() if isinstance(policy, Strategy) else policy.weights:
        _column(col, f"{where}.weights")
    if isinstance(policy.targets, dict) and recipe is not None:
        tasks = [t.name for t in recipe.target_specs()]  # a control takes no share
        unknown = sorted(set(policy.targets) - set(tasks))
        if unknown:
            raise TunesetError(f"{where}.targets: {UnknownNameError('task', unknown[0], tasks)}")
    if policy.quotas != "proportional" and policy.quota_by is None:  # else they would be read as no quotas at all
        raise TunesetError(f"{where}: quotas {policy.quotas!r} need quota_by (the field that names the groups, e.g. source)")
