import re

import numpy as np
import polars as pl
import pytest

from tuneset.data import load_rows
from tuneset.errors import TunesetError, UnknownNameError
from tuneset.selectors import ScoringContext, get_selector, make_selector, selector_names, validate_scores
from tuneset.selectors.base import MapReduceSelector, ScoreError, add_partials, row_text
from tuneset.store import ArtifactStore


@pytest.fixture(scope="module")
def rows(demo_dir_module):
    return load_rows(demo_dir_module / "pool.jsonl").rows.head(40)


@pytest.fixture(scope="module")
def demo_dir_module():
    from tuneset.demo import DEMO_DIR

    return DEMO_DIR


@pytest.fixture
def ctx(tmp_path, tiny_lm_dir, tiny_embedder_dir, demo_dir, tiny_warmup):
    """Everything a selector may read, the warm-up checkpoints of gradient selectors included."""
    targets = {t: load_rows(demo_dir / "targets" / t / "dev.jsonl").rows for t in ("sentiment", "capitals")}
    return ScoringContext(store=ArtifactStore(tmp_path), model=str(tiny_lm_dir), embedder=str(tiny_embedder_dir),
                          device="cpu", targets=targets, max_length=64, warmup=str(tiny_warmup))


@pytest.mark.parametrize("name", selector_names())
def test_every_selector_honours_the_contract(name, ctx, rows):
    out = make_selector(name).fit(ctx).score(rows)
    assert out["id"].to_list() == rows["id"].to_list()
    assert out["score"].dtype == pl.Float64
    for col in out.columns[1:]:
        assert out[col].dtype == pl.String or out[col].is_finite().all()


@pytest.mark.parametrize("name", [n for n in selector_names() if get_selector(n).row_local])
def test_scores_do_not_depend_on_sharding(name, ctx, rows):
    sel = make_selector(name).fit(ctx)
    whole = sel.score(rows)
    parts = pl.concat([sel.score(rows.slice(0, 13)), sel.score(rows.slice(13))])
    np.testing.assert_allclose(whole["score"].to_numpy(), parts["score"].to_numpy(), rtol=1e-4)


@pytest.mark.parametrize("name", selector_names())
def test_scores_follow_the_row_not_its_position(name, ctx, rows):
    """A reordered pool (a glob read in another order, a re-sorted export) scores every row the
    same: randomness is drawn per row id (random, dsir's resampling, diversity's first center,
    label_quality's folds), never by position."""
    sel = make_selector(name).fit(ctx)
    a = sel.score(rows)
    b = sel.score(rows.reverse()).join(a.select("id"), on="id", how="right").select(a.columns)
    for col in a.columns[1:]:
        if a[col].dtype == pl.String:
            assert a[col].to_list() == b[col].to_list(), col
        else:
            np.testing.assert_allclose(b[col].to_numpy(), a[col].to_numpy(), rtol=1e-4, atol=1e-6, err_msg=col)


@pytest.mark.parametrize("name", ["got", "embedding_knn", "less"])
def test_a_per_task_selector_names_its_one_target_task_too(name, tmp_path, tiny_lm_dir, tiny_embedder_dir, demo_dir,
                                                           tiny_warmup, rows):
    """One target task beside a control is a real recipe: `select.targets` needs its column."""
    from tuneset.recipe import PolicyConfig
    from tuneset.selection import apply_policy

    one = ScoringContext(store=ArtifactStore(tmp_path), model=str(tiny_lm_dir), embedder=str(tiny_embedder_dir), device="cpu",
                         targets={"sentiment": load_rows(demo_dir / "targets/sentiment/dev.jsonl").rows}, max_length=64,
                         warmup=str(tiny_warmup))
    out = make_selector(name).fit(one).score(rows)
    np.testing.assert_allclose(out["vs_sentiment"].to_numpy(), out["score"].to_numpy(), rtol=1e-6)
    table = out.rename({c: f"{name}.{c}" for c in out.columns if c != "id"}).rename({f"{name}.score": name})
    picked = apply_policy(table, PolicyConfig(weights={name: 1}, budget=5, targets="equal"), {name: True})
    assert picked["selected"].sum() == 5


def test_dsir_resampling_is_not_the_random_baselines_draw(ctx, rows):
    """DSIR's Gumbel noise comes from its own stream: at the random baseline's seed it must not be a
    monotone function of random's scores, or the two arms would agree by construction."""
    from scipy.stats import spearmanr

    dsir = make_selector("dsir").fit(ctx).score(rows)
    noise = (dsir["score"] - dsir["log_weight"]).to_numpy()
    rand = make_selector("random").fit(ctx).score(rows).join(dsir.select("id"), on="id", how="right")
    assert abs(spearmanr(noise, rand["score"].to_numpy()).statistic) < 0.5


MAP_REDUCE = [n for n in selector_names() if issubclass(get_selector(n), MapReduceSelector)]


@pytest.mark.parametrize("name", MAP_REDUCE)
def test_map_reduce_selectors_score_the_same_split_any_way(name, ctx, rows, monkeypatch):
    """Shard totals summed, parts scored out of order: exactly the one-process scores."""
    from polars.testing import assert_frame_equal

    monkeypatch.setattr("tuneset.selectors.distribution.DSIR_PART", 6)
    sel = make_selector(name, {"n_clusters": 4} if name == "semdedup" else {}).fit(ctx)
    whole = sel.score(rows)
    totals: dict = {}
    for start in range(0, rows.height, 7):
        totals = add_partials(totals, sel.partial(rows.slice(start, 7)))
    state, parts = sel.plan(rows, totals)
    assert len(parts) > 1
    frames = [sel.score_part(rows[p], state) for p in reversed(parts)]
    assert_frame_equal(whole, validate_scores(name, rows, sel.join_parts(rows, frames)))


def test_dsir_and_semdedup_are_map_reduced():
    assert {"dsir", "semdedup"} <= set(MAP_REDUCE)


def test_unknown_selector_lists_valid_names():
    with pytest.raises(UnknownNameError) as e:
        make_selector("perplexityy")
    assert "perplexity" in str(e.value) and "embedding_knn" in str(e.value)


def test_bad_params_name_the_valid_ones():
    with pytest.raises(TunesetError, match="params.kk: Extra inputs are not permitted; valid: k$"):
        make_selector("embedding_knn", {"kk": 3})


def test_fingerprint_tracks_what_the_selector_reads(ctx):
    knn = make_selector("embedding_knn").fit(ctx)
    length = make_selector("length").fit(ctx)
    fp_knn, fp_len = knn.fingerprint(), length.fingerprint()
    ctx.targets = {"sentiment": ctx.targets["sentiment"]}
    ctx.__dict__.pop("targets_fingerprint", None)
    assert make_selector("embedding_knn").fit(ctx).fingerprint() != fp_knn
    assert make_selector("length").fit(ctx).fingerprint() == fp_len
    assert make_selector("embedding_knn", {"k": 2}).fit(ctx).fingerprint() != knn.fingerprint()
    # Generating in padded batches (confidence, rewrite) keys by the batch size; a one-row-a-forward loss does not.
    conf, ppl = make_selector("confidence").fit(ctx).fingerprint(), make_selector("perplexity").fit(ctx).fingerprint()
    ctx.max_batch_tokens = 64
    assert make_selector("confidence").fit(ctx).fingerprint() != conf
    assert make_selector("perplexity").fit(ctx).fingerprint() == ppl


def test_a_new_revision_of_a_selector_does_not_reuse_older_scores(ctx):
    from tuneset.selectors.baselines import LengthSelector

    class Revised(LengthSelector):
        revision = 2

    assert Revised().fit(ctx).fingerprint() != LengthSelector().fit(ctx).fingerprint()


def test_validation_rejects_broken_score_tables(rows):
    good = pl.DataFrame({"id": rows["id"], "score": np.arange(rows.height, dtype=float)})
    assert validate_scores("x", rows, good.reverse())["id"].to_list() == rows["id"].to_list()
    with pytest.raises(ScoreError, match="39 rows"):
        validate_scores("x", rows, good.head(39))
    with pytest.raises(ScoreError, match="non-finite"):
        validate_scores("x", rows, good.with_columns(pl.when(pl.col("score") == 3).then(float("nan")).otherwise(pl.col("score")).alias("score")))
    with pytest.raises(ScoreError, match="unique"):
        validate_scores("x", rows, pl.concat([good.head(39), good.head(1)]))


def test_perplexity_and_ifd_agree_with_their_definitions(ctx, rows):
    ppl = make_selector("perplexity").fit(ctx).score(rows)
    ifd = make_selector("ifd").fit(ctx).score(rows)
    cond = ctx.response_losses(rows, conditioned=True)
    expected = np.exp(cond["nll_sum"].to_numpy() / cond["n_tokens"].to_numpy())
    np.testing.assert_allclose(ppl["score"].to_numpy(), expected, rtol=1e-6)
    ratio = ifd["ppl_conditioned"].to_numpy() / ifd["ppl_response"].to_numpy()
    np.testing.assert_allclose(ifd["ratio"].to_numpy(), ratio, rtol=1e-9)
    # A ratio at or above 1 (the instruction does not help: a mismatched pair) ranks below every other row.
    np.testing.assert_allclose(ifd["score"].to_numpy(), np.where(ratio < 1, ratio, -ratio), rtol=1e-9)
    np.testing.assert_allclose(ifd["ppl_conditioned"].to_numpy(), expected, rtol=1e-6)


def test_the_lm_loss_pass_logs_one_count_over_all_its_cached_parts(ctx, rows, monkeypatch, caplog):
    """Stored a few rows a part, the pass still reports n/N over every missing row, never a count
    that restarts at 0% per part (on the full pool that read as eight passes of 1,024 rows)."""
    import tuneset.selectors.context as context

    monkeypatch.setattr(context, "ROW_CHUNK", 7)
    with caplog.at_level("INFO", logger="tuneset.progress"):
        ctx.response_losses(rows, conditioned=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("LM loss (response alone)")]
    counts = [tuple(map(int, re.search(r": (\d+)/(\d+) rows", line).groups())) for line in lines]
    n = len(set(rows["response"]))  # one forward per distinct response
    assert n > 7 and counts and {total for _, total in counts} == {n} and counts[-1] == (n, n)
    assert len(list((ctx.store.root / "losses").glob("*/parts/*.parquet"))) == -(-n // 7)


def test_scoring_with_a_fine_tuned_adapter_is_a_different_model(ctx, rows, tiny_warmup):
    """CLEAR's next round scores with the model fine-tuned on the last round's rows."""
    from tuneset.selectors.context import UndeclaredInput

    tuned = ScoringContext(store=ctx.store, model=ctx.model, device="cpu", max_length=64, adapter=str(tiny_warmup / "adapter"))
    assert tuned.model_identity.startswith(ctx.model_identity + "+")
    base, after = ctx.response_losses(rows)["nll_sum"].to_numpy(), tuned.response_losses(rows)["nll_sum"].to_numpy()
    assert after.mean() < base.mean()  # the warm-up trained on demo rows: they became likelier
    assert make_selector("perplexity").fit(tuned).fingerprint() != make_selector("perplexity").fit(ctx).fingerprint()
    # LESS reads the base model under its own warm-up's adapters: the adapter re-keyed hours of
    # gradients that came out bit for bit the same.
    less_base, less_tuned = (make_selector("less").fit(ScoringContext(
        store=ctx.store, model=ctx.model, device="cpu", max_length=64, adapter=a, warmup=str(tiny_warmup),
        targets={"t": rows.head(3)})) for a in (None, tuned.adapter))
    assert less_base.fingerprint() == less_tuned.fingerprint()
    with pytest.raises(UndeclaredInput, match="reads ctx.model_identity but does not declare 'lm' in uses"):
        less_tuned.ctx.model_identity  # noqa: B018 - the declared view refuses what the key leaves out
    missing = ScoringContext(store=ctx.store, model=ctx.model, device="cpu", adapter=str(tiny_warmup / "no-adapter"))
    with pytest.raises(TunesetError, match=r"cannot load adapter '.*no-adapter' \(model.adapter\).*adapter_config.json"):
        missing.lm()


def test_losses_are_computed_once_and_shared(ctx, rows, monkeypatch):
    import tuneset.selectors.context as base

    calls = []
    real = base.response_nll
    monkeypatch.setattr(base, "response_nll", lambda *a, **k: calls.append(1) or real(*a, **k))
    make_selector("perplexity").fit(ctx).score(rows)
    make_selector("ifd").fit(ctx).score(rows)
    assert len(calls) == 2  # conditioned once (shared), response-alone once


def test_the_lm_loss_pass_logs_its_progress(ctx, rows, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="tuneset.progress"):
        make_selector("ifd").fit(ctx).score(rows)
    lines = [r.getMessage() for r in caplog.records if r.name == "tuneset.progress"]
    for variant in ("given the instruction", "response alone"):
        # each distinct text is forwarded once: at most rows.height, all of them done
        assert any(re.match(rf"LM loss \({variant}\): (\d+)/\1 rows \(100%\), .* rows/s", ln) for ln in lines), lines


def test_random_differs_by_seed_and_is_uniform(ctx, rows):
    a = make_selector("random").fit(ctx).score(rows)["score"].to_numpy()
    ctx.seed = 1
    b = make_selector("random").fit(ctx).score(rows)["score"].to_numpy()
    assert not np.allclose(a, b)
    assert ((0 <= a) & (a < 1)).all()


def test_knn_prefers_rows_like_the_targets(ctx, rows):
    out = make_selector("embedding_knn", {"k": 3}).fit(ctx).score(rows)
    assert {"vs_sentiment", "vs_capitals"} <= set(out.columns)
    np.testing.assert_allclose(out["score"].to_numpy(), np.maximum(out["vs_sentiment"], out["vs_capitals"]).to_numpy())


def test_selectors_needing_targets_refuse_to_run_without(tmp_path):
    with pytest.raises(TunesetError, match="needs target dev rows"):
        make_selector("embedding_knn").fit(ScoringContext(store=ArtifactStore(tmp_path)))


def test_a_selector_reading_an_undeclared_input_fails_its_contract(ctx, rows):
    from tuneset.selectors.base import Selector
    from tuneset.selectors.context import UndeclaredInput

    class Sneaky(Selector):
        """Reads embeddings but declares only targets: its cache key would miss the embedder."""

        name = "sneaky"
        uses = frozenset({"targets"})

        def _score(self, frame):
            e = self.ctx.embeddings([str(t) for t in frame["instruction"]])
            return pl.DataFrame({"id": frame["id"], "score": e[:, 0].astype(float)})

    with pytest.raises(UndeclaredInput, match=r"reads ctx.embeddings but does not declare 'embedder' in uses \(targets\)"):
        Sneaky().fit(ctx).score(rows)
    Sneaky.uses = frozenset({"targets", "embedder"})
    assert Sneaky().fit(ctx).score(rows).height == rows.height


def test_uses_is_a_closed_set_checked_at_registration():
    from tuneset.selectors.base import Selector, register

    class Odd(Selector):
        name = "odd"
        uses = frozenset({"embeddings"})

        def _score(self, frame):
            return frame.select("id", score=pl.lit(0.0))

    with pytest.raises(ValueError, match=r"unknown uses \['embeddings'\]; valid: lm, base_lm, embedder, targets, seed, warmup"):
        register(Odd)


def test_a_selectors_params_and_direction_are_checked_at_registration():
    """A Params that ignores unknown keys would run a misspelt param on its default, silently."""
    from pydantic import BaseModel

    from tuneset.selectors.base import Selector, register

    class Lax(BaseModel):
        k: int = 3

    class Loose(Selector):
        name, Params = "loose", Lax

        def _score(self, frame):
            return frame.select("id", score=pl.lit(0.0))

    with pytest.raises(ValueError, match="selector 'loose': Params must be a pydantic model with model_config"):
        register(Loose)
    Loose.Params, Loose.higher_is_better = Selector.Params, "yes"
    with pytest.raises(ValueError, match="higher_is_better must be True or False, not 'yes'"):
        register(Loose)
    assert "loose" not in selector_names()


@pytest.mark.parametrize("name", ["embedding_knn", "got"])
def test_similarity_selectors_name_the_dev_row_a_candidate_is_nearest_to(name, ctx):
    dev = ctx.targets["capitals"]
    probe = dev.head(3).with_columns(pl.Series("id", ["p0", "p1", "p2"]))  # candidates that are dev rows
    other = ctx.targets["sentiment"].head(3).with_columns(pl.Series("id", ["q0", "q1", "q2"]))
    out = make_selector(name).fit(ctx).score(pl.concat([probe, other]))
    said = out["nearest_dev"].to_list()
    # (the tiny embedder maps several dev rows to one vector, so ties may name a twin of the row)
    emb = ctx.embeddings
    for cand, text in zip(said, [*probe.rows(named=True), *other.rows(named=True)]):
        task, rest = cand.split("/", 1)
        dev_id, cos = rest.rsplit(" (cos ", 1)
        twin = ctx.targets[task].filter(pl.col("id") == dev_id)
        assert twin.height == 1 and cos == "1.00)"
        a, b = emb(row_text(twin))[0], emb(row_text(pl.DataFrame([text])))[0]
        assert float(a @ b) > 0.999
    assert all(s.startswith("capitals/") for s in said[:3]) and all(s.startswith("sentiment/") for s in said[3:])


def test_a_model_retrained_in_place_is_a_new_key_for_a_living_context(tmp_path, rows):
    """The context remembered the first identity it read: after a retrain in place (a notebook's
    next round), old rows came back with the old weights' losses and new rows were stored under
    the old weights' key."""
    import torch
    from tiny_models import build_tiny_lm
    from transformers import AutoModelForCausalLM

    folder = build_tiny_lm(tmp_path / "lm")
    ctx = ScoringContext(store=ArtifactStore(tmp_path / "store"), model=str(folder), device="cpu", max_length=64)
    before_key, before = ctx.model_identity, ctx.response_losses(rows.head(3))["nll_sum"].to_numpy()
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    model.save_pretrained(folder)
    after = ctx.response_losses(rows.head(3))["nll_sum"].to_numpy()
    assert ctx.model_identity != before_key and not np.allclose(after, before)
    fresh = ScoringContext(store=ctx.store, model=str(folder), device="cpu", max_length=64)
    np.testing.assert_allclose(fresh.response_losses(rows.head(3))["nll_sum"].to_numpy(), after)
