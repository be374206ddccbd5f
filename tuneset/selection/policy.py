"""Selection policies: turn score columns into a chosen subset.

Columns are rank-normalised (so perplexity in the hundreds and cosine in [0, 1] weigh alike),
oriented by each selector's direction, weighted, then cut by threshold, band, budget and quotas.
"""

from __future__ import annotations

import hashlib
import logging
import math
from fractions import Fraction

import numpy as np
import polars as pl

from tuneset.errors import TunesetError, UnknownNameError
from tuneset.recipe import Budget, PolicyConfig

log = logging.getLogger("tuneset.select")


def budget_count(budget: Budget | None, n: int) -> int:
    """Rows a budget stands for among `n`; a percent rounds half to even, exactly: in floats,
    64.4% of 125 (80.5) came to 81 and 64.6% of 250 (161.5) to 161."""
    if budget is None:
        return n
    if isinstance(budget, str):
        return min(n, max(1, round(Fraction(budget.rstrip("%")) * n / 100)))
    return min(n, budget)


def rank_normalise(values: np.ndarray, descending: bool = False) -> np.ndarray:
    """Average-rank percentile in (0, 1], the highest value 1 (the lowest with `descending`); ties
    share a rank so equal scores weigh equally. Exact: ranked, not flipped as 1 - r + 1/n, and
    divided in numpy (polars' division came to 0.30000000000000004 for 3/10); a hair off cost a
    row at a threshold or a band's edge."""
    s = pl.Series(values)
    return s.rank("average", descending=descending).to_numpy() / len(s)


def combined_score(scores: pl.DataFrame, weights: dict[str, float], directions: dict[str, bool]) -> np.ndarray:
    """Weighted sum of rank-normalised columns, each oriented so that higher is preferred."""
    if not weights:
        raise TunesetError("policy weights are empty; name at least one score column")
    total = np.zeros(scores.height)
    ordered = sorted(weights.items())  # as the selection's key reads them: their order must not move a float
    numeric = [c for c, t in scores.schema.items() if c != "id" and (t.is_numeric() or t == pl.Boolean)]
    for key, w in ordered:
        col, flip = (key[1:], True) if key.startswith("-") else (key, False)
        if col not in scores.columns:
            raise UnknownNameError("score column", col, numeric)
        if col not in numeric:  # text ranks alphabetically: a selection by the letters of a label
            raise TunesetError(f"weights: '{col}' holds {scores.schema[col]}, not numbers; valid: {', '.join(numeric)}")
        values = scores[col].cast(pl.Float64).fill_null(np.nan).to_numpy()
        if not np.isfinite(values).all():  # polars ranks NaN above every number: it would be picked first
            raise TunesetError(f"weights: '{col}' has a missing or non-finite value for row "
                               f"'{scores['id'][int(np.argmin(np.isfinite(values)))]}'")
        # A component (`perplexity.nll`) reads in its selector's direction, as the selector's own score.
        higher = directions.get(col, directions.get(col.split(".")[0], True)) != flip
        total += w * rank_normalise(values, descending=not higher)
    return total / sum(w for _, w in ordered)


def _tiebreak(ids: list[str]) -> np.ndarray:
    return np.array([int.from_bytes(hashlib.sha256(i.encode()).digest()[:6], "big") for i in ids], dtype=np.float64)


COSINE_SLACK = 1e-5  # float32 inner products of unit vectors come out a little over 1: an identical copy is not "> 1.0"


class DiversityGate:
    """DEITA's "quality first, then diverse": a row is accepted only if its cosine to every row
    accepted before it is at most `max_similarity`; rejected rows record the row they resemble."""

    def __init__(self, embeddings: np.ndarray, max_similarity: float, ids: list[str]):
        import faiss

        self.x = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.tau = max_similarity
        self.ids = ids
        self.index = faiss.IndexFlatIP(self.x.shape[1])
        self.members: list[int] = []
        self.rejected: dict[int, str] = {}

    def __call__(self, i: int) -> bool:
        if self.members:
            sim, nn = self.index.search(self.x[i:i + 1], 1)
            if sim[0, 0] > self.tau + COSINE_SLACK:
                self.rejected[i] = f"not selected: cosine {sim[0, 0]:.3f} to selected {self.ids[self.members[nn[0, 0]]]} > max_similarity {self.tau}"
                return False
        self.index.add(self.x[i:i + 1])
        self.members.append(i)
        return True


def _nearest_columns(scores: pl.DataFrame, policy: PolicyConfig) -> list[str]:
    names = dict.fromkeys(w.lstrip("-").split(".")[0] for w in policy.weights)
    return [f"{n}.nearest_dev" for n in names if f"{n}.nearest_dev" in scores.columns]


def apply_policy(
    scores: pl.DataFrame,
    policy: PolicyConfig,
    directions: dict[str, bool],
    groups: pl.Series | None = None,
    embeddings: np.ndarray | None = None,
    dev_sizes: dict[str, int] | None = None,
) -> pl.DataFrame:
    """Return id, combined, rank, selected, reason for every candidate row (none left out).
    `embeddings` (row-aligned) are needed only for `max_similarity`; `dev_sizes` (dev rows per
    target task) only for `targets: dev_size`."""
    ids = scores["id"].to_list()
    n = len(ids)
    comb = combined_score(scores, policy.weights, directions)
    order = np.lexsort((_tiebreak(ids), -comb))  # best first, ties broken by a stable id hash
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    eligible = np.ones(n, dtype=bool)
    reason = np.full(n, "", dtype=object)
    if policy.threshold is not None:
        below = comb < policy.threshold
        eligible &= ~below
        reason[below] = f"combined score below threshold {policy.threshold}"
    if policy.band is not None:
        q = rank_normalise(comb)  # in (0, 1]: a band (lo, hi] holds (hi - lo) of the rows, and two bands meet without overlap
        lo, hi = policy.band
        out = (q <= lo) | (q > hi)
        reason[out & eligible] = f"outside quantile band ({lo}, {hi}]"
        eligible &= ~out
    k = budget_count(policy.budget, n)
    if isinstance(policy.budget, int) and policy.budget > n:
        log.warning("budget %d is more than the %d candidate rows: all of them are within it", policy.budget, n)
    gate = None
    if policy.max_similarity is not None:
        if embeddings is None or len(embeddings) != n:
            raise TunesetError("policy max_similarity needs one embedding per candidate row")
        gate = DiversityGate(embeddings, policy.max_similarity, ids)
    accept = gate or (lambda i: True)
    task_of: dict[int, tuple[str, int]] = {}  # a row picked for a target task: that task, and the row's rank for it
    quota = None
    if policy.targets is not None:
        if policy.quota_by is not None:
            raise TunesetError("policy targets and quota_by both split the budget; use one")
        chosen, task_of = _by_targets(scores, policy, directions, eligible, k, accept, dev_sizes or {})
    elif policy.quota_by is None:
        chosen = []
        for i in order:
            if len(chosen) == k:
                break
            if eligible[i] and accept(i):
                chosen.append(i)
    else:
        if groups is None:
            raise TunesetError(f"policy quota_by='{policy.quota_by}' needs that column in the rows")
        chosen, quota = _with_quotas(order, eligible, groups.to_list(), policy, k, accept)
    selected = np.zeros(n, dtype=bool)
    selected[chosen] = True
    if isinstance(policy.quotas, dict) and policy.quota_by:
        budget_txt = f"quotas by {policy.quota_by} {quota}"  # as applied: scaled down where they outgrew the budget
    else:
        budget_txt = f"budget {k}" + (f" with quotas by {policy.quota_by}" if policy.quota_by else "")
    if policy.targets is not None:
        budget_txt = f"budget {k} split over targets ({policy.targets})"
    reason[selected] = [f"selected (rank {task_of[i][1]} for {task_of[i][0]}, {budget_txt})" if i in task_of
                        else f"selected (rank {rank[i]}, {budget_txt})" for i in np.flatnonzero(selected)]
    for col in _nearest_columns(scores, policy):  # similarity selectors say which dev row a pick resembles
        near = scores[col].to_list()
        for i in np.flatnonzero(selected):
            reason[i] += f"; {col.split('.')[0]}: nearest dev row {near[i]}"
    left = ~selected & eligible
    reason[left] = f"not selected: outside {budget_txt}"
    for i, why in (gate.rejected if gate else {}).items():
        reason[i] = why
    return pl.DataFrame({"id": ids, "combined": comb, "rank": rank, "selected": selected, "reason": reason.tolist()})


def per_task_weights(columns: list[str], weights: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per target task, the weights with each selector column that has per-task columns
    (`<col>.vs_<task>`) replaced by that task's column; other columns (quality, say) stay."""
    tasks = sorted({c.split(".vs_", 1)[1] for c in columns for k in weights
                    if c.startswith(f"{k.lstrip('-')}.vs_")})
    if not tasks:
        raise TunesetError(
            f"policy targets needs a weighted selector with per-task columns (<selector>.vs_<task>: less, "
            f"embedding_knn, got); weights name {sorted(weights)}")
    out = {}
    for t in tasks:
        w = {}
        for k, v in weights.items():
            sign, col = ("-", k[1:]) if k.startswith("-") else ("", k)
            w[sign + (f"{col}.vs_{t}" if f"{col}.vs_{t}" in columns else col)] = v
        out[t] = w
    return out


def _by_targets(scores: pl.DataFrame, policy: PolicyConfig, directions: dict[str, bool], eligible: np.ndarray,
                k: int, accept, dev_sizes: dict[str, int]) -> tuple[list[int], dict[int, tuple[str, int]]]:
    """Split `k` across target tasks and fill each share best-first by the task's own ranking. The
    task furthest below its share picks next, so a row two tasks want is taken once, by the first;
    a task that runs out of eligible rows leaves its share to the others. Returns the picks and,
    per pick, its task and its rank in that task's ranking."""
    weights = per_task_weights(scores.columns, policy.weights)
    if isinstance(policy.targets, dict):
        unknown = set(policy.targets) - set(weights)
        if unknown:
            raise UnknownNameError("target task in policy targets", sorted(unknown)[0], sorted(weights))
        shares = {t: float(policy.targets.get(t, 0.0)) for t in weights}
    elif policy.targets == "dev_size":
        missing = set(weights) - set(dev_sizes)
        if missing:
            raise TunesetError(f"policy targets: dev_size needs the dev row count of {sorted(missing)}")
        shares = {t: float(dev_sizes[t]) for t in weights}
    else:
        shares = {t: 1.0 for t in weights}
    quota = _largest_remainder({t: s for t, s in shares.items() if s > 0}, k)
    ids = scores["id"].to_list()
    queues = {}
    for t in quota:
        comb = combined_score(scores, weights[t], directions)
        queues[t] = enumerate(np.lexsort((_tiebreak(ids), -comb)).tolist(), start=1)
    chosen: list[int] = []
    task_of: dict[int, tuple[str, int]] = {}
    taken = {t: 0 for t in quota}
    open_tasks = [t for t in quota if quota[t] > 0]
    while open_tasks and len(chosen) < k:
        t = min(open_tasks, key=lambda t: (taken[t] / quota[t], t))
        for r, i in queues[t]:
            if eligible[i] and i not in task_of and accept(i):
                chosen.append(i)
                task_of[i] = (t, r)
                taken[t] += 1
                break
        else:
            open_tasks.remove(t)  # out of eligible rows: the other tasks fill its share
    return chosen, task_of


def _with_quotas(order: np.ndarray, eligible: np.ndarray, groups: list[str], policy: PolicyConfig, k: int,
                 accept=lambda i: True) -> tuple[list[int], dict[str, int]]:
    """Per-group quotas (proportional, equal, or explicit), best-first inside each group; quota a
    group cannot fill goes to the best remaining rows overall, so the budget is still spent.
    Explicit quotas that ask for more rows than the budget are scaled down to it: the budget holds.
    Returns the picks and the quotas applied."""
    names = sorted({groups[i] for i in range(len(groups)) if eligible[i]})
    sizes = {g: sum(1 for i in range(len(groups)) if eligible[i] and groups[i] == g) for g in names}
    if isinstance(policy.quotas, dict):
        unknown = set(policy.quotas) - set(groups)  # a group whose rows the threshold or band all cut still exists
        if unknown:
            raise UnknownNameError(f"{policy.quota_by} in quotas", sorted(unknown)[0], sorted(set(groups)))
        asked = {g: budget_count(policy.quotas[g], sizes[g]) if policy.quotas.get(g) else 0 for g in names}
        quota = asked
        if sum(asked.values()) > k:
            log.warning("quotas ask for %d rows, the budget allows %d: each group's quota is scaled down to fit "
                        "(set select.budget to take them all)", sum(asked.values()), k)
            quota = _largest_remainder({g: float(q) for g, q in asked.items()}, k)
    elif policy.quotas == "equal":
        quota = _largest_remainder({g: 1.0 for g in names}, k)
    else:
        quota = _largest_remainder({g: float(sizes[g]) for g in names}, k)
    chosen: list[int] = []
    taken = {g: 0 for g in names}
    for i in order:
        if eligible[i] and taken[groups[i]] < quota[groups[i]] and accept(i):
            chosen.append(i)
            taken[groups[i]] += 1
    if len(chosen) < k and not isinstance(policy.quotas, dict):
        picked = set(chosen)
        for i in order:
            if len(chosen) == k:
                break
            if eligible[i] and i not in picked and accept(i):
                chosen.append(i)
    return chosen[:k], quota


def _largest_remainder(shares: dict[str, float], k: int) -> dict[str, int]:
    """`k` split in proportion to `shares`, the rows left over going to the largest remainders,
    equal remainders by name. Exact fractions: in floats, 12 * 42/148 and 12 * 5/148 kept equal
    remainders apart by rounding noise, and the name rule never ran."""
    exact = {g: Fraction(s) for g, s in shares.items()}
    total = sum(exact.values())
    raw = {g: k * s / total for g, s in exact.items()}
    out = {g: math.floor(v) for g, v in raw.items()}
    for g in sorted(raw, key=lambda g: (out[g] - raw[g], g))[: k - sum(out.values())]:
        out[g] += 1
    return out
