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
