import numpy as np
import pytest
import torch

from tuneset.models.lm import encode, length_batches, pad_batch, response_nll, token_nll
from tuneset.models.loading import load_lm


@pytest.fixture(scope="module")
def lm(tiny_lm_dir, tmp_path_factory):
    return load_lm(str(tiny_lm_dir), "cpu")


def test_encode_scores_only_the_response_and_respects_max_length(lm):
    enc = encode(lm.tokenizer, ["What is the capital of France? Answer:" * 5, None], ["Paris", "positive"], max_length=24)
    long, alone = enc
    assert len(long.ids) <= 24
    assert long.ids[long.n_prompt:] == lm.tokenizer(" Paris", add_special_tokens=False)["input_ids"]
    assert alone.n_prompt == 1 and alone.ids[0] == lm.tokenizer.bos_token_id


def test_encode_appends_eos_for_training(lm):
    (e,) = encode(lm.tokenizer, ["Sentiment:"], ["positive"], add_eos=True)
    assert e.ids[-1] == lm.tokenizer.eos_token_id


def test_length_batches_cover_every_index_once_within_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=500).tolist()
    batches = length_batches(lengths, max_tokens=1000, max_batch=16)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(500))
    for b in batches:
        assert len(b) <= 16
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 1000


def test_batched_losses_equal_one_at_a_time(lm, monkeypatch):
    """Padding and length sorting (a GPU's batches) must not change any example's loss."""
    monkeypatch.setattr("tuneset.models.lm.ROWS_PER_FORWARD", {})
    prompts = ["Review: the blender is great.", "What is 3 plus 4? Answer:", "Tone:", "What is the capital of France?"]
    responses = ["positive", "7", "good and fine and great", "Paris"]
    enc = encode(lm.tokenizer, prompts, responses)
    total, count, last = response_nll(lm.model, enc, lm.tokenizer.pad_token_id, max_tokens=4096)
    for i, e in enumerate(enc):
        ids, mask, labels = pad_batch([e], lm.tokenizer.pad_token_id, torch.device("cpu"))
        with torch.no_grad():
            nll = token_nll(lm.model(input_ids=ids, attention_mask=mask).logits, labels)
        assert count[i] == len(e.ids) - e.n_prompt
        assert total[i] == pytest.approx(float(nll.sum()), rel=1e-4)
        assert last[i] == pytest.approx(float(nll[0, len(e.ids) - 2]), rel=1e-4)


def test_cpu_losses_do_not_depend_on_the_other_rows(lm, monkeypatch):
    """On a CPU each row is its own forward, so a subset, or the rows in another order, give the full
    run's losses bit for bit (a grown pool rescored from scratch equals its cached scores). The
    tiny model's kernels do not vary with the batch shape, SmolLM2's do (7.6e-6): hence the count."""
    import tuneset.models.lm as lm_module

    prompts = ["Review: the blender is great.", "What is 3 plus 4? Answer:", "Tone:", "What is the capital of France?",
               "Review: a dull film.", "Q: 2 + 2?"]
    responses = ["positive", "7", "good and fine and great", "Paris", "negative", "4"]
    enc = encode(lm.tokenizer, prompts, responses)
    rows_per_forward, real = [], lm_module.response_token_nll
    monkeypatch.setattr(lm_module, "response_token_nll", lambda m, ids, *a: rows_per_forward.append(len(ids)) or real(m, ids, *a))
    full = response_nll(lm.model, enc, lm.tokenizer.pad_token_id)
    assert rows_per_forward == [1] * len(enc)
    part = response_nll(lm.model, enc[1::2], lm.tokenizer.pad_token_id)
    backwards = response_nll(lm.model, enc[::-1], lm.tokenizer.pad_token_id)
    for got, ref in zip(part, full):
        np.testing.assert_array_equal(got, ref[1::2])
    for got, ref in zip(backwards, full):
        np.testing.assert_array_equal(got, ref[::-1])


def test_response_only_projection_matches_full_logits(lm):
    from tuneset.models.lm import response_token_nll

    enc = encode(lm.tokenizer, ["Review: great.", "What is 3 plus 4? Answer:"], ["positive", "7 and more"], add_eos=True)
    ids, mask, labels = pad_batch(enc, lm.tokenizer.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        full = token_nll(lm.model(input_ids=ids, attention_mask=mask).logits, labels)
        fast = response_token_nll(lm.model, ids, mask, labels)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)


def test_text_features_read_the_last_token_and_do_not_depend_on_the_batch(lm):
    from tuneset.models.lm import text_features

    texts = ["Review: a fine film\nSentiment:", "short", "Question: what is the capital of France?\nType:"]
    together = text_features(lm.model, lm.tokenizer, texts, max_tokens=4096)
    alone = np.vstack([text_features(lm.model, lm.tokenizer, [t]) for t in texts])
    np.testing.assert_array_equal(together, alone)  # one text a forward on a CPU: bit for bit, as cached rows
    np.testing.assert_array_equal(text_features(lm.model, lm.tokenizer, texts, max_tokens=64), together)
    # the first half is the last layer's state at the final token: equal to a plain forward's
    ids = torch.tensor([lm.tokenizer(texts[0], add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        last = lm.model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
    np.testing.assert_allclose(together[0, : last.shape[0]], last.numpy(), atol=1e-5)
    # max_length keeps the end of a long text, where the prompt asks its question
    cut = text_features(lm.model, lm.tokenizer, ["word " * 50 + "Sentiment:"], max_length=8)
    assert cut.shape == (1, together.shape[1]) and np.isfinite(cut).all()


@pytest.mark.parametrize("adapter", [False, True])
def test_shared_prompt_scoring_equals_pair_by_pair(lm, adapter):
    """Choices scored off one cached prompt pass give each (prompt, choice) pair's own loss: prompts
    of different lengths (left padding), 1-token and longer choices, groups of different sizes, a
    prompt truncated differently per choice (the pair-by-pair path), and a LoRA-wrapped model."""
    from peft import LoraConfig, get_peft_model

    from tuneset.models.lm import shared_prompt_nll

    model = lm.model
    if adapter:
        torch.manual_seed(0)
        model = get_peft_model(lm.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    tok = lm.tokenizer
    questions = [("Review: the blender is great and works well. Sentiment:", ["positive", "negative"]),
                 ("What is 3 plus 4? Answer:", ["7", "12", "5 the a an", "Paris Rome"]),
                 ("Tone:", ["good", "bad", "good and fine and great"]),
                 ("What is the capital of France? Answer:" * 4, ["Paris", "Rome Berlin Madrid Paris Rome"])]
    groups = [encode(tok, [q] * len(cs), cs, max_length=40) for q, cs in questions]
    assert len({tuple(e.ids[:e.n_prompt]) for e in groups[3]}) == 2  # truncated per choice
    try:
        total, count = shared_prompt_nll(model, groups, tok.pad_token_id, max_tokens=4096)
        flat = [e for g in groups for e in g]
        ref_total, ref_count, _ = response_nll(model, flat, tok.pad_token_id, max_tokens=4096)
        assert count.tolist() == ref_count.tolist()
        np.testing.assert_allclose(total, ref_total, rtol=1e-4, atol=1e-4)
        small, _ = shared_prompt_nll(model, groups, tok.pad_token_id, max_tokens=16)  # one group per batch
        np.testing.assert_allclose(small, ref_total, rtol=1e-4, atol=1e-4)
    finally:
        if adapter:
            model.unload()


def test_a_stop_request_ends_loss_passes_at_the_next_batch(lm):
    """SIGTERM/SIGINT set progress.STOP (tuneset.cli); worker threads must stop at their next batch
    rather than hold the process until their shard is done."""
    from tuneset.progress import STOP, Stopped

    enc = encode(lm.tokenizer, ["What is 3 plus 4? Answer:"] * 4, ["7"] * 4)
    STOP.set()
    try:
        with pytest.raises(Stopped, match="rerun the same command"):
            response_nll(lm.model, enc, lm.tokenizer.pad_token_id, max_tokens=8)
    finally:
        STOP.clear()
    assert len(response_nll(lm.model, enc, lm.tokenizer.pad_token_id, max_tokens=8)[0]) == 4


def _hub_cache(root, repo: str, commit: str, weights_from) -> None:
    """A hub cache as huggingface_hub lays it out: refs/main names the commit, snapshots/<commit> holds it."""
    import shutil

    folder = root / f"models--{repo.replace('/', '--')}"
    shutil.copytree(weights_from, folder / "snapshots" / commit)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)


def test_a_hub_model_is_keyed_and_read_at_the_commit_the_hub_names(tiny_lm_dir, tmp_path, monkeypatch):
    """A hub name was its own cache key: a model updated on the hub served the old one's scores,
    adapters and evaluations. Now the key carries the snapshot's commit, and the loader reads that
    snapshot (offline here: the commit the local cache names)."""
    import huggingface_hub.constants

    from tuneset.errors import TunesetError
    from tuneset.models import loading
    from tuneset.models.embed import embedder_identity

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    loading.hub_snapshot.cache_clear()
    _hub_cache(tmp_path, "org/tiny", "a" * 40, tiny_lm_dir)
    first = load_lm("org/tiny", "cpu")
    assert first.identity == f"hub:org/tiny@{'a' * 40}" == embedder_identity("org/tiny")

    retrained = tmp_path / "retrained"
    model = load_lm(str(tiny_lm_dir), "cpu")
    with torch.no_grad():
        model.model.lm_head.weight.mul_(2)
    model.model.save_pretrained(retrained)
    model.tokenizer.save_pretrained(retrained)
    _hub_cache(tmp_path, "org/tiny", "b" * 40, retrained)  # the hub moved on
    loading.hub_snapshot.cache_clear()  # a new process
    second = load_lm("org/tiny", "cpu")
    assert second.identity == f"hub:org/tiny@{'b' * 40}"
    torch.testing.assert_close(second.model.lm_head.weight, 2 * first.model.lm_head.weight)

    with pytest.raises(TunesetError, match=r"cannot load model 'org/absent': no such local path, and no hub copy .*Valid: 'smollm2'"):
        load_lm("org/absent", "cpu")


@pytest.mark.parametrize(("arch", "setting"), [("Granite", {"logits_scaling": 8.0}), ("Cohere", {"logit_scale": 0.0625})])
def test_models_that_rescale_their_logits_score_on_the_logits_they_generate_with(arch, setting):
    """Granite divides its logits and Cohere multiplies them inside forward(): head(decoder(x))
    scored and trained them at another temperature than the one they generate at."""
    import transformers

    from tuneset.models.lm import response_token_nll

    config = getattr(transformers, f"{arch}Config")(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                    num_attention_heads=4, num_key_value_heads=4, **setting)
    torch.manual_seed(0)
    model = getattr(transformers, f"{arch}ForCausalLM")(config).eval()
    ids = torch.randint(0, 64, (2, 12))
    mask, labels = torch.ones_like(ids), ids.clone()
    labels[:, :5] = -100
    with torch.no_grad():
        np.testing.assert_allclose(response_token_nll(model, ids, mask, labels).numpy(),
                                   token_nll(model(input_ids=ids, attention_mask=mask).logits, labels).numpy(), atol=1e-5)


def test_a_chat_response_ends_with_the_templates_turn_end_not_always_the_eos(chat_lm_dir, tmp_path):
    """Gemma closes a turn with <end_of_turn>, not its <eos>: trained to end at the EOS, a model
    learned to close its turns as no conversation does."""
    import shutil

    from transformers import AutoTokenizer

    from tuneset.models.lm import response_end, training_pairs
    from tuneset.models.loading import turn_end

    tok = AutoTokenizer.from_pretrained(chat_lm_dir)
    assert response_end(tok, "chat") == response_end(tok, "plain") == tok.eos_token_id  # its template ends turns with <eos>
    assert turn_end(str(chat_lm_dir), "chat") is None  # so its fine-tunes keep their keys
    gemma_like = tmp_path / "eot"
    shutil.copytree(chat_lm_dir, gemma_like)
    tok.add_special_tokens({"additional_special_tokens": ["<eot>"]})
    tok.chat_template = tok.chat_template.replace("<eos>", "<eot>\n")
    tok.save_pretrained(gemma_like)
    tok = AutoTokenizer.from_pretrained(gemma_like)
    eot = tok.convert_tokens_to_ids("<eot>")
    assert response_end(tok, "chat") == eot != tok.eos_token_id and response_end(tok, "plain") == tok.eos_token_id
    assert [e.ids[-1] for e in training_pairs(tok, ["What is 3 plus 4?"], ["7"], "chat", 64)] == [eot]
    assert turn_end(str(gemma_like), "chat") == eot and turn_end(str(gemma_like), "plain") is None
