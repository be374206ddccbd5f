"""Label quality for rows whose responses come from a small closed label set (intents, sentiment,
question types): confident learning (cleanlab) on out-of-sample class probabilities.

The class probabilities come from k-fold logistic regression on cached features of each
instruction: the embedder's vector of its varying part, the reference model's own reading of it
(`lm_features`), and for small label sets the model's log-likelihood of each label. Out-of-sample,
which confident learning needs (a model scoring its own training labels would trust them). The fit
runs twice: the second time without the rows the first flagged, as confident learning prescribes
(a class model fitted through the flips learns them). The score is the probability that the given
label is right, given the group's estimated noise rate and label count, so that scores from a
2-label and a 150-label group compare at one threshold. Rows outside every label group carry no
evidence and score 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from tuneset.data.labels import is_closed_label
from tuneset.data.text import normalise
from tuneset.errors import UnknownNameError
from tuneset.progress import ProgressLog
from tuneset.selectors.base import Selector, register, row_uniforms


class LabelQualityParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Sources whose responses are labels. None: detect them (few distinct responses, each frequent).
    sources: list[str] | None = None
    max_classes: int = Field(default=200, ge=2)
    min_rows_per_class: float = Field(default=5.0, gt=0)  # average rows per distinct label
    folds: int = Field(default=5, ge=2)
    # Inverse L2 strength of the logistic regression on standardised features. None: per label
    # group, the one of `C_GRID` with the lowest out-of-fold log-loss. A 2-label group wants a
    # strong penalty (a loose fit learns the flips), a 150-label one a weak one, and the scores of
    # all groups are compared at one threshold, so each group's probabilities must be calibrated.
    C: float | None = Field(default=None, gt=0)
    # Groups with at most this many labels also use the reference model's log-likelihood of each
    # label as features (one forward per row and label); 0 uses embeddings only.
    lm_max_classes: int = Field(default=10, ge=0)


def label_groups(rows: pl.DataFrame, params: LabelQualityParams) -> dict[str, np.ndarray]:
    """source -> row indices, for the sources treated as closed-label classification."""
    groups: dict[str, np.ndarray] = {}
    src = rows["source"].to_numpy()
    present = sorted(set(src.tolist()))
    for name in params.sources or []:
        if name not in present:
            raise UnknownNameError("label_quality source", name, present)
    labels = np.array([normalise(r) for r in rows["response"].to_list()], dtype=object)
    for s in present:
        idx = np.flatnonzero(src == s)
        if params.sources is not None:
            if s in params.sources:
                groups[s] = idx
        elif is_closed_label(labels[idx].tolist(), params.max_classes, params.min_rows_per_class):
            groups[s] = idx
    return groups


def strip_template(texts: list[str]) -> list[str]:
    """The part of each text that varies within a group: the longest common prefix and suffix (a
    shared prompt template) would otherwise dominate every embedding."""
    import os

    if len(texts) < 2:
        return texts
    pre = len(os.path.commonprefix(texts))
    suf = len(os.path.commonprefix([t[pre:][::-1] for t in texts]))
    out = [t[pre:len(t) - suf].strip() for t in texts]
    return out if all(out) else texts


def standardized(parts: list[np.ndarray]) -> np.ndarray:
    """Columns side by side, each scaled to mean 0 and sd 1, so one penalty suits every part."""
    x = np.hstack(parts).astype(np.float64)
    return (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)


C_GRID = (0.001, 0.01, 0.1, 1.0)


def calibrated_probs(x: np.ndarray, y: np.ndarray, n_classes: int, folds: int, C: float | None, order: np.ndarray,
                     trusted: np.ndarray | None = None) -> np.ndarray:
    """Out-of-fold probabilities at `C`, or at the grid's C with the lowest out-of-fold log-loss."""
    if C is not None:
        return out_of_fold_probs(x, y, n_classes, folds, C, order, trusted)
    fits = [out_of_fold_probs(x, y, n_classes, folds, c, order, trusted) for c in C_GRID]
    return min(fits, key=lambda p: -np.log(p[np.arange(len(y)), y]).mean())


def out_of_fold_probs(x: np.ndarray, y: np.ndarray, n_classes: int, folds: int, C: float, order: np.ndarray,
                      trusted: np.ndarray | None = None) -> np.ndarray:
    """Class probabilities for each row from a model that never saw that row, fitted on the
    `trusted` rows of the other folds (all of them by default). Folds are dealt in the order of
    `order`, a per-row key (`row_uniforms` of the ids), so they follow the rows, not their positions."""
    from sklearn.linear_model import LogisticRegression

    k = min(folds, len(y))
    fold = np.empty(len(y), dtype=int)
    fold[np.argsort(order, kind="stable")] = np.arange(len(y)) % k
    probs = np.full((len(y), n_classes), 1e-6)
    for f in range(k):
        train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        if trusted is not None:
            train = train[trusted[train]]
        present = np.unique(y[train])
        if len(present) < 2:  # one class to learn (it is certain), or no trusted row (uniform)
            probs[np.ix_(test, present)] = 1.0
            continue
        clf = LogisticRegression(C=C, max_iter=2000).fit(x[train], y[train])
        probs[np.ix_(test, clf.classes_)] = clf.predict_proba(x[test])
    return probs / probs.sum(1, keepdims=True)


def label_issues(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Confident learning's label issues (cleanlab), none where a group is too small to judge."""
    from cleanlab.filter import find_label_issues

    if probs.shape[1] < 2 or len(y) <= probs.shape[1]:
        return np.zeros(len(y), dtype=bool)
    return find_label_issues(y, probs, n_jobs=1)


def prob_label_right(probs: np.ndarray, y: np.ndarray, noise_rate: float) -> np.ndarray:
    """P(the given label is the true one), if a share `noise_rate` of labels were flipped to a
    uniformly drawn other label: the classifier's p(y) weighed against the chance that another
    class was flipped into y. With 150 labels a flip into one particular y is rare, so a modest
    p(y) is still probably right; with 2 labels it is not."""
    p_y = probs[np.arange(len(y)), y]
    flipped_in = (1 - p_y) * noise_rate / max(probs.shape[1] - 1, 1)
    return p_y * (1 - noise_rate) / (p_y * (1 - noise_rate) + flipped_in)


@dataclass(frozen=True)
class GroupFit:
    """Confident learning's two fits of one label group."""

    first: np.ndarray  # out-of-fold class probabilities of the first fit
    flagged: np.ndarray  # the rows the first fit flags as label issues
    probs: np.ndarray  # of the refit without the flagged rows (the first fit's where none are)

    @property
    def noise_rate(self) -> float:
        """The flagged share, at least one row's worth, so no given label is certain."""
        return max(float(self.flagged.mean()), 1 / len(self.flagged))


def fit_group(x: np.ndarray, y: np.ndarray, n_classes: int, folds: int, C: float | None, order: np.ndarray) -> GroupFit:
    """Fit, flag the label issues, refit without them: a class model fitted through the flips
    partly learns them. Every probability stays out-of-fold."""
    first = calibrated_probs(x, y, n_classes, folds, C, order)
    flagged = label_issues(y, first)
    probs = calibrated_probs(x, y, n_classes, folds, C, order, trusted=~flagged) if flagged.any() else first
    return GroupFit(first, flagged, probs)


def label_classes(responses: list[str]) -> tuple[np.ndarray, list[str]]:
    """Each row's class index (labels compared by `normalise`) and each class as written back: its
    most common spelling, ties to the first in sorted order, so every process picks the same one
    (a set's order follows PYTHONHASHSEED, and the spelling is what the LM scores)."""
    norm = [normalise(s) for s in responses]
    classes = sorted(set(norm))
    y = np.array([classes.index(v) for v in norm])
    return y, [max(sorted({s for s, v in zip(responses, norm) if v == c}), key=responses.count) for c in classes]


@register
class LabelQualitySelector(Selector):
    """Confident-learning label quality (cleanlab) of closed-label rows; low = likely mislabelled."""

    name = "label_quality"
    Params = LabelQualityParams
    uses = frozenset({"embedder", "lm", "seed"})
    row_local = False  # the class model is fitted on the whole group
    # refit without the first fit's issues; score = P(given label right) (2); folds by row id (3);
    # labels compared casefolded, invisible characters removed (4); folds from its own random stream, a
    # tie between two spellings of a label broken the same way in every process (5)
    revision = 5

    def prepare(self, rows: pl.DataFrame) -> None:
        """Nothing row-local: which rows form a label group, their template-stripped text and
        their label set are all decided over the whole pool, in the global step."""

    def needs_prepare(self, rows: pl.DataFrame) -> bool:
        return False

    def _score(self, rows: pl.DataFrame) -> pl.DataFrame:
        n = rows.height
        score, given_p, best_p = np.ones(n), np.ones(n), np.ones(n)
        issue, grouped = np.zeros(n), np.zeros(n)
        suggested = rows["response"].to_list()
        groups = label_groups(rows, self.params)
        instructions, ids = rows["instruction"].to_list(), rows["id"].to_list()
        # On a large pool the class-model fits run for minutes without a line of their own (the LM
        # passes for uncached features log themselves); one line per group says where the step is.
        progress = ProgressLog("label_quality: fit label groups", sum(map(len, groups.values())), "rows")
        for name, idx in groups.items():
            x, y, labels = self.group_inputs([instructions[i] for i in idx], [suggested[i] for i in idx])
            order = row_uniforms([ids[i] for i in idx], self.ctx.seed, "label_quality:")
            fit = fit_group(x, y, len(labels), self.params.folds, self.params.C, order)
            probs = fit.probs
            score[idx] = prob_label_right(probs, y, fit.noise_rate)
            issue[idx] = label_issues(y, probs)
            given_p[idx] = probs[np.arange(len(y)), y]
            best = probs.argmax(1)
            best_p[idx] = probs.max(1)
            for j, i in enumerate(idx):
                suggested[i] = labels[best[j]]
            grouped[idx] = 1
            progress.update(progress.done + len(idx), f"group {name} ({len(labels)} labels)")
        return pl.DataFrame({
            "id": rows["id"], "score": score, "label_issue": issue, "given_prob": given_p,
            "suggested_prob": best_p, "suggested": suggested, "in_label_group": grouped,
        })

    def group_inputs(self, texts: list[str], responses: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """One label group's standardised features, each row's class index, and each class as
        written back (its most common original spelling)."""
        y, labels = label_classes(responses)
        parts = [self.ctx.embeddings(strip_template(texts)), self.ctx.lm_features(texts)]
        if len(labels) <= self.params.lm_max_classes:
            parts.append(self._label_logprobs(texts, labels))
        return standardized(parts), y, labels

    def _label_logprobs(self, instructions: list[str], labels: list[str]) -> np.ndarray:
        """log p(label | instruction) under the reference model, normalised over the labels."""
        n, k = len(instructions), len(labels)
        pairs = pl.DataFrame({
            "id": [f"{i}:{j}" for i in range(n) for j in range(k)],
            "instruction": [x for x in instructions for _ in labels],
            "response": labels * n,
        })
        nll = self.ctx.response_losses(pairs)["nll_sum"].to_numpy().reshape(n, k)
        logp = -nll
        return logp - np.logaddexp.reduce(logp, axis=1, keepdims=True)
