"""Supervised fine-tuning loop.

A short explicit loop rather than `transformers.Trainer`: we need response-only loss on our own
encoding, length-grouped batches (random batching spent over half its tokens on padding here),
and the optimizer state at hand for gradient-based selectors. Warm-up plus cosine decay at a
gentle rate: a constant 5e-4 made small runs collapse onto one class.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from tuneset.data.io import atomic_folder, atomic_path, folder_siblings, fsync
from tuneset.models.lm import (
    Encoded,
    length_batches,
    pad_batch,
    resolve_format,
    response_token_nll,
    training_pairs,
)
from tuneset.models.loading import TRAIN_RECORD, compute_dtype, load_lm
from tuneset.progress import STOP, ProgressLog
from tuneset.recipe import FinetuneConfig

log = logging.getLogger("tuneset.finetune")

CPU_MICRO_BATCH_TOKENS = 256  # benchmarks/README.md, "Fine-tune memory"
# All `train` reads of a row: a fine-tune's cache key hashes these (in order) and nothing else, so
# re-exported ids or re-tagged sources reuse a fine-tune instead of repeating it.
TRAINED_FIELDS = ("instruction", "response")


@dataclass
class TrainResult:
    steps: int
    rows: int
    epochs: float
    final_loss: float
    seconds: float
    real_tokens: int
    padded_tokens: int
    prompt_format: str  # resolved: "chat" or "plain"; evaluation of this model uses the same

    @property
    def rows_per_s(self) -> float:
        return self.rows * self.epochs / max(self.seconds, 1e-9)


def grouped_batches(lengths: list[int], batch_size: int, rng: random.Random, group: int = 32) -> list[list[int]]:
    """Shuffle, then sort by length inside windows of `group` batches: little padding, still random."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    window = batch_size * group
    batches = []
    for start in range(0, len(idx), window):
        chunk = sorted(idx[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def micro_batches(items: list[Encoded], max_tokens: float, pad_id: int, device: torch.device) -> list[tuple[torch.Tensor, ...]]:
    """One optimizer batch as padded pieces of at most `max_tokens` padded tokens each (a longer
    row goes alone). Activations kept for backward grow with the tokens in one forward: batches of
    up to 8 x 256 tokens peaked at 6.3 GB on a CPU; pieces cap that without changing the update."""
    return [pad_batch([items[j] for j in piece], pad_id, device)
            for piece in length_batches([len(e.ids) for e in items], max_tokens)]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def wrap_lora(model: torch.nn.Module, cfg: FinetuneConfig) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    layers = None
    if cfg.last_layers is not None:
        n = model.config.num_hidden_layers
        layers = list(range(max(0, n - cfg.last_layers), n))
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, layers_to_transform=layers, task_type="CAUSAL_LM")
    return get_peft_model(model, lcfg)


def save_adapter(model: torch.nn.Module, folder: Path) -> None:
    """PEFT's `save_pretrained`, with the config's set-valued fields (target_modules) written sorted.
    PEFT writes a set in its iteration order, which follows the process's string hash seed: two
    identical trainings wrote different adapter_config.json bytes, so the folder's content identity,
    and every evaluation keyed on it, differed from run to run."""
    model.save_pretrained(folder)
    sets = {k for cfg in getattr(model, "peft_config", {}).values() for k, v in vars(cfg).items() if isinstance(v, set)}
    path = folder / "adapter_config.json"
    data = json.loads(path.read_text())
    data.update({k: sorted(data[k]) for k in sets if isinstance(data.get(k), list)})
    path.write_text(json.dumps(data, indent=2, sort_keys=True))  # as PEFT writes it


def save_checkpoint(model: torch.nn.Module, opt: torch.optim.Optimizer, folder: Path, epoch: int, lrs: list[float]) -> None:
    """Adapter plus Adam moments by parameter name and the epoch's mean learning rate: what LESS's
    Adam-aware gradient features need from each warm-up epoch."""
    from safetensors.torch import save_file

    save_adapter(model, folder / "adapter")
    names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    group = opt.param_groups[0]
    moments = {}
    for p, state in opt.state.items():
        moments[f"{names[id(p)]}::exp_avg"] = state["exp_avg"].detach().cpu().contiguous()
        moments[f"{names[id(p)]}::exp_avg_sq"] = state["exp_avg_sq"].detach().cpu().contiguous()
    save_file(moments, str(folder / "adam.safetensors"))
    (folder / "state.json").write_text(json.dumps({
        "epoch": epoch, "lr": float(np.mean(lrs)), "betas": list(group["betas"]), "eps": group["eps"]}))


def train(
    rows: pl.DataFrame,
    cfg: FinetuneConfig,
    model_name: str,
    out_dir: Path,
    max_length: int = 256,
    device: str = "auto",
    checkpoint_epochs: bool = False,
    resume_every_s: float = 120.0,
) -> TrainResult:
    """Fine-tune `model_name` on `rows`; writes `adapter/` (LoRA) or `model/` (full) into out_dir,
    and with `checkpoint_epochs` a `checkpoints/epoch-<k>/` (see `save_checkpoint`) per epoch.

    Every `resume_every_s` seconds the whole training state (trainable weights, optimizer,
    schedule, RNG, losses) goes to `out_dir/resume/`; a rerun after a kill continues from there
    and ends with the same weights and losses as a run that was never interrupted."""
    seed_everything(cfg.seed)
    # Full fine-tuning keeps fp32 master weights, read as stored, and computes in the device's dtype
    # (bf16 on a GPU): AdamW on bf16 weights rounds small steps away, and at 4e-4 no norm weight
    # (1.0, a bf16 step of 0.0078) ever moved. LoRA's adapters are fp32 already (PEFT).
    low = compute_dtype(device)
    mixed = cfg.method == "full" and low != torch.float32
    lm = load_lm(model_name, device, dtype=torch.float32 if mixed else None)
    compute = torch.autocast(lm.device.type, dtype=low) if mixed else contextlib.nullcontext()
    model = wrap_lora(lm.model, cfg) if cfg.method == "lora" else lm.model
    model.train()
    fmt = resolve_format(lm.tokenizer, cfg.prompt_format)
    instruction, response = TRAINED_FIELDS
    enc: list[Encoded] = training_pairs(lm.tokenizer, rows[instruction].to_list(), rows[response].to_list(), fmt, max_length)
    lengths = [len(e.ids) for e in enc]
    if cut := sum(1 for e in enc if e.response_cut):
        log.warning("fine-tune: %d of %d rows are longer than model.max_length %d: their responses are cut and "
                    "train without an end; raise max_length to train them whole", cut, len(enc), max_length)
    if prompts_cut := sum(1 for e in enc if e.prompt_cut):
        log.warning("fine-tune: %d of %d rows' prompts lose their first tokens to fit model.max_length %d (in the "
                    "chat format the template's opening with them); raise max_length to keep them", prompts_cut,
                    len(enc), max_length)
    rng = random.Random(cfg.seed)
    per_epoch = math.ceil(len(enc) / cfg.batch_size)
    total_steps = max(1, round(per_epoch * cfg.epochs))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    from transformers import get_cosine_schedule_with_warmup

    sched = get_cosine_schedule_with_warmup(opt, round(cfg.warmup_ratio * total_steps), total_steps)
    plan: list[list[int]] = []
    while len(plan) < total_steps:
        plan += grouped_batches(lengths, cfg.batch_size, rng)
    plan = plan[:total_steps]
    cap = cfg.micro_batch_tokens or (CPU_MICRO_BATCH_TOKENS if lm.device.type == "cpu" else math.inf)
    state = TrainState()
    resume = out_dir / "resume"
    if (found := resume_folder(resume)) is not None:
        state = load_resume(found, model, opt, sched)
        log.info("fine-tune: resuming at step %d/%d from %s", state.step, total_steps, found)
    t0 = time.perf_counter() - state.seconds
    last_save = time.perf_counter()
    progress = ProgressLog(f"fine-tune {len(enc)} rows ({fmt}, lr {cfg.lr:g}, {cfg.epochs:g} epochs)", total_steps,
                           start=state.step)
    for step in range(state.step + 1, total_steps + 1):
        batch = plan[step - 1]
        state.lrs.append(sched.get_last_lr()[0])
        pieces = micro_batches([enc[i] for i in batch], cap, lm.tokenizer.pad_token_id, lm.device)
        n_labels = max(1, sum(int((labels[:, 1:] != -100).sum()) for _, _, labels in pieces))
        loss = 0.0
        for ids, mask, labels in pieces:  # summed gradients: the update of the whole batch at once
            with compute:
                piece = response_token_nll(model, ids, mask, labels).sum() / n_labels
            piece.backward()
            loss += piece.item()
            state.real += int(mask.sum())
            state.padded += mask.numel()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        state.losses.append(loss)
        state.step = step
        if checkpoint_epochs and (step % per_epoch == 0 or step == total_steps):
            epoch = math.ceil(step / per_epoch)
            save_checkpoint(model, opt, out_dir / "checkpoints" / f"epoch-{epoch}", epoch, state.lrs[-per_epoch:])
        # A stop request (SIGTERM, Ctrl-C) saves this step's state first: the rerun goes on from here,
        # not from the last timed save, and after the last step it only writes the result.
        if STOP.is_set() or (step < total_steps and time.perf_counter() - last_save >= resume_every_s):
            state.seconds = time.perf_counter() - t0
            save_resume(resume, model, opt, sched, state)
            last_save = time.perf_counter()
        progress.update(step, f"loss {np.mean(state.losses[-10:]):.3f}")  # raises Stopped on a stop request
    seconds = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.method == "lora":
        save_adapter(model, out_dir / "adapter")
    else:
        model.save_pretrained(out_dir / "model")
        lm.tokenizer.save_pretrained(out_dir / "model")
    result = TrainResult(steps=total_steps, rows=len(enc), epochs=cfg.epochs, final_loss=float(np.mean(state.losses[-10:])),
                         seconds=seconds, real_tokens=state.real, padded_tokens=state.padded, prompt_format=fmt)
    (out_dir / TRAIN_RECORD).write_text(json.dumps({**asdict(result), "losses": state.losses}, indent=1))
    for d in (resume, *folder_siblings(resume)):
        shutil.rmtree(d, ignore_errors=True)
    return result


@dataclass
class TrainState:
    """Where a fine-tune stands after `step` steps: what a resumed run needs besides the tensors."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    real: int = 0
    padded: int = 0
    seconds: float = 0.0


def save_resume(folder: Path, model: torch.nn.Module, opt, sched, state: TrainState) -> None:
    """Trainable weights, optimizer and schedule state, the RNG and `state`, written to a fresh
    folder that replaces the last one whole, so a kill mid-write keeps the previous checkpoint."""
    trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    with atomic_folder(folder) as tmp:
        torch.save({"weights": trainable, "opt": opt.state_dict(), "sched": sched.state_dict(), "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []}, tmp / "tensors.pt")
        fsync(tmp / "tensors.pt")  # on the disk before the file that says the folder is whole
        with atomic_path(tmp / "state.json") as part:  # last, and whole or absent: a folder with it is whole
            part.write_text(json.dumps(asdict(state)))


def resume_folder(folder: Path) -> Path | None:
    """The newest whole resume state, moved into `folder`: a whole `.tmp` (its state.json is
    written last) is newer than `folder` when a kill fell between `save_resume`'s two renames, or
    before the first one. Moved at once, so the next save cannot delete the state resumed from."""
    tmp, old = folder_siblings(folder)
    if not (folder / "state.json").exists() and (tmp / "state.json").exists():
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder if (folder / "state.json").exists() else None


def load_resume(folder: Path, model: torch.nn.Module, opt, sched) -> TrainState:
    blob = torch.load(folder / "tensors.pt", weights_only=True)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, v in blob["weights"].items():
            params[n].copy_(v)
    opt.load_state_dict(blob["opt"])
    sched.load_state_dict(blob["sched"])
    torch.set_rng_state(blob["rng"])
    if blob.get("cuda_rng"):  # LoRA dropout on a GPU draws from CUDA's generator
        torch.cuda.set_rng_state_all(blob["cuda_rng"])
    return TrainState(**json.loads((folder / "state.json").read_text()))
