"""Embedding-distribution selectors against references: POT's Sinkhorn, DSIR's own featuriser,
brute-force k-center, planted near-duplicates."""

import numpy as np
import polars as pl
import pytest

from tuneset.recipe import PolicyConfig
from tuneset.selection import apply_policy
from tuneset.selectors.distribution import calibrated_gradient, ngram_counts, sinkhorn_potentials
from tuneset.selectors.diversity import k_center_greedy, semantic_duplicates
from tuneset.selectors.index import build_index


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def clouds():
    rng = np.random.default_rng(0)
    centers = unit(rng.normal(size=(4, 16)))
    cand = unit(np.repeat(centers, 50, axis=0) + 0.3 * rng.normal(size=(200, 16)))
    tgt = unit(centers[:1] + 0.3 * rng.normal(size=(12, 16)))  # targets live near center 0
    return cand, tgt


@pytest.mark.parametrize("backend,cache_bytes", [("chunked", 1 << 30), ("chunked", 0), ("pot", 1 << 30)])  # cost kept / recomputed
def test_sinkhorn_matches_pot(clouds, backend, cache_bytes):
    ot = pytest.importorskip("ot")
    cand, tgt = clouds
    b = np.random.default_rng(1).uniform(0.5, 1.5, len(tgt))
    b /= b.sum()
    f, g, _ = sinkhorn_potentials(cand, tgt, b, reg=0.1, tol=1e-9, chunk=64, cache_bytes=cache_bytes, backend=backend)
    a = np.full(len(cand), 1 / len(cand))
    cost = 1.0 - cand.astype(np.float64) @ tgt.T.astype(np.float64)
    _, log = ot.sinkhorn(a, b, cost, 0.1, method="sinkhorn_log", log=True, numItermax=5000, stopThr=1e-12)
    ref_f = 0.1 * log["log_u"]
    # Potentials are defined up to a constant shift between f and g.
    np.testing.assert_allclose(f - f.mean(), ref_f - ref_f.mean(), atol=2e-4)
    plan = np.exp((f[:, None] + g[None, :] - cost) / 0.1) * a[:, None] * b[None, :]
    np.testing.assert_allclose(plan.sum(0), b, atol=1e-5)
    np.testing.assert_allclose(plan.sum(1), a, atol=1e-5)


def test_chunked_kernel_stops_on_pots_criterion(clouds):
    """Same tolerance, same meaning: at the iteration the kernel stops, the plan's column-marginal
    violation (POT's `stopThr` quantity) is below tol, and one iteration earlier it was not."""
    cand, tgt = clouds
    a, b = np.full(len(cand), 1 / len(cand)), np.full(len(tgt), 1 / len(tgt))
    cost = 1.0 - cand.astype(np.float64) @ tgt.T.astype(np.float64)

    def violation(iters: int) -> float:
        f, g, _ = sinkhorn_potentials(cand, tgt, reg=0.1, max_iter=iters, tol=0, backend="chunked")
        g_prev = sinkhorn_potentials(cand, tgt, reg=0.1, max_iter=iters - 1, tol=0, backend="chunked")[1] if iters > 1 else np.zeros(len(tgt))
        plan = np.exp((f[:, None] + g_prev[None, :] - cost) / 0.1) * a[:, None] * b[None, :]  # after the f-step
        return float(np.linalg.norm(plan.sum(0) - b))

    _, _, stop = sinkhorn_potentials(cand, tgt, reg=0.1, tol=1e-4, backend="chunked")
    assert stop > 1
    assert violation(stop) < 1e-4 <= violation(stop - 1)


def test_unknown_sinkhorn_backend_names_the_valid_ones(clouds):
    cand, tgt = clouds
    with pytest.raises(ValueError, match="valid: chunked, pot"):
        sinkhorn_potentials(cand, tgt, backend="sparse")


def test_got_prefers_candidates_near_the_targets(clouds):
    cand, tgt = clouds
    f, _, _ = sinkhorn_potentials(cand, tgt, reg=0.1)
    score = -calibrated_gradient(f)
    top = np.argsort(-score)[:50]
    assert (top < 50).mean() > 0.8  # the first cloud (of 4) is the one near the targets


def test_calibrated_gradient_is_f_minus_mean_of_others():
    f = np.array([1.0, 2.0, 6.0])
    np.testing.assert_allclose(calibrated_gradient(f), [1 - 4, 2 - 3.5, 6 - 1.5])


def test_ngram_counts_count_dsir_unigrams_and_bigrams():
    texts = ["The cat, the HAT!", "one"]
    counts = ngram_counts(texts, 1 << 16).toarray()
    # WordPunct words: the cat , the hat !  -> 6 unigrams + 5 bigrams
    assert counts[0].sum() == 11 and counts[1].sum() == 1
    assert counts[0].max() == 2  # "the" twice, case-folded


def test_dsir_package_featuriser_agrees_up_to_hashing():
    dsir = pytest.importorskip("data_selection.hashed_ngram_dsir")
    text = "Is the sentiment positive or negative? Review: a gorgeous, witty film."
    ref = dsir.get_ngram_counts(text, num_buckets=1 << 20)
    ours = ngram_counts([text], 1 << 20).toarray()[0]
    assert ref.sum() == ours.sum()
    assert sorted(ref[ref > 0].tolist()) == sorted(ours[ours > 0].astype(int).tolist())


def test_k_center_greedy_matches_brute_force():
    rng = np.random.default_rng(3)
    x = unit(rng.normal(size=(60, 8)))
    score, order = k_center_greedy(x, 20, first=5)
    picked = [5]
    for _ in range(19):
        d = (1 - x @ x[picked].T).min(1)
        d[picked] = -1
        picked.append(int(np.argmax(d)))
    assert order.tolist() == picked
    assert set(np.argsort(-score)[:20].tolist()) == set(picked)
    assert np.all(np.diff(score[order][1:]) <= 1e-6)  # picking distances never grow


def test_semantic_duplicates_find_planted_copies():
    rng = np.random.default_rng(4)
    base = unit(rng.normal(size=(300, 32)))
    copies = unit(base[:40] + 0.01 * rng.normal(size=(40, 32)))
    x = np.vstack([base, copies])
    dup_of, sim = semantic_duplicates(x, threshold=0.95, n_clusters=6)
    flagged = np.flatnonzero(dup_of >= 0)
    assert len(flagged) == 40
    for i in flagged:  # each flagged row duplicates its twin
        assert {int(i) % 300, int(dup_of[i]) % 300} == {int(i) % 300} and sim[i] > 0.95


def test_diversity_gate_rejects_near_copies_and_names_them():
    rng = np.random.default_rng(5)
    base = unit(rng.normal(size=(20, 16)))
    emb = np.vstack([base, base[15:]])  # rows 20..24 copy rows 15..19, the best of the originals
    ids = [f"r{i}" for i in range(25)]
    scores = pl.DataFrame({"id": ids, "q": np.r_[np.linspace(0, 1, 20), np.full(5, 2.0)]})
    out = apply_policy(scores, PolicyConfig(weights={"q": 1}, budget=10, max_similarity=0.9), {"q": True}, embeddings=emb)
    chosen = set(out.filter("selected")["id"].to_list())
    assert len(chosen) == 10
    assert not any({f"r{i + 15}", f"r{i + 20}"} <= chosen for i in range(5))  # never both copies
    rejected = out.filter(pl.col("reason").str.contains("max_similarity"))
    assert sorted(rejected["id"].to_list()) == [f"r{i}" for i in range(15, 20)]
    assert "to selected r20" in rejected.filter(pl.col("id") == "r15")["reason"][0]


def test_index_switches_to_ivf_for_large_sets(monkeypatch):
    import faiss

    from tuneset.selectors import index as index_mod

    monkeypatch.setattr(index_mod, "IVF_MIN_ROWS", 500)
    rng = np.random.default_rng(6)
    x = unit(rng.normal(size=(2000, 16)))
    small, large = build_index(x[:400]), build_index(x)
    assert isinstance(small, faiss.IndexFlatIP) and isinstance(large, faiss.IndexIVFFlat)
    _, nn = large.search(x[:50], 1)
    assert (nn.ravel() == np.arange(50)).mean() > 0.9
