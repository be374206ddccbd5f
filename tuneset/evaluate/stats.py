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
