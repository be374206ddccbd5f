"""Paired statistics: strategies are scored on the same test rows, so compare them row by row,
and trained on several seeds, whose spread belongs in every interval."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SeedAwareDiff:
    """A difference between two arms whose interval covers both sources of chance: which test rows
    were drawn and which seeds trained the models. `mdd` is the smallest true difference this
    design detects with 80% power at 5% two-sided."""

    mean: float
    lo: float
    hi: float
    se: float
    mdd: float
    seed_aware: bool  # False when an arm has one seed: its seed variance is unknown, the CI too narrow

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}]" + ("" if self.seed_aware else "*")


def seed_aware_diff(a: np.ndarray, b: np.ndarray, alpha: float = 0.05) -> SeedAwareDiff:
    """Mean of a - b for (seeds, examples) score matrices on the same examples, with a t interval
    over three variance parts: the test rows (paired across arms, each row's seed-averaged
    difference) and each arm's seed effect, estimated from its seed means net of the row noise
    they carry, which the first part already counts. Degrees of freedom by Welch-Satterthwaite,
    so with 2 or 3 seeds a seed-dominated difference gets the wide interval it needs.

    Why not a bootstrap over seeds and rows (used through stop 33): with 2-3 seeds it shrinks the
    seed part by (k-1)/k and reads it with a normal quantile, covering 83-89% at a nominal 95%,
    and it counts the seed-by-row noise twice, covering 98-99% for accuracy scores
    (benchmarks/interval_coverage.py)."""
    from scipy.stats import t as student_t

    a, b = np.atleast_2d(a).astype(float), np.atleast_2d(b).astype(float)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired arrays differ in length: {a.shape[1]} vs {b.shape[1]} examples")
    d = a.mean(0) - b.mean(0)
    n = len(d)
    parts = [(d.var(ddof=1) / n if n > 1 else 0.0, n - 1), _seed_part(a), _seed_part(b)]
    var = sum(v for v, _ in parts)
    se = float(np.sqrt(var))
    df = var**2 / sum(v**2 / k for v, k in parts if v > 0 and k > 0) if var > 0 else np.inf
    q = float(student_t.ppf(1 - alpha / 2, df))
    half = q * se
    mdd = (q + float(student_t.ppf(0.8, df))) * se
    return SeedAwareDiff(float(d.mean()), float(d.mean()) - half, float(d.mean()) + half, se, mdd,
                         a.shape[0] > 1 and b.shape[0] > 1)


def _seed_part(m: np.ndarray) -> tuple[float, float]:
    """(variance of the arm's mean from its seed effect, its degrees of freedom): the spread of the
    seed means less the row-by-seed noise in them (the residual of rows and seeds, over n). The
    degrees of freedom of that difference of mean squares are Satterthwaite's, fewer than k - 1
    where the noise subtracted is large: with k - 1, two seeds covered 92-93% at a nominal 95%."""
    seeds, n = m.shape
    if seeds < 2:
        return 0.0, 0
    seed_means = m.mean(1)
    resid = m - m.mean(0, keepdims=True) - seed_means[:, None] + m.mean()
    noise = float((resid**2).sum()) / ((seeds - 1) * max(n - 1, 1))
    between = float(seed_means.var(ddof=1))
    v = max(0.0, between - noise / n) / seeds
    if v == 0.0:
        return 0.0, 0
    terms = (between / seeds) ** 2 / (seeds - 1) + (noise / (n * seeds)) ** 2 / ((seeds - 1) * max(n - 1, 1))
    return v, v**2 / terms
