"""Per-example LoRA gradients, Adam-aware, randomly projected: the features behind LESS.

Two paths compute the same gradients:

- `reference_features`: LESS's own recipe. One example at a time, full-vocabulary logits, the
  gradient read from `param.grad`, projected by a dense Gaussian matrix (TRAK's projector) that
  is regenerated in row blocks because D x k does not fit in memory.
- `fast_features`: one forward/backward per length-sorted batch. A LoRA factor is a linear map,
  so an example's weight gradient is the sum over its tokens of (output gradient) x (input): the
  forward hooks keep each factor's input and output, `autograd.grad` returns the output gradients
  for the whole batch, and one einsum per factor yields every example's gradient (as LoGra does).
  Then the reference's Gaussian projection (applied per chunk of rows) or a CountSketch (O(D),
  no matrix) reduces it. LoGra also projects the token vectors before the outer product (a
  Kronecker sketch), but the Adam transform below is elementwise on the full gradient and does
  not factor, so the LoRA gradient is materialised; at rank 8 it is under 1M numbers per example.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tuneset.models.lm import Encoded, length_batches, nll_at_responses, pad_batch, response_token_nll, token_nll

log = logging.getLogger("tuneset.grads")


@dataclass
class Checkpoint:
    """One warm-up epoch: the adapter, its Adam moments (flattened in parameter order) and the
    epoch's mean learning rate."""

    adapter: Path
    lr: float
    betas: tuple[float, float]
    eps: float
    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]

    @staticmethod
    def read_state(folder: Path) -> dict:
        return json.loads((folder / "state.json").read_text())

    @classmethod
    def load(cls, folder: Path) -> Checkpoint:
        from safetensors.torch import load_file

        state = cls.read_state(folder)
        moments = load_file(str(folder / "adam.safetensors"))
        avg = {k.split("::")[0]: v for k, v in moments.items() if k.endswith("::exp_avg")}
        sq = {k.split("::")[0]: v for k, v in moments.items() if k.endswith("::exp_avg_sq")}
        return cls(folder / "adapter", state["lr"], tuple(state["betas"]), state["eps"], avg, sq)


def lora_factors(model: torch.nn.Module) -> list[tuple[str, torch.nn.Linear]]:
    """The trainable LoRA factor layers (`lora_A`/`lora_B`), in `named_parameters` order."""
    modules = dict(model.named_modules())
    out = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            mod = modules[name.rsplit(".", 1)[0]]
            if not isinstance(mod, torch.nn.Linear) or mod.bias is not None or not name.endswith(".weight"):
                raise ValueError(f"per-example gradients cover bias-free LoRA factors only, not '{name}'")
            out.append((name[: -len(".weight")], mod))
    return out


def load_trainable(base: torch.nn.Module, adapter: Path) -> torch.nn.Module:
    """The base model with a warm-up adapter whose factors require grad, in eval mode (no dropout)."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
    model.eval()
    return model


def flat_moments(ckpt: Checkpoint, names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    missing = [n for n in names if f"{n}.weight" not in ckpt.exp_avg]
    if missing:
        raise ValueError(f"checkpoint {ckpt.adapter.parent} has no Adam state for {missing[0]}")
    m = torch.cat([ckpt.exp_avg[f"{n}.weight"].flatten() for n in names])
    v = torch.cat([ckpt.exp_avg_sq[f"{n}.weight"].flatten() for n in names])
    return m.float(), v.float()


def adam_direction(g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, betas: tuple[float, float], eps: float) -> torch.Tensor:
    """The update Adam would take from this gradient: m' / (sqrt(v') + eps), one row per example."""
    b1, b2 = betas
    m2 = b1 * m + (1 - b1) * g
    v2 = b2 * v + (1 - b2) * g * g
    return m2 / (v2.sqrt() + eps)


def adam_transform(folder: Path, names: Sequence[str]):
    """Gradient -> Adam's direction under the checkpoint in `folder`, for factors `names` in order;
    the moments follow the gradient to its device."""
    ckpt = Checkpoint.load(folder)
    m, v = flat_moments(ckpt, names)

    def transform(g: torch.Tensor) -> torch.Tensor:
        return adam_direction(g, m.to(g.device), v.to(g.device), ckpt.betas, ckpt.eps)

    return transform


class CountSketch:
    """x -> S x with S a k x D matrix holding one random +-1 per column: O(D) per example, no matrix
    stored beyond a bucket and a sign per coordinate. Inner products are preserved in expectation."""

    def __init__(self, dim_in: int, k: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.bucket = torch.randint(0, k, (dim_in,), generator=g)
        self.sign = torch.randint(0, 2, (dim_in,), generator=g).float() * 2 - 1
        self.k = k

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.bucket.device != x.device:
            self.bucket, self.sign = self.bucket.to(x.device), self.sign.to(x.device)
        out = torch.zeros(x.shape[0], self.k, dtype=x.dtype, device=x.device)
        out.index_add_(1, self.bucket, x * self.sign)
        return out


class GaussianProjector:
    """Dense N(0, 1/k) projection, as TRAK's: rows of the D x k matrix are regenerated block by block
    from (seed, block), since the whole matrix (D x 8192 floats) is far larger than memory.

    The blocks are drawn on the input's device. A CUDA generator draws other numbers than the CPU
    one for the same seed, so features made on a GPU must be keyed apart from CPU ones."""

    def __init__(self, dim_in: int, k: int, seed: int, block: int = 8192):
        self.dim_in, self.k, self.seed, self.block = dim_in, k, seed, block

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.k, dtype=torch.float32, device=x.device)
        for b, start in enumerate(range(0, self.dim_in, self.block)):
            g = torch.Generator(device=x.device).manual_seed(self.seed * 1_000_003 + b)
            stop = min(start + self.block, self.dim_in)
            out += x[:, start:stop].float() @ torch.randn(stop - start, self.k, generator=g, device=x.device)
        return out / math.sqrt(self.k)


def normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


class _FactorTaps:
    """Forward hooks keeping each LoRA factor's input and output for one batch."""

    def __init__(self, factors: Sequence[tuple[str, torch.nn.Linear]]):
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        self.handles = [mod.register_forward_hook(self._keep) for _, mod in factors]

    def _keep(self, module, args, output) -> None:
        self.inputs.append(args[0])
        self.outputs.append(output)

    def clear(self) -> None:
        self.inputs.clear()
        self.outputs.clear()

    def close(self) -> None:
        for h in self.handles:
            h.remove()


class _Stop(Exception):
    pass


class LayerSplit:
    """Runs a decoder in two parts: the frozen layers below the first LoRA layer once per batch,
    then only the layers from it on, once per checkpoint. Every warm-up checkpoint shares the
    frozen part, so with LoRA on the last N layers each extra checkpoint costs N layers, not all."""

    def __init__(self, model: torch.nn.Module, start: int):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.decoder, self.head, self.start = base.get_decoder(), base.get_output_embeddings(), start

    def prefix(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden states entering layer `start` (no graph: nothing below it is trained)."""
        seen: dict[str, torch.Tensor] = {}

        def grab(module, args, kwargs):
            seen["h"] = args[0] if args else kwargs["hidden_states"]
            raise _Stop

        handle = self.decoder.layers[self.start].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            with torch.no_grad():
                self.decoder(input_ids=ids, attention_mask=mask, use_cache=False)
        except _Stop:
            pass
        finally:
            handle.remove()
        return seen["h"]

    def suffix_nll(self, h: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-token response NLL from the layers from `start` on, like `response_token_nll`."""
        layers = self.decoder.layers
        self.decoder.layers = torch.nn.ModuleList(list(layers)[self.start:])
        try:
            hidden = self.decoder(inputs_embeds=h, attention_mask=mask, use_cache=False).last_hidden_state
        finally:
            self.decoder.layers = layers
        return nll_at_responses(labels, lambda rows, cols: self.head(hidden[rows, cols]))


def first_lora_layer(factors: Sequence[tuple[str, torch.nn.Linear]]) -> int | None:
    """Index of the lowest decoder layer holding a LoRA factor (None if names do not say)."""
    import re

    found = [re.search(r"\.layers\.(\d+)\.", n) for n, _ in factors]
    return min(int(m.group(1)) for m in found) if found and all(found) else None


def example_grads(loss_per_example: torch.Tensor, taps: _FactorTaps, n_factors: int) -> torch.Tensor:
    """Per-example gradients (batch, D) w.r.t. the LoRA factors from one backward. Examples do not
    interact in a causal LM, so the gradient of the summed loss w.r.t. a factor's output holds each
    example's own output gradient; its weight gradient is sum_t grad_out_t x input_t."""
    if len(taps.outputs) != n_factors:
        raise RuntimeError(f"expected {n_factors} LoRA factor calls per forward, saw {len(taps.outputs)}")
    grads_out = torch.autograd.grad(loss_per_example.sum(), taps.outputs)
    with torch.no_grad():
        parts = [torch.einsum("bto,bti->boi", go, x).reshape(len(loss_per_example), -1)
                 for go, x in zip(grads_out, taps.inputs)]
    taps.clear()
    return torch.cat(parts, 1).float()


def mean_response_nll(nll: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nll.sum(1) / (labels[:, 1:] != -100).sum(1).clamp_min(1)


def batched_example_grads(model: torch.nn.Module, factors: Sequence[tuple[str, torch.nn.Linear]], taps: _FactorTaps,
                          items: Sequence[Encoded], pad_id: int) -> torch.Tensor:
    """Gradients of each example's mean response NLL w.r.t. the LoRA factors, shape (batch, D)."""
    device = next(model.parameters()).device
    ids, mask, labels = pad_batch(items, pad_id, device)
    taps.clear()
    return example_grads(mean_response_nll(response_token_nll(model, ids, mask, labels), labels), taps, len(factors))


@dataclass
class CheckpointState:
    """What the fast path needs of one checkpoint: its LoRA weights and its gradient transform."""

    weights: dict[str, torch.Tensor]  # adapter state dict, as peft saves it
    transform: object = None  # per-example gradient -> feature (Adam's direction), or None


def fast_features(model: torch.nn.Module, encoded: Sequence[Encoded], pad_id: int, project,
                  states: Sequence[CheckpointState], max_tokens: int = 512) -> Iterator[tuple[list[int], list[torch.Tensor]]]:
    """(indices, one normalised projected feature block per checkpoint) per length-sorted batch.

    The checkpoints' LoRA weights are swapped into one model; layers below the first LoRA layer
    run once per batch for all of them (checked once against the full forward)."""
    from peft import set_peft_model_state_dict

    factors = lora_factors(model)
    taps = _FactorTaps(factors)
    start = first_lora_layer(factors)
    split = LayerSplit(model, start) if start else None
    try:
        for batch in length_batches([len(e.ids) for e in encoded], max_tokens):
            ids, mask, labels = pad_batch([encoded[i] for i in batch], pad_id, next(model.parameters()).device)
            h = split.prefix(ids, mask) if split else None
            if split is not None and not getattr(split, "verified", False):
                split = _verified(split, model, h, ids, mask, labels, taps)
            feats = []
            for state in states:
                if len(states) > 1 or state.weights:
                    set_peft_model_state_dict(model, state.weights)
                taps.clear()
                if split is not None:
                    nll = split.suffix_nll(h, mask, labels)
                else:
                    nll = response_token_nll(model, ids, mask, labels)
                g = example_grads(mean_response_nll(nll, labels), taps, len(factors))
                if state.transform is not None:
                    g = state.transform(g)
                feats.append(normalize(project(g)).cpu())
            yield batch, feats
    finally:
        taps.close()


def _verified(split: LayerSplit, model, h, ids, mask, labels, taps: _FactorTaps) -> LayerSplit | None:
    """Compare the split forward with the whole one once; keep the split only if they agree (an
    architecture that rescales `inputs_embeds`, say, would not), else run whole forwards."""
    with torch.no_grad():
        parts = split.suffix_nll(h, mask, labels)
        whole = response_token_nll(model, ids, mask, labels)
    taps.clear()
    if not torch.allclose(whole, parts, rtol=1e-3, atol=1e-4):
        log.warning("split forward differs from the whole one for %s; every checkpoint runs all layers",
                    type(split.decoder).__name__)
        return None
    split.verified = True
    return split


def reference_features(model: torch.nn.Module, encoded: Sequence[Encoded], pad_id: int, project, transform=None,
                       project_every: int = 16) -> Iterator[tuple[list[int], torch.Tensor]]:
    """LESS's loop: batch size 1, full logits, `param.grad`, projected every `project_every` rows."""
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    pending: list[torch.Tensor] = []
    idx: list[int] = []
    for i, e in enumerate(encoded):
        ids, mask, labels = pad_batch([e], pad_id, device)
        loss = mean_response_nll(token_nll(model(input_ids=ids, attention_mask=mask).logits, labels), labels).sum()
        model.zero_grad(set_to_none=True)
        loss.backward()
        g = torch.cat([p.grad.flatten() for p in params]).float()[None]
        pending.append(transform(g) if transform is not None else g)
        idx.append(i)
        if len(pending) == project_every or i == len(encoded) - 1:
            yield idx, normalize(project(torch.cat(pending))).cpu()
            pending, idx = [], []
    model.zero_grad(set_to_none=True)


def fast_chunk(model: torch.nn.Module, encoded: Sequence[Encoded], pad_id: int, project,
               states: Sequence[CheckpointState], max_tokens: int = 512,
               advance: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Per checkpoint, the (n, k) float16 features of one chunk of rows by the fast path;
    `advance(rows)` after each batch, so a chunk of minutes logs progress (and can be stopped).

    CountSketch is cheap and applied per batch. A dense projection regenerates its matrix on every
    call, so it is applied once per chunk to the gathered full gradients instead."""
    per_batch = isinstance(project, CountSketch)
    feats: list[np.ndarray | None] = [None] * len(states)
    for idx, blocks in fast_features(model, encoded, pad_id, project if per_batch else (lambda g: g), states, max_tokens):
        for c, f in enumerate(blocks):
            if feats[c] is None:
                feats[c] = np.zeros((len(encoded), f.shape[1]), dtype=np.float16 if per_batch else np.float32)
            feats[c][idx] = f.numpy()
        if advance is not None:
            advance(len(idx))
    if per_batch:
        return feats
    device = next(model.parameters()).device
    return [normalize(project(torch.from_numpy(f).to(device))).cpu().numpy().astype(np.float16) for f in feats]


def reference_chunk(model: torch.nn.Module, encoded: Sequence[Encoded], pad_id: int, project, transform=None) -> np.ndarray:
    """The (n, k) float16 features of one chunk of rows under one checkpoint by LESS's own loop."""
    feats = None
    for idx, f in reference_features(model, encoded, pad_id, project, transform):
        if feats is None:
            feats = np.zeros((len(encoded), f.shape[1]), dtype=np.float16)
        feats[idx] = f.numpy().astype(np.float16)
    return feats


def exact_features(model: torch.nn.Module, encoded: Sequence[Encoded], pad_id: int, transform=None,
                   max_tokens: int = 512) -> np.ndarray:
    """Unprojected normalised gradients (n x D): the ground truth projections approximate (small n only)."""
    out = None
    for batch, (g,) in fast_features(model, encoded, pad_id, lambda x: x, [CheckpointState({}, transform)], max_tokens):
        if out is None:
            out = np.zeros((len(encoded), g.shape[1]), dtype=np.float32)
        out[batch] = g.numpy()
    return out
