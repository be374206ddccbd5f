"""Models: the embedded defaults (offline), user models, length-sorted batching, per-example losses."""

from tuneset.models.embed import embed_texts, load_embedder
from tuneset.models.lm import Encoded, encode, generate_greedy, length_batches, response_nll
from tuneset.models.loading import LoadedLM, load_lm, model_identity, resolve_device

__all__ = [
    "Encoded", "LoadedLM", "embed_texts", "encode", "generate_greedy", "length_batches",
    "load_embedder", "load_lm", "model_identity", "resolve_device", "response_nll",
]
