"""Supervised fine-tuning loop.

A short explicit loop rather than `transformers.Trainer`: we need response-only loss on our own
encoding, length-grouped batches (random batching spent over half its tokens on padding here),
and the optimizer state at hand for gradient-based selectors. Warm-up plus cosine decay at a
gentle rate: a constant 5e-4 made small runs collapse onto one class.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from tuneset.data.store import ArtifactStore
from tuneset.models.lm import Encoded, encode, format_prompts, pad_batch, resolve_format, response_token_nll
from tuneset.models.loading import load_lm
from tuneset.progress import ProgressLog
from tuneset.recipe import FinetuneConfig


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


def save_checkpoint(model: torch.nn.Module, opt: torch.optim.Optimizer, folder: Path, epoch: int, lrs: list[float]) -> None:
    """Adapter plus Adam moments by parameter name and the epoch's mean learning rate: what LESS's
    Adam-aware gradient features need from each warm-up epoch."""
    from safetensors.torch import save_file

    model.save_pretrained(folder / "adapter")
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
    store: ArtifactStore,
    out_dir: Path,
    max_length: int = 256,
    device: str = "auto",
    show_progress: bool = True,
    checkpoint_epochs: bool = False,
) -> TrainResult:
    """Fine-tune `model_name` on `rows`; writes `adapter/` (LoRA) or `model/` (full) into out_dir,
    and with `checkpoint_epochs` a `checkpoints/epoch-<k>/` (see `save_checkpoint`) per epoch."""
    seed_everything(cfg.seed)
    lm = load_lm(model_name, store, device)
    model = wrap_lora(lm.model, cfg) if cfg.method == "lora" else lm.model
    model.train()
    fmt = resolve_format(lm.tokenizer, cfg.prompt_format)
    prompts, sep = format_prompts(lm.tokenizer, rows["instruction"].to_list(), fmt)
    enc: list[Encoded] = encode(lm.tokenizer, prompts, rows["response"].to_list(), max_length, add_eos=True, sep=sep)
    lengths = [len(e.ids) for e in enc]
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
    losses: list[float] = []
    real = padded = 0
    lrs: list[float] = []
    t0 = time.perf_counter()
    progress = ProgressLog(f"fine-tune {len(enc)} rows ({fmt}, lr {cfg.lr:g}, {cfg.epochs:g} epochs)", total_steps)
    with Progress(TextColumn("fine-tune"), BarColumn(), TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
                  TimeRemainingColumn(), disable=not (show_progress and sys.stderr.isatty()), transient=True) as bar:
        task = bar.add_task("train", total=total_steps, loss=float("nan"))
        for step, batch in enumerate(plan, 1):
            lrs.append(sched.get_last_lr()[0])
            ids, mask, labels = pad_batch([enc[i] for i in batch], lm.tokenizer.pad_token_id, lm.device)
            nll = response_token_nll(model, ids, mask, labels)
            loss = nll.sum() / (labels[:, 1:] != -100).sum().clamp_min(1)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            real += int(mask.sum())
            padded += mask.numel()
            bar.update(task, advance=1, loss=float(np.mean(losses[-10:])))
            progress.update(step, f"loss {np.mean(losses[-10:]):.3f}")
            if checkpoint_epochs and (step % per_epoch == 0 or step == total_steps):
                epoch = math.ceil(step / per_epoch)
                save_checkpoint(model, opt, out_dir / "checkpoints" / f"epoch-{epoch}", epoch, lrs[-per_epoch:])
    seconds = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir / ("adapter" if cfg.method == "lora" else "model"))
    if cfg.method == "full":
        lm.tokenizer.save_pretrained(out_dir / "model")
    result = TrainResult(steps=total_steps, rows=len(enc), epochs=cfg.epochs, final_loss=float(np.mean(losses[-10:])),
                         seconds=seconds, real_tokens=real, padded_tokens=padded, prompt_format=fmt)
    (out_dir / "train.json").write_text(json.dumps({**asdict(result), "losses": losses}, indent=1))
    return result
