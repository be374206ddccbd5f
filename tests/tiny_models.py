"""Tiny randomly initialised models built from a config in code (offline, seconds): the tests'
fixtures (conftest.py) and the benchmarks that run the flows end to end (benchmarks/crash.py) build
the same ones with these functions."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "Is the sentiment of this product review positive or negative?",
    "Review: the blender is great and works well. Sentiment: positive negative",
    "What is the capital of France? Answer: Paris Rome Berlin Madrid",
    "What is 3 plus 4? Answer: 7 12 5 the a an",
    "Rate the tone of this customer comment as good or bad. Comment: Tone:",
]


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<eos>", "<bos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", bos_token="<bos>", pad_token="<eos>")


def build_tiny_lm(d: Path) -> Path:
    """A 2-layer, 32-dim Llama with a byte-level BPE tokenizer, saved in `d` like any local model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d = Path(d)
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def build_tiny_embedder(d: Path) -> Path:
    """A 2-layer, 32-dim BERT sentence-transformer with a word-level vocabulary, built under `d`;
    returns the sentence-transformer's folder (`d / "st"`)."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
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
