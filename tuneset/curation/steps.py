"""The curation-step contract and registry: a new step is one module with one `@register_step` class.

A step only decides: it reads the rows, evaluation rows and score columns (selectors produce any
proposal, e.g. `label_quality.suggested`) and drops or corrects rows through `Decisions`, which
keeps a row's first decision. So the order of steps is the order of reasons: a row leaves for the
first reason that applies, and later steps judge only the rows still undecided.

Built-in steps are turned on by their own `curate` settings (`dedup`, `near_dedup`, `relabel`...)
and run in `DEFAULT_ORDER`; `curate.steps` orders them explicitly (data-juicer style) and adds
steps that have no setting of their own, with `params` validated by the step's `Params`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import polars as pl
from pydantic import BaseModel

from tuneset.errors import TunesetError, UnknownNameError
from tuneset.recipe import CurateConfig
from tuneset.registry import NoParams, Registry, check_params_model, validate_params

# Today's fixed order: contamination, duplicates and unfixable labels first, corrections next,
# rule filters last (a corrected row's scores describe its old response, so filters skip it).
DEFAULT_ORDER = ("decontaminate", "dedup", "near_dedup", "relabel", "rewrite", "filters")


@dataclass(frozen=True)
class CurationInput:
    """What every step may read: the rows, the evaluation rows, `table` (id + score columns) and the settings."""

    rows: pl.DataFrame
    eval_rows: dict[str, pl.DataFrame]
    table: pl.DataFrame
    cfg: CurateConfig
    judge: dict[str, float] = field(default_factory=dict)  # AUROC per judging column on known answers (curation.judge)


@dataclass
class Decisions:
    """Drops and corrections so far; the first decision about a row stands."""

    drops: dict[str, str] = field(default_factory=dict)
    fixes: dict[str, tuple[str, str]] = field(default_factory=dict)
    copy_kept: dict[str, str] = field(default_factory=dict)  # exact dedup: a dropped copy -> the copy it kept
    copies: dict[str, tuple[str, str]] = field(default_factory=dict)  # near-duplicate -> (the row it copies, reason)

    def decided(self, i: str) -> bool:
        return i in self.drops or i in self.fixes

    def drop(self, i: str, reason: str) -> None:
        if not self.decided(i):
            self.drops[i] = reason

    def drop_copy(self, i: str, original: str, reason: str) -> None:
        """Drop `i` as a copy of `original`, if `original` is still kept after every step (`settle`).
        Until then the later steps judge `i` like any row: were a filter to drop the original, a
        copy dropped at once would leave neither."""
        if not self.decided(i):
            self.copies[i] = (original, reason)

    def settle(self) -> None:
        """Copies whose original stayed leave, for that first reason; the rest keep what the later
        steps decided of them."""
        for i, (original, reason) in self.copies.items():
            if original not in self.drops:
                self.fixes.pop(i, None)
                self.drops[i] = reason

    def fix(self, i: str, response: str, reason: str) -> None:
        if not self.decided(i):
            self.fixes[i] = (response, reason)


class CurationStep(ABC):
    """Subclass, set `name` (and `setting`, or `Params`), implement `run`."""

    name: ClassVar[str]
    # The `curate` field that turns this built-in step on; None: the step runs when curate.steps lists it.
    setting: ClassVar[str | None] = None
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, params: BaseModel):
        self.params = params

    def columns(self, cfg: CurateConfig) -> list[str]:
        """Score columns this step reads; checked before any step runs."""
        return []

    def selector_params(self, cfg: CurateConfig) -> dict[str, dict[str, Any]]:
        """Params, per selector, that this step's setting fixes over the recipe's own: where the
        selector itself draws the line the step acts on (SemDeDup's cosine), the step's setting
        must be that line, not a second cut that can only tighten it."""
        return {}

    @abstractmethod
    def run(self, data: CurationInput, decisions: Decisions) -> None: ...


def _check_setting(cls: type[CurationStep]) -> None:
    if cls.setting is not None and cls.setting not in CurateConfig.model_fields:
        raise ValueError(f"curation step '{cls.name}': setting '{cls.setting}' is not a curate field; "
                         f"valid: {', '.join(f for f in CurateConfig.model_fields if f != 'steps')}")
    if cls.setting is not None and cls.Params is not NoParams:
        raise ValueError(f"curation step '{cls.name}': a step takes its settings from curate.{cls.setting} or from Params, not both")
    check_params_model(f"curation step '{cls.name}'", cls.Params)


STEPS: Registry[type[CurationStep]] = Registry("curation step", _check_setting)
register_step, step_names, get_step = STEPS.add, STEPS.names, STEPS.get


def _on(cls: type[CurationStep], cfg: CurateConfig) -> bool:
    return cls.setting is None or bool(getattr(cfg, cls.setting))


def resolve_steps(cfg: CurateConfig) -> list[CurationStep]:
    """The steps these settings run, in order. With `cfg.steps`, it must list exactly the built-in
    steps their settings turn on (so no setting is silently ignored), plus any others."""
    if cfg.decontaminate_ngram is not None and not cfg.decontaminate:
        raise TunesetError("curate.decontaminate_ngram: refines decontamination, which curate.decontaminate turns "
                           "off; turn it on or drop decontaminate_ngram")
    if cfg.steps is None:
        return [get_step(n)(NoParams()) for n in DEFAULT_ORDER if _on(get_step(n), cfg)]
    out: list[CurationStep] = []
    for k, spec in enumerate(cfg.steps):
        try:
            cls, where = get_step(spec.name), f"curate.steps[{k}] ({spec.name})"
        except UnknownNameError as e:
            raise TunesetError(f"curate.steps[{k}]: {e}") from None
        if spec.name in [s.name for s in cfg.steps[:k]]:
            raise TunesetError(f"{where}: listed twice")
        if not _on(cls, cfg):
            raise TunesetError(f"{where}: curate.{cls.setting} is off; set it or drop the step")
        out.append(cls(validate_params(where, cls.Params, spec.params)))
    listed = {s.name for s in cfg.steps}
    for name in DEFAULT_ORDER:
        if name not in listed and _on(get_step(name), cfg):
            raise TunesetError(f"curate.steps does not list '{name}', which curate.{get_step(name).setting} turns on; "
                               f"list it or turn it off")
    return out


def step_selectors(cfg: CurateConfig) -> list[str]:
    """Selectors whose score columns the steps read (the curate flow scores them first)."""
    # The filters' selectors first: the order score tables (and the score plot) have always had.
    steps = sorted(resolve_steps(cfg), key=lambda step: step.name != "filters")
    cols = [c for step in steps for c in step.columns(cfg)]
    return list(dict.fromkeys(c.split(".")[0] for c in cols))


def step_selector_params(cfg: CurateConfig) -> dict[str, dict[str, Any]]:
    """Per selector, the params the steps fix (`CurationStep.selector_params`), merged."""
    out: dict[str, dict[str, Any]] = {}
    for step in resolve_steps(cfg):
        for name, params in step.selector_params(cfg).items():
            out.setdefault(name, {}).update(params)
    return out


def need(table: pl.DataFrame, *cols: str) -> None:
    for c in cols:
        if c not in table.columns:
            raise UnknownNameError("score column", c, [x for x in table.columns if x != "id"])
