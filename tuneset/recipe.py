"""Typed configuration: one `Recipe` per YAML file, with `--set a.b=value` overrides from the CLI.

Every field has a default that runs on a 2-core CPU; unknown keys are errors, so a typo in a
recipe fails loudly instead of silently running the default.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import operator
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tuneset.errors import TunesetError, error_text, telling_error


def named_list(v: Any) -> Any:
    """A list of `{name, params}` specs written as bare names where no params are given; one bare
    name (`--set score.selectors=random`) is a list of one, not a list of its letters."""
    if isinstance(v, str):
        v = [v]
    return [{"name": s} if isinstance(s, str) else s for s in v] if isinstance(v, list) else v


def repeats(items: list[Any]) -> list[Any]:
    """The items listed more than once, sorted: what a uniqueness check names."""
    return sorted({x for x in items if items.count(x) > 1})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# A name that becomes part of a path: no separators, no leading dot, so `../x` cannot escape.
SafeName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$", max_length=128)]


class TaskSpec(_Strict):
    """A target task: dev rows selectors may read, test rows only evaluation reads."""

    name: str
    metric: str  # a registered metric (tuneset.evaluate.metrics), checked with the recipe (flows/checks.py)
    dev: Path
    test: Path | None = None  # only evaluation needs test rows; selection reads dev rows alone
    choices: list[str] | None = None  # None: per-row `choices` field, when the metric needs them


class ModelConfig(_Strict):
    name: str = "smollm2"
    # A LoRA adapter folder the selectors score with, on top of `name`: CLEAR's next round scores
    # the pool with the model fine-tuned on the last round's curated rows (a run's `adapter/`).
    # Fine-tuning still starts from `name`.
    adapter: str | None = None
    embedder: str = "minilm"
    device: str = "auto"
    max_length: int = Field(default=256, ge=16)
    max_batch_tokens: int = Field(default=4096, ge=64)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        """Checked at load: a typo would otherwise surface as a torch error mid-run."""
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
            raise ValueError(f"unknown device '{v}'; valid: auto, cpu, cuda, cuda:<index>, mps")
        return v


class SelectorSpec(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class ScoreConfig(_Strict):
    selectors: list[SelectorSpec] = Field(default_factory=lambda: [SelectorSpec(name="random"), SelectorSpec(name="length")])
    shard_size: int = Field(default=256, ge=1)
    # Where shard tasks run: "local" (threads in this process), or a Dask / Ray cluster through
    # Prefect's task runners (extras tuneset[dask] / tuneset[ray]); `address` joins a running one.
    runner: Literal["local", "dask", "ray"] = "local"
    workers: int = Field(default=1, ge=1)
    address: str | None = None

    @field_validator("selectors", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        return named_list(v)

    @field_validator("selectors")
    @classmethod
    def _once(cls, v: list[SelectorSpec]) -> list[SelectorSpec]:
        """A score table has one column per selector name: a second spec of a name would be scored,
        then replaced by the first in one stage and by the last in another."""
        if names := repeats([s.name for s in v]):
            raise ValueError(f"selector names repeat: {', '.join(names)}; give each selector once, with the "
                             "params you want")
        return v

    def spec(self, name: str) -> SelectorSpec:
        """This recipe's spec for selector `name` (with its params), or its defaults."""
        return next((s for s in self.selectors if s.name == name), SelectorSpec(name=name))


class FilterRule(_Strict):
    column: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _range(self) -> FilterRule:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"filter on '{self.column}': min {self.min} > max {self.max} would drop every row")
        return self


class RelabelConfig(_Strict):
    """Confident learning's label issues (selector `label_quality`): relabel when the model's label is
    confidently better, else drop; either way the old label stays in the audit."""

    min_prob: float = Field(default=0.6, gt=0, le=1)  # out-of-sample probability the new label needs
    drop_unsure: bool = True  # flagged rows whose suggestion is below min_prob are dropped


class RewriteConfig(_Strict):
    """CLEAR's auto-correct: the `rewrite` selector proposes the model's own answer to low-confidence
    rows (its params: which rows, the confidence measure); the answer replaces the response only
    when its confidence beats the given one's by `margin`."""

    margin: float = Field(default=0.2, ge=0)


class StepSpec(_Strict):
    """A curation step in `curate.steps`: a name, and params for steps without a `curate` setting."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class CurateConfig(_Strict):
    dedup: bool = True
    decontaminate: bool = True
    decontaminate_ngram: int | None = Field(default=None, ge=4)  # also drop rows sharing a word n-gram with eval rows
    near_dedup: float | None = Field(default=None, gt=0, le=1)  # SemDeDup cosine threshold (selector `semdedup`)
    relabel: RelabelConfig | None = None
    rewrite: RewriteConfig | None = None
    filters: list[FilterRule] = Field(default_factory=list)  # drop rows outside [min, max] of a score column
    # The judge-competence gate: a filter on a judging column (confidence) and the rewrite step act
    # only if that column separates the target tasks' known answers from spoiled ones at this
    # AUROC or better (0.5 is a coin); None trusts the reference model unmeasured.
    judge_min_auroc: float | None = Field(default=0.6, ge=0.5, le=1.0)
    # Rows with known verdicts from the user's own domain (any pool shape plus `correct: true/false`
    # per row): the gate measures on them instead of the target tasks' dev rows.
    judge_rows: str | None = None
    # The steps in order (tuneset.curation.steps), e.g. [dedup, decontaminate, {name: my_step, params: {...}}].
    # None: decontaminate, dedup, near_dedup, relabel, rewrite, filters, each as its setting above turns it on.
    steps: list[StepSpec] | None = None

    @field_validator("steps", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        return named_list(v)


Budget = int | str


class PolicyConfig(_Strict):
    """How score columns become a selection. `weights` keys are score columns; a leading '-'
    flips a column's direction. Columns are rank-normalised before weighting."""

    weights: dict[str, float] = Field(default_factory=lambda: {"random": 1.0})
    budget: Budget | None = "10%"
    threshold: float | None = None  # keep rows whose combined score (0..1) is at least this
    band: tuple[float, float] | None = None  # keep rows whose combined quantile lies in (lo, hi]
    quota_by: str | None = None  # e.g. "source": per-group quotas
    quotas: Literal["proportional", "equal"] | dict[str, Budget] = "proportional"
    # Quality first, then diverse (DEITA): walking rows best-first, skip any whose embedding
    # cosine to an already selected row exceeds this.
    max_similarity: float | None = Field(default=None, gt=-1, le=1)
    # Split the budget across target tasks: each task's share is filled best-first by its own
    # per-task columns (`<selector>.vs_<task>` of less, embedding_knn, got), so one task's scale
    # cannot crowd out another's rows. "equal", "dev_size" (shares by dev rows), or {task: share}.
    targets: Literal["equal", "dev_size"] | dict[str, float] | None = None

    @field_validator("targets")
    @classmethod
    def _targets(cls, v):
        if isinstance(v, dict) and (not v or any(not (x >= 0 and math.isfinite(x)) for x in v.values()) or sum(v.values()) <= 0):
            raise ValueError("targets shares are finite, non-negative and not all zero, e.g. {sst2: 1, banking77: 2}")
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v):
        if v is not None:
            if not v:
                raise ValueError("weights name at least one score column, e.g. {got: 1}")
            bad = {k: w for k, w in v.items() if not math.isfinite(w) or w <= 0}
            if bad:
                raise ValueError(f"weights are finite and positive; got {bad} (to prefer a column's low values, "
                                 "put '-' before it: {'-perplexity': 1})")
        return v

    @field_validator("budget", mode="before")
    @classmethod
    def _budget(cls, v: Any) -> Budget | None:
        """Before pydantic's union, which reads true as the count 1 and reports 0.5 against `int`."""
        if v is None:
            return v
        what = "a budget is a row count (300) or a percent ('10%')"
        if isinstance(v, numbers.Integral | float) and not isinstance(v, bool) and float(v).is_integer():
            v = int(v)  # 300.0 (YAML 3.0e+2; PyYAML reads a bare 3e2 as text), numpy.int64
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise ValueError(f"{what}, not {v!r}" + (f"; for a share of the pool write '{v * 100:g}%'" if isinstance(v, float) and 0 < v < 1 else ""))
        if isinstance(v, str):
            try:
                pct = float(v[:-1]) if v.endswith("%") else None
            except ValueError:
                pct = None
            if pct is None:
                raise ValueError(f"{what}, not '{v}'")
            if not 0 < pct <= 100:
                raise ValueError("a percent budget lies in (0, 100]")
        elif v < 1:
            raise ValueError("a count budget is at least 1")
        return v

    @field_validator("quotas", mode="before")
    @classmethod
    def _quotas(cls, v):
        """Before pydantic's union, whose first complaint about {a: 0.5} was "should be 'proportional'"."""
        if not isinstance(v, dict):
            return v
        out = {}
        for g, q in v.items():
            try:
                out[g] = 0 if isinstance(q, int) and not isinstance(q, bool) and q == 0 else PolicyConfig._budget(q)
            except ValueError as e:
                raise ValueError(f"group '{g}': {e}") from None
        return out

    @field_validator("band")
    @classmethod
    def _band(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0 <= v[0] < v[1] <= 1:
            raise ValueError("band is [lo, hi] quantiles with 0 <= lo < hi <= 1")
        return v


DEFAULT_LR = {"lora": 1e-3, "full": 4e-4}  # per method, from the dev-row sweeps


class FinetuneConfig(_Strict):
    method: Literal["lora", "full"] = "lora"
    # How instruction and response are laid out for training and evaluation: `auto` is the chat
    # template where the tokenizer has one (Instruct models), else plain text.
    prompt_format: Literal["auto", "chat", "plain"] = "auto"
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    # lr and epochs: dev-row sweeps on the bench (benchmarks/README.md, "Fine-tune sweep"). LoRA:
    # 1e-3 x 3 epochs beat 2e-4 (the old default) at every epoch count and prompt format. Full
    # fine-tuning moves every weight, so it takes its own step size (DEFAULT_LR): unset, `lr` is
    # the method's; LoRA's 1e-3 on every weight was the old default for both.
    lr: float | None = Field(default=None, gt=0)
    epochs: float = Field(default=3.0, gt=0)
    batch_size: int = Field(default=8, ge=1)
    # Padded tokens per forward/backward: a batch over this runs in pieces whose gradients add up
    # to the same update, so memory follows this cap, not batch_size x max_length. Default: 256 on
    # CPU (a 300-row LoRA run peaked at 1.8 GB, not 6.3 GB, for ~10% more time), no cap on a GPU.
    # Left out of dumps, so unset it leaves every cache key as it was (it resolves per device,
    # which the keys hold); set, it enters the key through `key_parts`.
    micro_batch_tokens: int | None = Field(default=None, ge=1, exclude=True)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    seed: int = 0
    last_layers: int | None = Field(default=None, ge=1)  # LoRA on the last N transformer layers only

    def key_parts(self) -> tuple:
        """What a fine-tune's cache key reads of these settings. A set `micro_batch_tokens` is
        part of it: dropout masks are drawn per piece, so another split trains other weights."""
        return (self,) if self.micro_batch_tokens is None else (self, {"micro_batch_tokens": self.micro_batch_tokens})

    @model_validator(mode="after")
    def _method_lr(self) -> FinetuneConfig:
        if self.lr is None:
            self.lr = DEFAULT_LR[self.method]
            self.__pydantic_fields_set__.discard("lr")  # still the method's default: a sweep over `method` re-resolves it
        return self


class WarmupConfig(FinetuneConfig):
    """LESS warm-up: LoRA on a random `fraction` of the pool, keeping a checkpoint with its Adam
    state at each epoch end. Rank 8 (LESS: 128) keeps a LoRA gradient under 1M numbers on
    SmolLM2-135M, so even the reference path's dense projection stays tractable on a CPU."""

    fraction: float = Field(default=0.05, gt=0, le=1)
    lr: float = Field(default=2e-4, gt=0)  # the warm-up's own, not the fine-tune default's
    epochs: float = Field(default=4, ge=1)
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    warmup_ratio: float = 0.03

    @field_validator("epochs")
    @classmethod
    def _whole(cls, v: float) -> float:
        if v != int(v):
            raise ValueError("warm-up epochs are whole: one checkpoint per epoch")
        return v


class SweepConfig(_Strict):
    """Fine-tune settings chosen on validation rows (every task's dev rows), never on test rows.

    Each budget's sweep fine-tunes on `strategy`'s selection at that budget (seed `seed`) once per
    grid point, scores the tasks' dev rows, and keeps the best point by `rank_on_dev`'s rule
    (tuneset/evaluate/choose.py): the target tasks' dev rows pooled, ties to the lower dev loss, and
    the controls a constraint against no fine-tune, never part of the score. The no-fine-tune arm
    gets its prompt format the same way, on the target tasks' dev rows."""

    grid: dict[str, list[Any]] = Field(default_factory=lambda: {"lr": [2e-4, 5e-4, 1e-3]})
    strategy: str = "random"
    seed: int = 0

    @field_validator("grid")
    @classmethod
    def _fields(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        valid = set(FinetuneConfig.model_fields) - {"seed"}
        for k, vals in v.items():
            if k not in valid:
                raise ValueError(f"unknown fine-tune setting '{k}' in the sweep grid; valid: {', '.join(sorted(valid))}")
            if not isinstance(vals, list) or not vals:
                raise ValueError(f"sweep grid '{k}' needs a non-empty list of values")
            for x in vals:
                FinetuneConfig.model_validate({k: x})
        return v

    def points(self, base: FinetuneConfig) -> list[FinetuneConfig]:
        """Every grid combination applied to `base`, in grid order."""
        import itertools

        keys = list(self.grid)
        fixed = {k: v for k, v in base.model_dump().items() if k != "lr" or "lr" in base.model_fields_set}
        fixed["micro_batch_tokens"] = base.micro_batch_tokens  # not in dumps, still the user's memory cap
        return [FinetuneConfig.model_validate({**fixed, **dict(zip(keys, combo))})
                for combo in itertools.product(*self.grid.values())]


class EvaluateConfig(_Strict):
    max_test_rows: int | None = Field(default=None, ge=1)  # first N test rows per task (same rows for every strategy)
    max_new_tokens: int = Field(default=16, ge=1)


class Strategy(PolicyConfig):
    """A compare arm: a full selection policy (every `select` field but the budget, which the
    compare's budgets set) and optionally a curation of its own, applied to the pool before its
    policy picks; the curation's selectors share the compare's cached scores."""

    name: SafeName
    weights: dict[str, float] | None = None  # default: {name: 1}, i.e. the selector of that name
    budget: None = None  # set by compare.budgets
    curate: CurateConfig | None = None  # default: the compare's own rows (compare.curate_first)

    @field_validator("budget", mode="before")
    @classmethod
    def _budget(cls, v: Any) -> None:  # replaces PolicyConfig's: a strategy takes no budget of its own
        if v is not None:
            raise ValueError(f"compare.budgets sets every strategy's budget; drop budget {v!r} here, or add it to compare.budgets")
        return v

    def policy(self, budget: Budget) -> PolicyConfig:
        fields = self.model_dump(exclude={"name", "curate", "budget", "weights"})
        return PolicyConfig(**fields, weights=self.weights or {self.name: 1.0}, budget=budget)

    def columns(self) -> list[str]:
        return list(self.weights or {self.name: 1.0})


class CompareConfig(_Strict):
    strategies: list[Strategy] = Field(default_factory=lambda: [Strategy(name="random")])
    budgets: list[Budget] = Field(default_factory=lambda: ["10%"])
    seeds: list[int] = Field(default_factory=lambda: [0, 1])
    baselines: list[Literal["none", "full"]] = Field(default_factory=lambda: ["none", "full"])
    # The full-pool baseline costs most: its own seeds and epochs (default: as the strategies).
    full_seeds: list[int] | None = None
    full_epochs: float | None = Field(default=None, gt=0)
    curate_first: bool = True
    sweep: SweepConfig | None = None  # choose the fine-tune settings per budget on dev rows first
    # Reference arms: rows chosen outside tuneset (a hand-curated set, a benchmark's oracle), each
    # fine-tuned and evaluated beside the strategies and marked as a reference.
    references: dict[SafeName, Path] = Field(default_factory=dict)
    # Arms fine-tuned and evaluated at once, on `score.runner`'s Dask or Ray workers (e.g. one
    # per GPU). 1 on a CPU: a fine-tune already uses every core.
    workers: int = Field(default=1, ge=1)

    @field_validator("strategies", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        return named_list(v)

    @field_validator("budgets", mode="before")
    @classmethod
    def _budgets(cls, v: Any) -> Any:
        return [PolicyConfig._budget(b) for b in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _unique(self) -> CompareConfig:
        names = [s.name for s in self.strategies]
        if dup := repeats(names):
            raise ValueError(f"strategy names must be unique; repeated: {dup}")
        baselines = sorted(set(names) & {"none", "full"})
        if baselines:  # the leaderboard would read it as that baseline, or merge the two
            raise ValueError(f"strategy names 'none' and 'full' name the baselines; rename {baselines[0]}")
        clash = sorted(set(self.references) & {*names, "none", "full"})
        if clash:
            raise ValueError(f"reference arm names must differ from strategies and baselines; repeated: {clash}")
        if dup := repeats([str(b) for b in self.budgets]):  # each repeat would count as further, identical seeds
            raise ValueError(f"budgets must be unique; repeated: {dup}")
        if self.sweep is not None and self.sweep.strategy not in names:
            raise ValueError(f"sweep.strategy '{self.sweep.strategy}' is not a compare strategy; valid: {names}")
        for field, seeds in (("seeds", self.seeds), ("full_seeds", self.full_seeds or [])):
            if dup := repeats(seeds):  # a repeat would count as a second, identical seed
                raise ValueError(f"{field} must be unique; repeated: {dup}")
        return self


class ScheduleConfig(_Strict):
    # A pipeline run fine-tunes and evaluates only when at least this share of its selection is
    # new since the last run that fine-tuned (0: always); scoring and the run report happen on every run.
    retrain_min_change: float = Field(default=0.0, ge=0.0, le=1.0)


class Recipe(_Strict):
    name: SafeName = "recipe"
    work_dir: Path = Path(".tuneset")
    # Where artifacts live: a folder, or an fsspec URL (s3://bucket/prefix) that remote workers
    # share; None: <work_dir>/store.
    store: str | None = None
    pool: Path
    quarantine: bool = False  # bad input rows go to a quarantine file instead of stopping the run
    # The pool's column names for our fields, e.g. {instruction: prompt, response: completion}.
    columns: dict[Literal["id", "source", "instruction", "response", "choices"], str] = Field(default_factory=dict)
    tasks: list[TaskSpec] | Path = Field(default_factory=list)  # a list, or a tasks.json in the bench format
    task_names: list[str] | None = None  # subset of the tasks file
    # Tasks evaluated to show that fine-tuning does no harm, never aimed at: selectors and budget
    # splits see only the other tasks' dev rows, so a control cannot take a share of the budget.
    controls: list[str] = Field(default_factory=list)
    model: ModelConfig = Field(default_factory=ModelConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    select: PolicyConfig = Field(default_factory=PolicyConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)

    @field_validator("pool", mode="before")
    @classmethod
    def _pool(cls, v: Any) -> Any:
        if v is None or (isinstance(v, str) and not v.strip()):
            raise ValueError("name the pool: a file, a folder, a glob (incoming/*.jsonl) or a saved HF dataset")
        return v

    @model_validator(mode="after")
    def _resolve_tasks(self) -> Recipe:
        if isinstance(self.tasks, Path):
            self.tasks = load_tasks_file(self.tasks, self.task_names)
        elif self.task_names:
            known = {t.name for t in self.tasks}
            missing = set(self.task_names) - known
            if missing:
                raise ValueError(f"task_names: unknown task(s) {sorted(missing)}; valid: {sorted(known)}")
            self.tasks = [t for t in self.tasks if t.name in self.task_names]
        names = [t.name for t in self.tasks]
        if repeated := repeats(names):  # tasks are keyed by name everywhere: a second one would silently replace the first
            raise ValueError(f"tasks: task names repeat: {', '.join(repeated)}; give each task its own name")
        unknown = sorted(set(self.controls) - set(names))
        if unknown:
            raise ValueError(f"controls: unknown task '{unknown[0]}'; valid: {sorted(names)}")
        if names and not set(names) - set(self.controls):
            raise ValueError(f"controls name every task ({sorted(names)}); leave at least one to aim at")
        return self

    @model_validator(mode="after")
    def _arms_in_processes(self) -> Recipe:
        # Fine-tunes seed torch's process-wide RNG (LoRA init, dropout): two in threads of one
        # process would draw from each other's stream, and no run would repeat.
        if self.compare.workers > 1 and self.score.runner == "local":
            raise ValueError("compare.workers > 1 runs arms in parallel worker processes: set score.runner to dask "
                             "or ray (the local runner's threads share one random number generator)")
        return self

    @model_validator(mode="after")
    def _answer_fits(self) -> Recipe:
        if self.evaluate.max_new_tokens >= self.model.max_length:
            raise ValueError(f"evaluate.max_new_tokens ({self.evaluate.max_new_tokens}) must be below model.max_length "
                             f"({self.model.max_length}): the prompt and the answer share that window")
        return self

    def task_specs(self) -> list[TaskSpec]:
        assert isinstance(self.tasks, list)
        return self.tasks

    def target_specs(self) -> list[TaskSpec]:
        """The tasks selection aims at: every task but the controls."""
        return [t for t in self.task_specs() if t.name not in self.controls]


class TaskFileEntry(_Strict):
    """One task of a tasks.json (the bench's format): what the loader reads, and the bench's own
    descriptive fields. Any other key is refused, so a misspelt `dev` cannot fall back to the default."""

    metric: str
    dev: str | None = None  # default targets/<task>/dev.jsonl, beside the tasks file
    test: str | None = None  # default targets/<task>/test.jsonl where that file exists
    # A list: the task's answer set. Text (the bench writes "per-row field 'choices'"): each row
    # carries its own, which choice_accuracy requires of every row it scores.
    choices: list[str] | str | None = None
    about: str | None = None
    n_dev: int | None = None
    n_test: int | None = None


def _not_utf8(e: UnicodeDecodeError) -> str:
    """Where a text file stops being UTF-8: its line, and the byte. `e.object` is what was decoded
    (read_text decodes the file in one go), after any BOM, as `e.start` counts."""
    line = e.object[:e.start].count(b"\n") + 1
    return f"line {line}: byte 0x{e.object[e.start]:02x} is not UTF-8; re-save the file as UTF-8"


def load_tasks_file(path: Path, names: list[str] | None = None) -> list[TaskSpec]:
    """Tasks in the bench's tasks.json format: an object of task name -> `TaskFileEntry`."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text(encoding="utf-8-sig"))  # a BOM from a Windows editor is no error
    except UnicodeDecodeError as e:
        raise TunesetError(f"{path}: {_not_utf8(e)}") from None
    except (OSError, json.JSONDecodeError) as e:
        raise TunesetError(f"{path}: cannot read tasks file: {e}") from None
    if not isinstance(spec, dict):
        raise TunesetError(f'{path}: a tasks file maps each task name to its spec, e.g. {{"sst2": {{"metric": '
                           f'"choice_accuracy"}}}}; got a JSON {type(spec).__name__}')
    names = names or list(spec)
    out = []
    for n in names:
        if n not in spec:
            raise TunesetError(f"{path}: unknown task '{n}'; valid: {', '.join(spec)}")
        try:
            t = TaskFileEntry.model_validate(spec[n])
            default_test = path.parent / f"targets/{n}/test.jsonl"  # only if there: selecting needs no test rows
            test = path.parent / t.test if t.test else default_test if default_test.exists() else None
            out.append(TaskSpec(name=n, metric=t.metric, dev=path.parent / (t.dev or f"targets/{n}/dev.jsonl"), test=test,
                                choices=t.choices if isinstance(t.choices, list) else None))
        except ValidationError as e:
            err = telling_error(e.errors())
            if err["type"] == "model_type":
                raise TunesetError(f"{path}: task '{n}': a task's spec is an object with at least 'metric', "
                                   f"not {spec[n]!r}") from None
            raise TunesetError(f"{path}: task '{n}': {error_text(TaskFileEntry, err)}") from None
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: plain YAML
    keeps the last, so a second `select:` block would silently replace the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                continue  # the base loader names an unhashable key
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice (first on line {seen[key]}); YAML would keep only the last",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise TunesetError(f"override '{text}' is not of the form key.path=value")
    key, raw = text.split("=", 1)
    try:
        return key.strip().split("."), load_yaml(raw)
    except yaml.YAMLError as e:
        raise TunesetError(f"override '{text}': the value is not valid YAML: {getattr(e, 'problem', None) or e}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str], root: Path | None = None) -> dict[str, Any]:
    """`key.path=value` overrides set into `data`; with `root`, the relative paths a value names
    resolve against it, and only the value's: what the recipe file set is left as resolved."""
    for text in overrides:
        path, value = parse_override(text)
        if root is not None:  # placed alone where resolve_paths looks, then read back
            scratch = _set_at({}, path, value, text)
            resolve_paths(scratch, root)
            value = functools.reduce(operator.getitem, path, scratch)
        _set_at(data, path, value, text)
    return data


def _set_at(data: dict[str, Any], path: list[str], value: Any, text: str) -> dict[str, Any]:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise TunesetError(f"override '{text}': '{part}' is not a section")
    node[path[-1]] = value
    return data


def resolve_paths(data: dict[str, Any], root: Path) -> None:
    """Every relative path a recipe names resolves against `root`: pool, tasks (a file, or each
    task's dev/test), work_dir, model.name/embedder/adapter where such a folder exists there (else
    they are hub names or aliases), curate.judge_rows (the recipe's and each compare strategy's)
    and compare.references."""

    def fix(node: dict, key: str) -> None:
        v = node.get(key)
        if isinstance(v, str) and v and not Path(v).is_absolute() and "://" not in v:
            node[key] = str(root / v)

    for key in ("pool", "work_dir", "store"):
        fix(data, key)
    if isinstance(data.get("curate"), dict):
        fix(data["curate"], "judge_rows")
    if isinstance(data.get("tasks"), str):
        fix(data, "tasks")
    elif isinstance(data.get("tasks"), list):
        for t in data["tasks"]:
            if isinstance(t, dict):
                fix(t, "dev")
                fix(t, "test")
    if isinstance(data.get("model"), dict):
        for key in ("name", "embedder", "adapter"):  # a folder beside the recipe, else a hub name or alias
            v = data["model"].get(key)
            if isinstance(v, str) and v and not Path(v).is_absolute() and (root / v).exists():
                fix(data["model"], key)
    compare = data.get("compare") if isinstance(data.get("compare"), dict) else {}
    for st in compare.get("strategies") or []:
        if isinstance(st, dict) and isinstance(st.get("curate"), dict):
            fix(st["curate"], "judge_rows")
    refs = compare.get("references")
    if isinstance(refs, dict):
        for k in list(refs):
            fix(refs, k)


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """A recipe from YAML plus `key.path=value` overrides. Relative paths in the file resolve
    against the recipe's folder, so a recipe runs the same from anywhere; relative paths in an
    override resolve against the current directory, like any other command-line path."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = load_yaml(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as e:
            raise TunesetError(f"{path}: {_not_utf8(e)}") from None
        except OSError as e:
            raise TunesetError(f"{path}: cannot read recipe: {e}") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            what = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise TunesetError(f"{where}: not valid YAML: {what}") from None
        if not isinstance(loaded, dict):
            raise TunesetError(f"{path}: a recipe is a YAML mapping")
        data.update(loaded)
        resolve_paths(data, path.parent.absolute())
    # A path typed on the command line is relative to where it was typed.
    apply_overrides(data, overrides or [], Path.cwd())
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise TunesetError(f"{path or 'recipe'}: {error_text(Recipe, telling_error(e.errors()))}") from None
