"""Shared fixtures: tiny randomly initialised models built from a config in code (offline, fast;
the code is tests/tiny_models.py, which benchmarks use too)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TUNESET_HOME", str(Path(__file__).parent.parent / ".tuneset" / "test-home"))

from tuneset.runtime import configure  # noqa: E402

configure()

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import build_tiny_embedder, build_tiny_lm  # noqa: E402


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-dim Llama with a byte-level BPE tokenizer, saved like any local model."""
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def tiny_embedder_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-dim BERT sentence-transformer with a word-level vocabulary."""
    return build_tiny_embedder(tmp_path_factory.mktemp("tiny-embedder"))


CHAT_TEMPLATE = ("{% for m in messages %}<bos>{{ m['role'] }}: {{ m['content'] }}<eos>{% endfor %}"
                 "{% if add_generation_prompt %}<bos>assistant: {% endif %}")


@pytest.fixture(scope="session")
def chat_lm_dir(tiny_lm_dir, tmp_path_factory) -> Path:
    """The tiny model with a chat template, like an Instruct model's tokenizer."""
    import shutil

    from transformers import AutoTokenizer

    d = tmp_path_factory.mktemp("chat-lm")
    shutil.copytree(tiny_lm_dir, d, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(d)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(d)
    return d

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
