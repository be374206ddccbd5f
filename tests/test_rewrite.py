"""The `rewrite` selector proposes; curation decides (tests/test_curation.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tuneset.data import load_rows
from tuneset.selectors import ScoringContext, make_selector
from tuneset.store import ArtifactStore


@pytest.fixture
def ctx(tmp_path, tiny_lm_dir, tiny_embedder_dir):
    return ScoringContext(store=ArtifactStore(tmp_path), model=str(tiny_lm_dir), embedder=str(tiny_embedder_dir),
                          device="cpu", targets={}, max_length=64)


def test_proposals_are_the_models_answers_scored_by_the_same_measure(ctx, demo_dir):
    rows = load_rows(demo_dir / "pool.jsonl").rows.head(8)
    measure = {"components": ["likelihood", "relevance"]}
    given = make_selector("confidence", measure).fit(ctx).score(rows)["score"].to_numpy()
    out = make_selector("rewrite", {"confidence": measure, "below": 1.0, "max_new_tokens": 4}).fit(ctx).score(rows)
    np.testing.assert_allclose(out["score"].to_numpy(), given)  # score: the given response's confidence
    has = out["proposed"] != ""
    assert has.any()
    tried = out.filter(has)
    np.testing.assert_allclose(tried["gain"].to_numpy(), tried["proposed_confidence"].to_numpy() - tried["score"].to_numpy())
    assert (out.filter(~has)["gain"] == 0).all()


def test_rows_at_or_above_below_get_no_proposal(ctx, demo_dir):
    rows = load_rows(demo_dir / "pool.jsonl").rows.head(8)
    out = make_selector("rewrite", {"confidence": {"components": ["relevance"]}, "below": 0.0}).fit(ctx).score(rows)
    assert (out["proposed"] == "").all() and (out["gain"] == 0).all() and (out["proposed_confidence"] == 0).all()


def test_a_response_cut_at_max_length_is_not_read_as_finished_or_as_relevant(ctx, demo_dir, caplog):
    """A response past max_length loses its end token: the conditioned pass then ends on a content
    token (no p_end to read) and scores fewer response tokens than the response-alone pass, so
    p_relevant compares per-token losses, not sums over unequal counts (which sent it to 1.0)."""
    import polars as pl

    rows = load_rows(demo_dir / "pool.jsonl").rows.head(3)
    rows = rows.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.col("response") + " and more" * 60)
                             .otherwise(pl.col("response")).alias("response"))
    out = make_selector("confidence", {"components": ["likelihood"]}).fit(ctx).score(rows)
    cond = ctx.response_losses(rows, conditioned=True, add_eos=True)
    free = ctx.response_losses(rows, conditioned=False)
    assert cond["n_tokens"][0] < free["n_tokens"][0] + 1  # row 0 is cut; the others are whole
    assert (cond["n_tokens"][1:] == free["n_tokens"][1:] + 1).all()
    assert out["p_end"][0] == 1.0 and "1 of 3 responses are cut at model.max_length 64" in caplog.text
    assert out["likelihood"][0] == out["p_relevant"][0]  # the one part measured, not lifted by an unseen end
    per_token = free["nll_sum"][0] / free["n_tokens"][0] - cond["nll_sum"][0] / cond["n_tokens"][0]
    assert out["pmi_per_token"][0] == pytest.approx(per_token)
    whole_pmi = free["nll_sum"][1:] - (cond["nll_sum"][1:] - cond["nll_last"][1:])  # the whole rows: sums, as before
    np.testing.assert_allclose(out["pmi_per_token"][1:] * (cond["n_tokens"][1:] - 1), whole_pmi, rtol=1e-9)
