"""How often the leaderboard's 95% interval for a difference between two arms covers the true
difference, on simulated scores where the truth is known: the t interval of `seed_aware_diff`
against the seed-and-row bootstrap it replaced at stop 34.

    python benchmarks/interval_coverage.py [--reps 2000]

Scores per arm k, seed s, test row i (rows shared by the arms):
    x[k, s, i] = mu_k + row_i + arm_row[k, i] + seed[k, s] + noise[k, s, i]
with a deterministic arm (no fine-tune) having one seed and no seed effect. Accuracy scenarios
draw 0/1 scores from per-row, per-seed probabilities. Writes results/interval_coverage.json.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuneset.data.io import write_json
from tuneset.evaluate.stats import seed_aware_diff
from tuneset.progress import ProgressLog

OUT = Path(__file__).parent / "results" / "interval_coverage.json"
DELTA = 0.05


def bootstrap_until_stop33(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The interval the leaderboard used until stop 34: each replicate resamples the test rows
    (paired) and, per arm, its seeds; percentile bounds. Kept here only as the baseline."""
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    rows = rng.integers(0, n, size=(n_boot, n))
    counts = np.zeros((n_boot, n))
    np.add.at(counts, (np.arange(n_boot)[:, None], rows), 1.0)
    ra, rb = counts @ a.T / n, counts @ b.T / n  # (n_boot, seeds): each seed's mean over the drawn rows
    ma = np.take_along_axis(ra, rng.integers(0, a.shape[0], size=(n_boot, a.shape[0])), axis=1).mean(1)
    mb = np.take_along_axis(rb, rng.integers(0, b.shape[0], size=(n_boot, b.shape[0])), axis=1).mean(1)
    lo, hi = np.quantile(ma - mb, [0.025, 0.975])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Scenario:
    name: str
    seeds_a: int
    seeds_b: int  # 1 with seed_sd_b 0: the deterministic no-fine-tune arm
    seed_sd: float  # each fine-tuned arm's seed effect
    seed_sd_b: float
    accuracy: bool = False
    rows: int = 150

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        n = self.rows
        if self.accuracy:
            base = rng.uniform(0.2, 0.9, n)
            pa = np.clip(base + DELTA + rng.normal(0, 0.1, n) + rng.normal(0, self.seed_sd, (self.seeds_a, 1)), 0, 1)
            pb = np.clip(base + rng.normal(0, 0.1, n) + rng.normal(0, self.seed_sd_b, (self.seeds_b, 1)), 0, 1)
            return (rng.random(pa.shape) < pa).astype(float), (rng.random(pb.shape) < pb).astype(float)
        row = rng.normal(0, 0.3, n)
        a = DELTA + row + rng.normal(0, 0.1, n) + rng.normal(0, self.seed_sd, (self.seeds_a, 1)) + rng.normal(0, 0.2, (self.seeds_a, n))
        b = row + rng.normal(0, 0.1, n) + rng.normal(0, self.seed_sd_b, (self.seeds_b, 1)) + rng.normal(0, 0.2, (self.seeds_b, n))
        return a, b

    def truth(self) -> float:
        """The expected difference; for clipped accuracy, from a large draw."""
        if not self.accuracy:
            return DELTA
        rng = np.random.default_rng(999)
        big = Scenario(self.name, 50, 50, self.seed_sd, self.seed_sd_b, True, self.rows)
        return float(np.mean([np.subtract(*(m.mean() for m in big.draw(rng))) for _ in range(400)]))


SCENARIOS = [
    Scenario("rows only, 3 vs 3 seeds", 3, 3, 0.0, 0.0),
    Scenario("seed effects, 2 vs 2 seeds", 2, 2, 0.05, 0.05),
    Scenario("seed effects, 3 vs 3 seeds", 3, 3, 0.05, 0.05),
    Scenario("seed effects, 5 vs 5 seeds", 5, 5, 0.05, 0.05),
    Scenario("seed effects, 5 seeds vs no fine-tune", 5, 1, 0.05, 0.0),
    Scenario("accuracy, 3 vs 3 seeds, seed sd 0.03", 3, 3, 0.03, 0.03, accuracy=True),
    Scenario("accuracy, 5 vs 5 seeds, no seed effect", 5, 5, 0.0, 0.0, accuracy=True),
    Scenario("accuracy, 5 seeds vs no fine-tune, seed sd 0.03", 5, 1, 0.03, 0.0, accuracy=True),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=2000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # progress lines: scenario k/n, rate, ETA
    progress = ProgressLog(f"interval coverage, {args.reps} replications a scenario", len(SCENARIOS), "scenarios", every=0)
    results = []
    print("| scenario | t interval (now): coverage, mean width | bootstrap (until stop 33): coverage, mean width |\n|---|---|---|")
    for sc in SCENARIOS:
        t0, truth, rng = time.perf_counter(), sc.truth(), np.random.default_rng(12345)
        hits = {"t": 0, "bootstrap": 0}
        widths: dict[str, list[float]] = {"t": [], "bootstrap": []}
        for rep in range(args.reps):
            a, b = sc.draw(rng)
            d = seed_aware_diff(a, b)
            lo, hi = bootstrap_until_stop33(a, b, seed=rep)
            for name, (x, y) in (("t", (d.lo, d.hi)), ("bootstrap", (lo, hi))):
                hits[name] += x <= truth <= y
                widths[name].append(y - x)
        row = {"scenario": sc.name, "reps": args.reps, "truth": truth, "seconds": time.perf_counter() - t0,
               **{f"{k}_coverage": hits[k] / args.reps for k in hits}, **{f"{k}_width": float(np.mean(v)) for k, v in widths.items()}}
        results.append(row)
        print(f"| {sc.name} | {row['t_coverage']:.3f}, {row['t_width']:.3f} | {row['bootstrap_coverage']:.3f}, "
              f"{row['bootstrap_width']:.3f} |", flush=True)
        progress.update(len(results), sc.name)
    write_json(OUT, {"delta": DELTA, "nominal": 0.95, "results": results})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
