"""Distribution-matching selectors: pick candidates that move the training distribution toward the
targets'. `got` (GOT-D) reads the dual potentials of an entropic optimal-transport problem between
candidate and target embeddings; `dsir` weights rows by hashed n-gram importance ratios.

Both treat the targets as one distribution: the mixture of every task's dev rows, tasks weighted
equally, so a 77-row task does not drown a 20-row one.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import torch
from pydantic import BaseModel, ConfigDict, Field

from tuneset.selectors.base import MapReduceSelector, Selector, contiguous_parts, register, row_text, row_uniforms
from tuneset.selectors.context import ScoringContext
from tuneset.selectors.embedding import nearest_dev


def target_mixture(ctx: ScoringContext) -> tuple[list[str], np.ndarray]:
    """Target texts and their weights (each task sums to 1/n_tasks)."""
    texts: list[str] = []
    weights: list[float] = []
    tasks = sorted(ctx.targets.items())
    for _, dev in tasks:
        t = row_text(dev)
        texts += t
        weights += [1.0 / (len(tasks) * len(t))] * len(t)
    return texts, np.asarray(weights)


# --- GOT-D ---------------------------------------------------------------------------------------


def sinkhorn_potentials(
    x: np.ndarray,
    y: np.ndarray,
    b: np.ndarray | None = None,
    reg: float = 0.1,
    max_iter: int = 1000,
    tol: float = 1e-6,
    chunk: int = 131072,
    cache_bytes: int = 1 << 30,
    backend: str = "chunked",
) -> tuple[np.ndarray, np.ndarray, int]:
    """Log-domain Sinkhorn dual potentials (f, g) of entropic OT between uniform weights on the rows
    of `x` and weights `b` on the rows of `y`, cost = cosine distance 1 - <x, y> (unit vectors),
    so that the plan is a_i b_j exp((f_i + g_j - C_ij) / reg).

    Stops when the plan's column-marginal violation ||P^T 1 - b||_2 falls below `tol`: POT's
    `sinkhorn_log` criterion (`stopThr`). In float32 that violation floors near 3e-8, so a `tol`
    below ~1e-7 runs to `max_iter`.

    `backend`: "chunked" (default) runs tuneset's kernel, which builds the cost chunk by chunk (rows
    of x) and keeps it between iterations only when it fits in `cache_bytes`, else recomputes it, so
    memory stays O(chunk x m) for any n; "pot" calls POT's `sinkhorn_log` on float32 torch tensors
    with the dense cost (a cross-check). At matched tolerance, alternated, min of 7 on the bench
    pool (benchmarks/README.md), the two cost the same per iteration, and the kernel finishes first
    at the default tol (1.25x min, 1.13x median) because it checks convergence every iteration for
    free where POT checks every 10th; at tol 1e-7 they tie. So the kernel stays the default: as
    fast, and POT has no memory cap (its dense cost, -C/reg, temporaries and plan are ~4 n x m
    arrays: 2 GB at 1M x 122)."""
    if backend not in ("chunked", "pot"):
        raise ValueError(f"unknown Sinkhorn backend '{backend}'; valid: chunked, pot")
    if backend == "pot":
        return _sinkhorn_pot(x, y, b, reg, max_iter, tol)
    return _sinkhorn_chunked(x, y, b, reg, max_iter, tol, chunk, cache_bytes)


def _sinkhorn_pot(x: np.ndarray, y: np.ndarray, b: np.ndarray | None, reg: float, max_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray, int]:
    """POT's log-domain Sinkhorn on the dense float32 cost (torch backend: tuneset's precision);
    its scalings u, v are converted to potentials: u = log a + f / reg, v = log b + g / reg."""
    import ot

    n, m = len(x), len(y)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
    bt = torch.from_numpy(np.full(m, 1.0 / m) if b is None else np.asarray(b, dtype=np.float64)).float()
    at = torch.full((n,), 1.0 / n)
    _, log = ot.sinkhorn(at, bt, 1.0 - xt @ yt.T, reg, method="sinkhorn_log", log=True, numItermax=max_iter, stopThr=tol, warn=False)
    f = reg * (log["log_u"].double() + math.log(n))
    g = reg * (log["log_v"].double() - torch.log(bt.double()))
    return f.numpy(), g.numpy(), int(log["niter"]) + 1  # POT logs its 0-based loop index


def _sinkhorn_chunked(
    x: np.ndarray, y: np.ndarray, b: np.ndarray | None, reg: float, max_iter: int, tol: float, chunk: int, cache_bytes: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """tuneset's kernel: -C / reg built per chunk of rows. After an f-step the rows are exact and
    the column violation is b * (exp((g - g_new) / reg) - 1), which the g-step has already
    computed, so convergence is checked every iteration for free (POT pays a pass over the plan
    and checks every 10th)."""
    n, m = len(x), len(y)
    # Copied only when read-only (a cached array is), which torch would warn about.
    xt, yt = (torch.from_numpy(np.require(a, np.float32, ["C", "W"])) for a in (x, y))
    b64 = np.full(m, 1.0 / m) if b is None else np.asarray(b, dtype=np.float64)
    bt = torch.from_numpy(b64).float()
    log_b = torch.log(bt)
    log_a = -math.log(n)
    spans = [(s, min(s + chunk, n)) for s in range(0, n, chunk)]
    keep = n * m * 4 <= cache_bytes
    cached: list[torch.Tensor] = []

    def neg_cost(k: int) -> torch.Tensor:
        """-C / reg for chunk k: scaled once, so an iteration is one add and one logsumexp per side."""
        if keep and k < len(cached):
            return cached[k]
        s, e = spans[k]
        c = (xt[s:e] @ yt.T).sub_(1.0).div_(reg)
        if keep:
            cached.append(c)
        return c

    f = torch.zeros(n)
    g = torch.zeros(m)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007  (the count is returned)
        acc = torch.full((m,), -math.inf)
        row_shift = g / reg + log_b
        for k, (s, e) in enumerate(spans):
            c = neg_cost(k)
            f[s:e] = -reg * torch.logsumexp(c + row_shift, dim=1)
            acc = torch.logaddexp(acc, torch.logsumexp(c + (f[s:e, None] / reg), dim=0))
        g_new = -reg * (acc + log_a)
        violation = float(torch.linalg.vector_norm(bt * torch.expm1((g - g_new) / reg)))
        g = g_new
        if violation < tol:
            break
    return f.double().numpy(), g.double().numpy(), it


def calibrated_gradient(f: np.ndarray) -> np.ndarray:
    """d OT / d (mass of candidate i), as in LAVA / GOT-D: f_i minus the mean of the others."""
    n = len(f)
    return f - (f.sum() - f) / max(n - 1, 1)


class GotParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reg: float = Field(default=0.1, gt=0)  # entropic regularisation, in cosine-distance units
    max_iter: int = Field(default=1000, ge=1)
    tol: float = Field(default=1e-6, gt=0)


@register
class GotSelector(Selector):
    """GOT-D: minus the calibrated OT gradient; high = adding this row moves the pool toward the targets.

    `score` transports the pool to the mixture of all targets; with several tasks, `vs_<task>`
    transports it to each task's dev rows alone, so a policy can split the budget by task
    (`select.targets`) instead of letting the mixture's nearest task take most of it."""

    name = "got"
    Params = GotParams
    uses = frozenset({"embedder", "targets"})
    row_local = False  # the potentials couple every candidate
    # adds per-task columns (2); stops on the marginal violation, POT's criterion (4); nearest_dev (5);
    # a `vs_<task>` column with one target task too, so `select.targets` works with one (6)
    revision = 6

    def _score(self, rows: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        texts, weights = target_mixture(self.ctx)
        cand = self.ctx.embeddings(row_text(rows))
        f, _, _ = sinkhorn_potentials(cand, self.ctx.embeddings(texts), weights, p.reg, p.max_iter, p.tol)
        cols = {}
        for task, dev in sorted(self.ctx.targets.items()):  # one task: its column is the score itself
            ft = f if len(self.ctx.targets) == 1 else sinkhorn_potentials(
                cand, self.ctx.embeddings(row_text(dev)), None, p.reg, p.max_iter, p.tol)[0]
            cols[f"vs_{task}"] = -calibrated_gradient(ft)
        return pl.DataFrame({"id": rows["id"], "score": -calibrated_gradient(f), "potential": f, **cols,
                             "nearest_dev": nearest_dev(self.ctx, cand)})


# --- DSIR ----------------------------------------------------------------------------------------


def ngram_counts(texts: list[str], buckets: int):
    """Sparse (rows x buckets) counts of hashed lower-cased unigrams and bigrams, each row parsed once.

    Words are runs of word characters or of punctuation, as nltk's WordPunctTokenizer (DSIR's own
    default); hashing is murmur3 in C (scikit-learn) instead of sha256 in Python."""
    from sklearn.feature_extraction.text import HashingVectorizer

    vec = HashingVectorizer(n_features=buckets, token_pattern=r"\w+|[^\w\s]+", ngram_range=(1, 2),
                            lowercase=True, alternate_sign=False, norm=None, dtype=np.float32)
    return vec.transform(texts)


def bucket_totals(texts: list[str], buckets: int) -> np.ndarray:
    """Summed n-gram bucket counts of `texts`, in float64: integer sums stay exact, so the totals
    of shards add up to the pool's bit for bit."""
    return np.asarray(ngram_counts(texts, buckets).sum(0, dtype=np.float64)).ravel()


def dsir_log_ratio(raw: np.ndarray, targets: list[list[str]], smoothing: float = 1e-8) -> np.ndarray:
    """log p_target - log p_raw per bucket; the target model is the equal-weight mixture of the
    `targets` groups, the raw model the pool's bucket totals `raw`."""
    target = np.zeros(len(raw))
    for group in targets:
        c = bucket_totals(group, len(raw))
        target += c / max(c.sum(), 1)
    return np.log(target / target.sum() + smoothing) - np.log(raw / max(raw.sum(), 1) + smoothing)


def dsir_log_weights(candidates: list[str], targets: list[list[str]], buckets: int = 10000, smoothing: float = 1e-8) -> np.ndarray:
    """log p_target(x) - log p_raw(x) per candidate under hashed bag-of-n-gram models."""
    log_ratio = dsir_log_ratio(bucket_totals(candidates, buckets), targets, smoothing)
    return np.asarray(ngram_counts(candidates, buckets) @ log_ratio).ravel().astype(np.float64)


DSIR_PART = 256  # rows a part; the flow groups parts into tasks of up to `score.shard_size` rows


class DsirParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    buckets: int = Field(default=10000, ge=16)
    smoothing: float = Field(default=1e-8, gt=0)  # added to both bucket probabilities, as in DSIR
    resample: bool = True  # add Gumbel noise: top-k of the score is then sampling without replacement


@register
class DsirSelector(MapReduceSelector):
    """DSIR: log importance weight log p_target(x) / p_raw(x) under hashed n-gram models, with
    Gumbel noise so that a top-k budget resamples in proportion to the weights.

    Map-reduce: each shard counts its n-grams, the flow sums the counts into the raw model, and
    shards then score their rows against the log ratio; only the noise is drawn pool-wide."""

    name = "dsir"
    Params = DsirParams
    uses = frozenset({"targets", "seed"})
    # bucket frequencies in float64 (2); resampling noise drawn per row id, not position (3), from its
    # own stream, not the random baseline's draws (4)
    revision = 4

    def partial(self, rows: pl.DataFrame) -> dict[str, np.ndarray]:
        return {"raw": bucket_totals(row_text(rows), self.params.buckets)}

    def plan(self, rows: pl.DataFrame, totals: dict[str, np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        groups = [row_text(dev) for _, dev in sorted(self.ctx.targets.items())]
        return dsir_log_ratio(totals["raw"], groups, self.params.smoothing), contiguous_parts(rows.height, DSIR_PART)

    def score_part(self, rows: pl.DataFrame, state: np.ndarray) -> pl.DataFrame:
        logw = np.asarray(ngram_counts(row_text(rows), self.params.buckets) @ state).ravel().astype(np.float64)
        return pl.DataFrame({"id": rows["id"], "log_weight": logw})

    def finish_scores(self, scores: pl.DataFrame) -> pl.DataFrame:
        logw = scores["log_weight"].to_numpy()
        if self.params.resample:  # Gumbel noise per row id: the same rows whatever the pool's order
            logw = logw - np.log(-np.log(np.maximum(row_uniforms(scores["id"], self.ctx.seed, "dsir:"), 1e-300)))
        return scores.insert_column(1, pl.Series("score", logw))
