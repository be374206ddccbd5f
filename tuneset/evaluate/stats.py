"""Paired statistics: strategies are scored on the same test rows, so compare them row by row."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedDiff:
    mean: float
    lo: float
    hi: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}]"


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> PairedDiff:
    """Mean of a - b with a percentile bootstrap CI over examples (rows resampled in pairs).

    `a` and `b` may be (seeds, examples): seeds are averaged per example first, so the CI
    reflects test-set sampling of the seed-averaged model, not a single lucky seed."""
    a, b = np.atleast_2d(a).mean(0), np.atleast_2d(b).mean(0)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in length: {a.shape} vs {b.shape}")
    d = a - b
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    boots = d[idx].mean(1)
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return PairedDiff(mean=float(d.mean()), lo=float(lo), hi=float(hi), n=len(d))


@dataclass(frozen=True)
class SeedAwareDiff:
    """A difference between two arms whose interval covers both sources of chance: which test rows
    were drawn and which seeds trained the models. `mdd` is the smallest true difference this
    design detects with 80% power at 5% two-sided (2.8 standard errors)."""

    mean: float
    lo: float
    hi: float
    se: float
    seed_aware: bool  # False when an arm has one seed: its seed variance is unknown, the CI too narrow

    @property
    def mdd(self) -> float:
        return 2.8 * self.se

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}]" + ("" if self.seed_aware else "*")


def seed_row_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> SeedAwareDiff:
    """Mean of a - b for (seeds, examples) score matrices on the same examples: each replicate
    resamples the test rows (paired across arms) and, independently per arm, its seeds."""
    a, b = np.atleast_2d(a).astype(float), np.atleast_2d(b).astype(float)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired arrays differ in length: {a.shape[1]} vs {b.shape[1]} examples")
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    rows = rng.integers(0, n, size=(n_boot, n))
    sa = rng.integers(0, a.shape[0], size=(n_boot, a.shape[0]))
    sb = rng.integers(0, b.shape[0], size=(n_boot, b.shape[0]))
    # Mean over resampled seeds of each seed's mean over the resampled rows.
    ma = np.take_along_axis(_row_means(a, rows), sa, axis=1).mean(1)
    mb = np.take_along_axis(_row_means(b, rows), sb, axis=1).mean(1)
    boots = ma - mb
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return SeedAwareDiff(float(a.mean() - b.mean()), float(lo), float(hi), float(boots.std(ddof=1)),
                         a.shape[0] > 1 and b.shape[0] > 1)


def _row_means(m: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(n_boot, seeds): each seed's mean score over each replicate's resampled rows."""
    counts = np.zeros((rows.shape[0], m.shape[1]))
    np.add.at(counts, (np.arange(rows.shape[0])[:, None], rows), 1.0)
    return counts @ m.T / rows.shape[1]
