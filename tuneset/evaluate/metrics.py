"""Per-example evaluation: every metric returns one row per test example, so strategies can be
compared pairwise on the same rows rather than by their means alone.

Metrics are a registry (name -> function + direction), so a new metric is one module with one
`@register_metric` function. `evaluate_task` orients every `score` so that higher is better:
the sweep, the leaderboard and the paired statistics never need to ask a metric its direction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import polars as pl

from tuneset.data.text import answers_match
from tuneset.errors import TunesetError
from tuneset.models.lm import encode, format_prompts, generate_greedy, response_nll, shared_prompt_nll
from tuneset.models.loading import LoadedLM
from tuneset.progress import ProgressLog
from tuneset.recipe import TaskSpec
from tuneset.registry import Registry

log = logging.getLogger("tuneset.evaluate")


_SAID: set[tuple[str, int, int]] = set()  # (task, max_new_tokens, rows) warned about in this process


@dataclass(frozen=True)
class EvalInput:
    """What a metric reads: the model, the task, its rows and their prompts in the fine-tune's format."""

    lm: LoadedLM
    task: TaskSpec
    rows: pl.DataFrame
    prompts: list[str]
    sep: str  # text between prompt and response (format_prompts)
    max_length: int
    max_batch_tokens: int
    max_new_tokens: int

    def gold_loss(self) -> np.ndarray:
        """Per-token NLL of each row's gold response."""
        tok = self.lm.tokenizer
        enc = encode(tok, self.prompts, self.rows["response"].to_list(), self.max_length, sep=self.sep)
        s, n, _ = response_nll(self.lm.model, enc, tok.pad_token_id, self.max_batch_tokens,
                               ProgressLog(f"evaluate {self.task.name}: gold loss", len(enc), "rows"))
        return s / np.maximum(n, 1)

    def generate(self) -> list[str]:
        """Greedy answers of at most `max_new_tokens`; a gold answer longer than that cannot be
        generated whole, which is said, not silently scored 0."""
        tok = self.lm.tokenizer
        # as trained: the format's separator before the answer (plain text's space changes its tokens)
        lengths = [len(ids) for ids in tok([self.sep + r for r in self.rows["response"].to_list()],
                                           add_special_tokens=False)["input_ids"]]
        said = (self.task.name, self.max_new_tokens, len(lengths))
        if (over := sum(n > self.max_new_tokens for n in lengths)) and said not in _SAID:  # once, not per arm and seed
            _SAID.add(said)
            log.warning("evaluate %s: %d of %d gold answers are longer than evaluate.max_new_tokens=%d tokens (the "
                        "longest %d) and cannot be generated whole; raise it", self.task.name, over,
                        len(lengths), self.max_new_tokens, max(lengths))
        return generate_greedy(self.lm.model, self.lm.tokenizer, self.prompts, self.max_new_tokens,
                               self.max_batch_tokens, self.max_length, what=f"evaluate {self.task.name}: generate")


class Scored(NamedTuple):
    """One value per row: the metric in its own direction, the gold response's loss, the prediction."""

    score: np.ndarray
    loss: np.ndarray
    prediction: list[str | None]  # None where the metric gives no answer (target_loss)


MetricFn = Callable[[EvalInput], Scored]


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn
    higher_is_better: bool
    revision: int = 1  # bumped when the function's output changes, so cached evaluations are redone
    # The range every per-row score lies in, where it has one (accuracy: 0 to 1): a difference
    # between two arms' means cannot leave +-(hi - lo), so its interval is cut there.
    bounds: tuple[float, float] | None = None
    # It scores a row's answer options, the task's `choices` or else the row's own: every row read
    # for it must have them, which the recipe check sees before any work.
    needs_choices: bool = False


def _check_metric(metric: Metric) -> None:
    if not isinstance(metric.higher_is_better, bool):
        raise ValueError(f"metric '{metric.name}': higher_is_better must be True or False, got {metric.higher_is_better!r}")
    if type(metric.revision) is not int or metric.revision < 1:
        raise ValueError(f"metric '{metric.name}': revision must be a positive int, got {metric.revision!r}")
    if metric.bounds is not None and not (len(metric.bounds) == 2 and metric.bounds[0] < metric.bounds[1]):
        raise ValueError(f"metric '{metric.name}': bounds must be (low, high) with low < high, got {metric.bounds!r}")
    if not callable(metric.fn):
        raise ValueError(f"metric '{metric.name}': {metric.fn!r} is not callable")


METRICS: Registry[Metric] = Registry("metric", _check_metric)
metric_names, get_metric = METRICS.names, METRICS.get


def metric_key(name: str) -> tuple[str] | tuple[str, int]:
    """What an evaluation's cache key holds of its metric: the name, and the revision past the first."""
    m = get_metric(name)
    return (m.name,) if m.revision == 1 else (m.name, m.revision)


def register_metric(name: str, *, higher_is_better: bool, revision: int = 1, bounds: tuple[float, float] | None = None,
                    needs_choices: bool = False) -> Callable[[MetricFn], MetricFn]:
    """Register `fn(EvalInput) -> Scored` as metric `name`; its direction must be stated."""
    return lambda fn: METRICS.add(Metric(name, fn, higher_is_better, revision, bounds, needs_choices)).fn


def rows_without_choices(task: TaskSpec, rows: pl.DataFrame) -> list[str]:
    """The ids of rows a metric that needs choices cannot score: none where the task fixes them."""
    if task.choices or not get_metric(task.metric).needs_choices:
        return []
    return rows.filter(pl.col("choices").is_null() | (pl.col("choices").list.len() == 0))["id"].to_list()


def evaluate_task(lm: LoadedLM, task: TaskSpec, rows: pl.DataFrame, max_length: int = 256,
                  max_batch_tokens: int = 4096, max_new_tokens: int = 16, prompt_format: str = "plain") -> pl.DataFrame:
    """Columns: id, score (oriented: higher is better), loss (gold response NLL/token), prediction.
    `prompt_format` must be the one the model was fine-tuned with (`TrainResult.prompt_format`)."""
    metric = get_metric(task.metric)
    prompts, sep = format_prompts(lm.tokenizer, rows["instruction"].to_list(), prompt_format)
    out = metric.fn(EvalInput(lm, task, rows, prompts, sep, max_length, max_batch_tokens, max_new_tokens))
    score, loss = np.asarray(out.score, dtype=np.float64), np.asarray(out.loss, dtype=np.float64)
    if not (len(score) == len(loss) == len(out.prediction) == rows.height):
        raise TunesetError(f"metric '{metric.name}' returned {len(score)} scores, {len(loss)} losses and "
                           f"{len(out.prediction)} predictions for {rows.height} rows")
    if not np.isfinite(score).all():
        raise TunesetError(f"metric '{metric.name}': non-finite score for row '{rows['id'][int(np.argmin(np.isfinite(score)))]}'")
    return pl.DataFrame({"id": rows["id"], "score": score if metric.higher_is_better else -score,
                         "loss": loss, "prediction": pl.Series(out.prediction, dtype=pl.String)})


def _choices(task: TaskSpec, rows: pl.DataFrame) -> list[list[str]]:
    """Each row's options. Rows read through the flows were checked at load (an answer among its
    choices) and by the recipe check (`rows_without_choices`); rows passed in directly are checked
    here, by id, as no file line is known."""
    if missing := rows_without_choices(task, rows):
        raise TunesetError(f"task '{task.name}' ({task.metric}): {len(missing)} of its rows have no choices (first: id "
                           f"'{missing[0]}'); give each row its `choices`, or the task its `choices`")
    out = [task.choices] * rows.height if task.choices else rows["choices"].to_list()
    for c, r, i in zip(out, rows["response"].to_list(), rows["id"].to_list()):
        if r not in c:
            raise TunesetError(f"task '{task.name}': row '{i}': its answer {r!r} is not one of its choices")
    return out


@register_metric("choice_accuracy", higher_is_better=True, bounds=(0.0, 1.0), needs_choices=True)
def choice_accuracy(x: EvalInput) -> Scored:
    """1 when the choice with the highest summed log-likelihood is the gold one (a tie goes to the
    choice listed first); the gold response is one of the choices, so its loss comes from the same
    pass."""
    choices = _choices(x.task, x.rows)
    tok, gold = x.lm.tokenizer, x.rows["response"].to_list()
    groups = [encode(tok, [p] * len(cs), cs, x.max_length, sep=x.sep) for p, cs in zip(x.prompts, choices)]
    c_sum, c_n = shared_prompt_nll(x.lm.model, groups, tok.pad_token_id, x.max_batch_tokens,
                                   what=f"evaluate {x.task.name}: choices")
    preds, loss, k = [], np.zeros(x.rows.height), 0
    for row, (cs, g) in enumerate(zip(choices, gold)):
        preds.append(cs[int(np.argmin(c_sum[k:k + len(cs)]))])
        j = k + cs.index(g)
        loss[row] = c_sum[j] / max(c_n[j], 1)
        k += len(cs)
    return Scored(np.array([float(p == g) for p, g in zip(preds, gold)]), loss, preds)


# 2: an article-only answer ("A") is kept, NFKC, the generation cut to the gold's line count
# 3: a minus sign and a decimal point survive normalisation; a gold of punctuation alone compares as written
@register_metric("exact_match", higher_is_better=True, revision=3, bounds=(0.0, 1.0))
def exact_match(x: EvalInput) -> Scored:
    """1 when the greedy answer equals the gold one after answer normalisation (`answers_match`)."""
    loss, preds = x.gold_loss(), x.generate()
    gold = x.rows["response"].to_list()
    return Scored(np.array([float(answers_match(p, g)) for p, g in zip(preds, gold)]), loss, preds)


@register_metric("target_loss", higher_is_better=False, revision=2)  # 2: no answer is None, not ""
def target_loss(x: EvalInput) -> Scored:
    """The gold response's per-token loss itself (reported as score = -loss)."""
    loss = x.gold_loss()
    return Scored(loss, loss, [None] * x.rows.height)
