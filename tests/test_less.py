"""LESS: per-example gradients against a direct computation, projections, the warm-up checkpoints,
the gradient datastore and the selector's scores."""

import numpy as np
import polars as pl
import pytest
import torch

from tuneset.data import load_rows
from tuneset.errors import TunesetError
from tuneset.finetune.sft import wrap_lora
from tuneset.models.grads import (
    Checkpoint,
    CountSketch,
    GaussianProjector,
    _FactorTaps,
    adam_direction,
    adam_transform,
    batched_example_grads,
    exact_features,
    flat_moments,
    load_trainable,
    lora_factors,
)
from tuneset.models.lm import encode, pad_batch, token_nll, training_pairs
from tuneset.models.loading import load_lm
from tuneset.recipe import FinetuneConfig
from tuneset.selectors import ScoringContext, make_selector
from tuneset.selectors.less import checkpoint_weights, checkpoints
from tuneset.store import ArtifactStore


@pytest.fixture(scope="module")
def pool(demo_dir_module):
    return load_rows(demo_dir_module / "pool.jsonl").rows


@pytest.fixture(scope="module")
def demo_dir_module():
    from tuneset.demo import DEMO_DIR

    return DEMO_DIR


@pytest.fixture(scope="module")
def warmup(tiny_warmup):
    return tiny_warmup


def _ctx(tmp_path, tiny_lm_dir, demo_dir, warmup, tasks=("sentiment", "capitals")):
    targets = {t: load_rows(demo_dir / "targets" / t / "dev.jsonl").rows for t in tasks}
    return ScoringContext(store=ArtifactStore(tmp_path), model=str(tiny_lm_dir), device="cpu", targets=targets,
                          max_length=64, warmup=None if warmup is None else str(warmup))


def _lora_model(tiny_lm_dir, tmp_path, last_layers=None):
    lm = load_lm(str(tiny_lm_dir), "cpu")
    model = wrap_lora(lm.model, FinetuneConfig(lora_r=4, lora_dropout=0.0, last_layers=last_layers))
    torch.manual_seed(1)
    for _, p in model.named_parameters():
        if p.requires_grad:  # lora_B starts at zero, which would zero every lora_A gradient
            p.data.normal_(0, 0.5)
    model.eval()
    return lm, model.double()  # float64: a mismatch is then a bug, not rounding


@pytest.mark.parametrize("last_layers", [None, 1])
def test_batched_per_example_gradients_equal_one_at_a_time(tiny_lm_dir, tmp_path, pool, last_layers):
    lm, model = _lora_model(tiny_lm_dir, tmp_path, last_layers)
    enc = encode(lm.tokenizer, pool["instruction"].head(6).to_list(), pool["response"].head(6).to_list(), 64)
    factors = lora_factors(model)
    taps = _FactorTaps(factors)
    batched = batched_example_grads(model, factors, taps, enc, lm.tokenizer.pad_token_id)
    taps.close()
    params = [p for p in model.parameters() if p.requires_grad]
    assert batched.shape == (6, sum(p.numel() for p in params))
    if last_layers:
        assert len(factors) == 8  # q, k, v, o x (A, B) in the last layer only
    for i, e in enumerate(enc):
        ids, mask, labels = pad_batch([e], lm.tokenizer.pad_token_id, torch.device("cpu"))
        nll = token_nll(model(input_ids=ids, attention_mask=mask).logits, labels)
        model.zero_grad()
        (nll.sum() / (labels[:, 1:] != -100).sum()).backward()
        direct = torch.cat([p.grad.flatten() for p in params])
        torch.testing.assert_close(batched[i], direct.float(), rtol=1e-5, atol=1e-7)


def test_projections_preserve_inner_products_and_are_seeded():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 5000, generator=g)
    exact = x @ x.T
    for proj in (CountSketch(5000, 4096, seed=3), GaussianProjector(5000, 4096, seed=3, block=700)):
        y = proj(x)
        torch.testing.assert_close(y, proj(x))  # deterministic from the seed
        torch.testing.assert_close(proj(x[:3]), y[:3])  # rows do not depend on their batch
        cos = torch.nn.functional.cosine_similarity(y[:, None], y[None], dim=-1)
        ecos = torch.nn.functional.cosine_similarity(x[:, None], x[None], dim=-1)
        assert (cos - ecos).abs().max() < 0.1  # JL: error ~ 1/sqrt(k)
        assert torch.allclose(y.norm(dim=1) ** 2, exact.diagonal(), rtol=0.1)
    a, b = CountSketch(5000, 64, seed=1), CountSketch(5000, 64, seed=2)
    assert not torch.allclose(a(x), b(x))


def test_adam_direction_is_the_step_adam_would_take():
    g, m, v = torch.tensor([[0.5, -2.0]]), torch.tensor([0.1, 0.0]), torch.tensor([0.01, 0.0])
    out = adam_direction(g, m, v, (0.9, 0.999), 1e-8)
    m2 = 0.9 * m + 0.1 * g
    v2 = 0.999 * v + 0.001 * g**2
    torch.testing.assert_close(out, m2 / (v2.sqrt() + 1e-8))
    assert out[0, 1] == pytest.approx(-0.2 / np.sqrt(0.004), rel=1e-5)


def test_warmup_saves_a_checkpoint_with_adam_state_per_epoch(warmup, tiny_lm_dir, tmp_path):
    folders = checkpoints(warmup)
    assert [f.name for f in folders] == ["epoch-1", "epoch-2"]
    lm = load_lm(str(tiny_lm_dir), "cpu")
    model = load_trainable(lm.model, folders[-1] / "adapter")
    names = [n for n, _ in lora_factors(model)]
    ckpt = Checkpoint.load(folders[-1])
    m, v = flat_moments(ckpt, names)
    assert m.numel() == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (v >= 0).all() and v.sum() > 0 and m.abs().sum() > 0
    w = checkpoint_weights(folders)
    assert w.sum() == pytest.approx(1.0) and (w > 0).all()


def test_a_warm_up_outside_the_store_is_known_by_its_content(warmup, tmp_path):
    """Two warm-ups in folders named `run` had one identity, so the second was served the first's
    gradients; a store-built warm-up keeps its key as its name (no cached gradient is lost)."""
    import shutil

    a = shutil.copytree(warmup, tmp_path / "a" / "run")
    b = shutil.copytree(warmup, tmp_path / "b" / "run")
    moment = next(b.rglob("*.safetensors"))
    moment.write_bytes(moment.read_bytes()[:-4] + b"\x00\x00\x80\x3f")  # another warm-up, same folder name

    def identity(folder):
        return ScoringContext(store=ArtifactStore(tmp_path / "s"), warmup=str(folder)).warmup_identity

    assert identity(a) != identity(b) and identity(a) == identity(shutil.copytree(a, tmp_path / "c"))
    key = "0123456789abcdef01234567"
    assert identity(shutil.copytree(a, tmp_path / "store" / "warmup" / key)) == key


def test_less_needs_the_warmup_from_the_flow(tmp_path, tiny_lm_dir, demo_dir):
    ctx = _ctx(tmp_path, tiny_lm_dir, demo_dir, warmup=None)
    with pytest.raises(TunesetError, match="score flow"):
        make_selector("less").fit(ctx)


def test_less_scores_are_lr_weighted_cosines_and_explained(tmp_path, tiny_lm_dir, demo_dir, warmup, pool):
    ctx = _ctx(tmp_path, tiny_lm_dir, demo_dir, warmup)
    sel = make_selector("less", {"dim": 512}).fit(ctx)
    rows = pool.head(30)
    out = sel.score(rows)
    assert {"vs_sentiment", "vs_capitals", "top_dev"} <= set(out.columns)
    np.testing.assert_allclose(out["score"], np.maximum(out["vs_sentiment"], out["vs_capitals"]))
    # Against unprojected gradients: the projected score ranks rows as the exact one does.
    lm = load_lm(str(tiny_lm_dir), "cpu")
    w = checkpoint_weights(checkpoints(warmup))
    dev = ctx.targets["sentiment"]
    exact = np.zeros(rows.height)
    for wc, folder in zip(w, checkpoints(warmup)):
        lm = load_lm(str(tiny_lm_dir), "cpu")
        model = load_trainable(lm.model, folder / "adapter")
        enc_c = encode(lm.tokenizer, rows["instruction"].to_list(), rows["response"].to_list(), 64)
        enc_d = encode(lm.tokenizer, dev["instruction"].to_list(), dev["response"].to_list(), 64)
        c = exact_features(model, enc_c, lm.tokenizer.pad_token_id, adam_transform(folder, [n for n, _ in lora_factors(model)]))
        d = exact_features(model, enc_d, lm.tokenizer.pad_token_id)
        exact += wc * (c @ d.T).mean(1)
    from scipy.stats import spearmanr

    assert spearmanr(exact, out["vs_sentiment"]).statistic > 0.9
    # Explanations name dev rows of the row's best task, most influential first.
    best = out.row(int(np.argmax(out["score"])), named=True)
    task = "sentiment" if best["vs_sentiment"] >= best["vs_capitals"] else "capitals"
    named = [p.split(" ")[0] for p in best["top_dev"].split("; ")]
    assert len(named) == 3 and all(n.startswith(f"{task}:") for n in named)
    vals = [float(p.split("(")[1].rstrip(")")) for p in best["top_dev"].split("; ")]
    assert vals == sorted(vals, reverse=True)


def test_reference_and_fast_paths_agree(tmp_path, tiny_lm_dir, demo_dir, warmup, pool):
    ctx = _ctx(tmp_path, tiny_lm_dir, demo_dir, warmup)
    rows = pool.head(24)
    fast = make_selector("less", {"dim": 2048}).fit(ctx).score(rows)
    ref = make_selector("less", {"dim": 2048, "path": "reference"}).fit(ctx).score(rows)
    assert np.corrcoef(fast["score"], ref["score"])[0, 1] > 0.95


def test_fast_gradients_with_the_reference_projection_reproduce_the_reference(tmp_path, tiny_lm_dir, demo_dir, warmup, pool):
    """Same projection, so any difference would come from the batched gradients (fp16 storage aside)."""
    ctx = _ctx(tmp_path, tiny_lm_dir, demo_dir, warmup)
    rows = pool.head(24)
    fast = make_selector("less", {"dim": 512, "projection": "gaussian"}).fit(ctx).score(rows)
    ref = make_selector("less", {"dim": 512, "path": "reference"}).fit(ctx).score(rows)
    np.testing.assert_allclose(fast["score"], ref["score"], atol=2e-3)
    assert np.corrcoef(fast["score"], ref["score"])[0, 1] > 0.999


def test_a_new_target_reuses_the_candidate_datastore(tmp_path, tiny_lm_dir, demo_dir, warmup, pool):
    rows = pool.head(20)
    first = make_selector("less", {"dim": 256}).fit(_ctx(tmp_path, tiny_lm_dir, demo_dir, warmup, ("sentiment",)))
    first.score(rows)
    second = make_selector("less", {"dim": 256}).fit(_ctx(tmp_path, tiny_lm_dir, demo_dir, warmup))
    out = second.score(rows)
    capitals = second.ctx.targets["capitals"].height
    # The capitals dev rows under each of the 2 checkpoints; no candidate row, no sentiment dev row.
    assert second.store.computed == {"candidates": 0, "targets": 2 * capitals}
    np.testing.assert_allclose(out["vs_sentiment"], first.score(rows)["vs_sentiment"], rtol=1e-6)


def test_a_reordered_and_grown_table_computes_only_its_new_rows(tmp_path, tiny_lm_dir, demo_dir, warmup, pool):
    """Keyed per row, not per chunk of rows: shuffling the table and inserting rows near its top
    (which shifts every later row to another chunk) runs only the inserted rows' gradients."""
    ctx = _ctx(tmp_path, tiny_lm_dir, demo_dir, warmup, ("sentiment",))
    pool = pool.unique(["instruction", "response"], keep="first", maintain_order=True)  # the demo has duplicates
    first = make_selector("less", {"dim": 256}).fit(ctx)
    a = first.score(pool.head(30))
    assert first.store.computed["candidates"] == 2 * 30
    grown = pl.concat([pool.slice(30, 3), pool.head(30).reverse()])
    second = make_selector("less", {"dim": 256}).fit(ctx)
    b = second.score(grown)
    assert second.store.computed == {"candidates": 2 * 3, "targets": 0}
    same = b.join(a, on="id", suffix="_a")
    assert same.height == 30
    np.testing.assert_array_equal(same["vs_sentiment"], same["vs_sentiment_a"])
    fresh = make_selector("less", {"dim": 256}).fit(_ctx(tmp_path / "fresh", tiny_lm_dir, demo_dir, warmup, ("sentiment",)))
    np.testing.assert_allclose(b["score"], fresh.score(grown)["score"], atol=2e-3)


def test_datastore_is_keyed_by_checkpoint_projection_and_dim(tmp_path, tiny_lm_dir, demo_dir, warmup, pool):
    ctx = _ctx(tmp_path, tiny_lm_dir, demo_dir, warmup, ("sentiment",))
    rows = pool.head(10)
    a = make_selector("less", {"dim": 128}).fit(ctx).score(rows)
    n = len(list((tmp_path / "grads").iterdir()))
    b = make_selector("less", {"dim": 128, "seed": 1}).fit(ctx).score(rows)
    assert len(list((tmp_path / "grads").iterdir())) == 2 * n
    assert not np.allclose(a["score"], b["score"])
    assert make_selector("less").fit(ctx).fingerprint() != make_selector("less", {"dim": 128}).fit(ctx).fingerprint()
    make_selector("less", {"dim": 128, "batch_tokens": 64}).fit(ctx).score(rows)  # batch mates move fp16 features
    assert len(list((tmp_path / "grads").iterdir())) == 3 * n


def test_shared_frozen_layers_and_swapped_checkpoints_give_each_checkpoints_gradients(tiny_lm_dir, tmp_path, pool):
    """LoRA on the last layer only: the layer below runs once per batch for every checkpoint, and
    each checkpoint's weights are swapped in; the result equals a whole forward per checkpoint."""
    from peft import get_peft_model_state_dict

    from tuneset.models.grads import CheckpointState, LayerSplit, fast_features, first_lora_layer

    lm, model = _lora_model(tiny_lm_dir, tmp_path, last_layers=1)
    assert first_lora_layer(lora_factors(model)) == 1
    enc = encode(lm.tokenizer, pool["instruction"].head(5).to_list(), pool["response"].head(5).to_list(), 64)
    states, expected = [], []
    for seed in (1, 2):
        torch.manual_seed(seed)
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.data.normal_(0, 0.5)
        states.append(CheckpointState({k: v.clone() for k, v in get_peft_model_state_dict(model).items()}))
        taps = _FactorTaps(lora_factors(model))
        expected.append(batched_example_grads(model, lora_factors(model), taps, enc, lm.tokenizer.pad_token_id))
        taps.close()
    calls = []
    real = LayerSplit.prefix
    LayerSplit.prefix = lambda self, *a: calls.append(1) or real(self, *a)
    try:
        got = {}
        for idx, feats in fast_features(model, enc, lm.tokenizer.pad_token_id, lambda g: g, states, max_tokens=64):
            for c, f in enumerate(feats):
                got.setdefault(c, {}).update(dict(zip(idx, f)))
    finally:
        LayerSplit.prefix = real
    from tuneset.models.lm import length_batches

    assert len(calls) == len(length_batches([len(e.ids) for e in enc], 64))  # once per batch, not per checkpoint
    for c in (0, 1):
        want = expected[c] / expected[c].norm(dim=1, keepdim=True)
        torch.testing.assert_close(torch.stack([got[c][i] for i in range(len(enc))]), want, rtol=1e-5, atol=1e-7)


def test_batch_size_follows_the_device_and_leaves_scores_unchanged(tmp_path, tiny_lm_dir, demo_dir, warmup, pool):
    from tuneset.selectors.less import GradientStore, LessParams

    assert LessParams().tokens_per_batch("cpu") == 512 and LessParams().tokens_per_batch("cuda") == 8192
    assert LessParams(batch_tokens=64).tokens_per_batch("cuda") == 64
    rows = pool.head(16)
    a = make_selector("less", {"dim": 256}).fit(_ctx(tmp_path / "a", tiny_lm_dir, demo_dir, warmup)).score(rows)
    b = make_selector("less", {"dim": 256, "batch_tokens": 64}).fit(_ctx(tmp_path / "b", tiny_lm_dir, demo_dir, warmup)).score(rows)
    np.testing.assert_allclose(a["score"], b["score"], atol=2e-3)
    # A GPU draws another Gaussian matrix (and computes in bf16): its features never share CPU keys.
    ctx = _ctx(tmp_path / "a", tiny_lm_dir, demo_dir, warmup)
    assert GradientStore(ctx, LessParams()).variant == "fast+gaussian"
    ctx.device = "cuda"
    assert GradientStore(ctx, LessParams()).variant == "fast+gaussian@cuda"


def test_trained_sequences_are_the_ones_the_warm_up_trained_on(tmp_path, chat_lm_dir, demo_dir, pool, monkeypatch):
    """`sequences: trained` takes gradients on what an Instruct model's warm-up trained on (its chat
    format, the end token), as the paper does; the default takes them on plain text."""
    from tuneset.finetune.sft import train
    from tuneset.recipe import WarmupConfig
    from tuneset.selectors import less as less_mod

    warm = tmp_path / "warm"
    train(pool.head(8), WarmupConfig(epochs=1, batch_size=4, lr=1e-2, warmup_ratio=0.0), str(chat_lm_dir), warm,
          max_length=64, device="cpu", checkpoint_epochs=True)
    seen: list[list[int]] = []
    real = less_mod.fast_chunk

    def spy(model, enc, *a, **k):
        seen.extend(e.ids for e in enc)
        return real(model, enc, *a, **k)

    monkeypatch.setattr(less_mod, "fast_chunk", spy)
    rows = pool.head(6)
    make_selector("less", {"dim": 64, "sequences": "trained"}).fit(
        _ctx(tmp_path, chat_lm_dir, demo_dir, warm, tasks=("sentiment",))).score(rows)
    tok = load_lm(str(chat_lm_dir), "cpu").tokenizer
    trained = training_pairs(tok, rows["instruction"].to_list(), rows["response"].to_list(), "chat", 64)
    assert all(e.ids in seen for e in trained)
    assert any(e.ids[-1] == tok.eos_token_id for e in trained)  # rows that fit end as trained
    seen.clear()
    make_selector("less", {"dim": 64}).fit(_ctx(tmp_path / "plain", chat_lm_dir, demo_dir, warm, tasks=("sentiment",))).score(rows)
    plain = encode(tok, rows["instruction"].to_list(), rows["response"].to_list(), 64)
    assert all(e.ids in seen for e in plain) and not any(e.ids in seen for e in trained)


def test_the_gradient_datastore_reports_progress_batch_by_batch(tmp_path, tiny_lm_dir, demo_dir, warmup, pool, monkeypatch):
    """A 256-row chunk took minutes on the bench with no log line until it ended (and could not be
    stopped inside it): progress now advances after every batch."""
    from tuneset.progress import ProgressLog

    seen: list[tuple[str, int]] = []
    real = ProgressLog.update

    def spy(self, done, extra=""):
        seen.append((self.what, done))
        return real(self, done, extra)

    monkeypatch.setattr(ProgressLog, "update", spy)
    rows = pool.head(16)
    make_selector("less", {"dim": 64, "batch_tokens": 64}).fit(_ctx(tmp_path, tiny_lm_dir, demo_dir, warmup)).score(rows)
    done = [d for what, d in seen if what.startswith("less gradients (candidates")]
    assert len(done) > 2 and done == sorted(done) and done[-1] == 16  # one chunk, many batches
