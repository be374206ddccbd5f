"""Shared fixtures: tiny randomly initialised models built from a config in code (offline, fast)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TUNESET_HOME", str(Path(__file__).parent.parent / ".tuneset" / "test-home"))

from tuneset.runtime import configure  # noqa: E402

configure()

CORPUS = [
    "Is the sentiment of this product review positive or negative?",
    "Review: the blender is great and works well. Sentiment: positive negative",
    "What is the capital of France? Answer: Paris Rome Berlin Madrid",
    "What is 3 plus 4? Answer: 7 12 5 the a an",
    "Rate the tone of this customer comment as good or bad. Comment: Tone:",
]


def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<eos>", "<bos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", bos_token="<bos>", pad_token="<eos>")


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-dim Llama with a byte-level BPE tokenizer, saved like any local model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("tiny-lm")
    tok = _tiny_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_embedder_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-dim BERT sentence-transformer with a word-level vocabulary."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny-embedder")
    words = sorted({w.strip("?.:,").lower() for line in CORPUS for w in line.split()} - {""})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *"abcdefghijklmnopqrstuvwxyz0123456789"]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # `vocab=` (a path or a dict): transformers 5 ignores `vocab_file=`, which left a 5-token vocabulary
    # and embedded every word as [UNK]
    BertTokenizerFast(vocab=str(d / "vocab.txt")).save_pretrained(d / "bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(d / "bert")
    word = models.Transformer(str(d / "bert"), max_seq_length=64)
    model = SentenceTransformer(modules=[word, models.Pooling(32, "mean")], device="cpu")
    model.save(str(d / "st"))
    return d / "st"


@pytest.fixture
def demo_dir() -> Path:
    from tuneset.demo import DEMO_DIR

    return DEMO_DIR


@pytest.fixture
def tiny_recipe(tmp_path, tiny_lm_dir, tiny_embedder_dir, demo_dir):
    """A recipe over a 60-row slice of the demo pool with the tiny models: runs every stage in seconds."""
    from tuneset.recipe import load_recipe

    rows = (demo_dir / "pool.jsonl").read_text().splitlines()[:60]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(rows) + "\n")
    tasks = json.loads((demo_dir / "tasks.json").read_text())
    for t in tasks.values():
        t["dev"], t["test"] = str(demo_dir / t["dev"]), str(demo_dir / t["test"])
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))

    def make(*overrides: str):
        return load_recipe(None, [
            f"pool={pool}", f"tasks={tmp_path / 'tasks.json'}", f"work_dir={tmp_path / 'work'}",
            f"model.name={tiny_lm_dir}", f"model.embedder={tiny_embedder_dir}", "model.device=cpu",
            "model.max_length=64", "score.shard_size=16", "evaluate.max_test_rows=12", "evaluate.max_new_tokens=4",
            "finetune.epochs=1", "finetune.batch_size=4", *overrides,
        ])

    return make


@pytest.fixture(scope="session")
def tiny_warmup(tmp_path_factory, tiny_lm_dir) -> Path:
    """A LESS warm-up of the tiny model: two epochs on 24 demo rows, a checkpoint per epoch."""
    from tuneset.data import load_rows
    from tuneset.demo import DEMO_DIR
    from tuneset.finetune.sft import train
    from tuneset.recipe import WarmupConfig

    root = tmp_path_factory.mktemp("warm")
    rows = load_rows(DEMO_DIR / "pool.jsonl").rows.head(24)
    cfg = WarmupConfig(epochs=2, batch_size=4, lr=1e-2, warmup_ratio=0.0)
    train(rows, cfg, str(tiny_lm_dir), root / "run", max_length=64,
          device="cpu", checkpoint_epochs=True)
    return root / "run"
