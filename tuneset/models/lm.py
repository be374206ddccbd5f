"""Tokenise instruction/response pairs once, batch them by length, and read per-example losses.

Prompt format: selectors score the plain text `instruction + " " + response`; fine-tuning and
evaluation may wrap the instruction in the model's chat template (`format_prompts`). The loss and
the scores only ever cover response tokens. Batches are length-sorted so padding costs almost
nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tuneset.progress import ProgressLog, check_stop

PROMPT_FORMATS = ("auto", "chat", "plain")


def resolve_format(tokenizer, fmt: str) -> str:
    """`auto` is the chat template where the tokenizer has one (an Instruct model was trained on
    it), else plain text; `chat` without a template is an error, not a silent fallback."""
    if fmt not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt format '{fmt}'; valid: {', '.join(PROMPT_FORMATS)}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if fmt == "auto":
        return "chat" if has_template else "plain"
    if fmt == "chat" and not has_template:
        raise ValueError("prompt format 'chat' needs a tokenizer with a chat template; use 'plain'")
    return fmt


def format_prompts(tokenizer, prompts: Sequence[str], fmt: str) -> tuple[list[str], str]:
    """Prompts as the model sees them, and the text between prompt and response: plain text joins
    them with a space; chat puts the instruction in a user turn and the response right after the
    assistant header, so the turn's end token (`response_end`) closes the response."""
    if resolve_format(tokenizer, fmt) == "plain":
        return list(prompts), " "
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts], ""


_PLACEHOLDER = "tuneset answer placeholder"


def response_end(tokenizer, fmt: str) -> int:
    """The token that closes a trained response. Plain text: the EOS. Chat: the first special
    token the template puts after an assistant turn's content, which is not always the EOS
    (Gemma's `<end_of_turn>`, Phi-3's `<|end|>`): trained to end with the EOS, such a model
    learns to close its turns as no conversation does."""
    eos = tokenizer.eos_token_id
    if resolve_format(tokenizer, fmt) == "plain":
        return eos
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": _PLACEHOLDER}],
                                             tokenize=False)
    except Exception:  # a template that refuses this conversation: the EOS, as before
        return eos
    at = text.rfind(_PLACEHOLDER)
    after = tokenizer(text[at + len(_PLACEHOLDER):], add_special_tokens=False)["input_ids"] if at >= 0 else []
    special = set(tokenizer.all_special_ids)
    return next((i for i in after if i in special), eos)


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    n_prompt: int  # the first n_prompt tokens are context; the rest are scored
    prompt_cut: int = 0  # prompt tokens `encode` cut from the left to fit max_length
    response_cut: int = 0  # response tokens (its end token first) `encode` cut from the right


def encode(
    tokenizer,
    prompts: Sequence[str | None],
    responses: Sequence[str],
    max_length: int = 512,
    add_eos: bool = False,
    sep: str = " ",
    end: int | None = None,
) -> list[Encoded]:
    """Encode (prompt, response) pairs; a None prompt scores the response alone after a start token.
    `sep` goes before each response (see `format_prompts`); `add_eos` closes it with `end` (default
    the EOS; a chat format's own, `response_end`).

    Over-long pairs lose prompt tokens from the left first (the response is what is scored)."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    resp_ids = tokenizer([sep + r for r in responses], add_special_tokens=False)["input_ids"]
    has_prompt = [p for p in prompts if p is not None]
    prompt_ids = iter(tokenizer(has_prompt, add_special_tokens=False)["input_ids"]) if has_prompt else iter(())
    out = []
    for p, r in zip(prompts, resp_ids):
        pid = next(prompt_ids) if p is not None else [start]
        rid = r + [tokenizer.eos_token_id if end is None else end] if add_eos else r
        if not rid:
            rid = [tokenizer.eos_token_id]
        keep = min(len(pid), max(max_length - len(rid), max_length // 2))
        whole_p, whole_r = len(pid), len(rid)
        pid = pid[len(pid) - keep:] if keep else pid[-1:]
        rid = rid[: max(1, max_length - len(pid))]
        out.append(Encoded(ids=pid + rid, n_prompt=len(pid), prompt_cut=whole_p - len(pid), response_cut=whole_r - len(rid)))
    return out


def training_pairs(tokenizer, instructions: Sequence[str], responses: Sequence[str], fmt: str,
                   max_length: int) -> list[Encoded]:
    """The sequences a fine-tune trains on: prompts in format `fmt`, each response closed by the
    format's end token (`response_end`). LESS takes its gradients on these same sequences, so that
    the warm-up's Adam state it applies belongs to them."""
    prompts, sep = format_prompts(tokenizer, instructions, fmt)
    return encode(tokenizer, prompts, responses, max_length, add_eos=True, sep=sep, end=response_end(tokenizer, fmt))


# Rows per forward of the per-row loss pass, by device. On a CPU one: a row's losses then do not
# depend on its batch mates (batched, SmolLM2's summed NLL moved by up to 7.6e-6 with the company a
# row kept), so a grown pool rescored from scratch equals its cached scores bit for bit. It computes
# no padding: faster where batches would carry much, up to 1.2x slower where little
# (benchmarks/README.md). A GPU keeps its batches: throughput is the point.
ROWS_PER_FORWARD = {"cpu": 1}


def length_batches(lengths: Sequence[int], max_tokens: int = 4096, max_batch: int = 64) -> list[list[int]]:
    """Index batches, longest first, each under `max_tokens` padded tokens."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches: list[list[int]] = []
    cur: list[int] = []
    width = 0
    for i in order.tolist():
        w = max(width, lengths[i])
        if cur and (w * (len(cur) + 1) > max_tokens or len(cur) >= max_batch):
            batches.append(cur)
            cur, w = [], lengths[i]
        cur.append(i)
        width = w
    if cur:
        batches.append(cur)
    return batches


def pad_batch(items: Sequence[Encoded], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and labels (-100 outside the response)."""
    width = max(len(e.ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    for row, e in enumerate(items):
        n = len(e.ids)
        ids[row, :n] = torch.tensor(e.ids)
        mask[row, :n] = 1
        labels[row, e.n_prompt:n] = ids[row, e.n_prompt:n]
    return ids.to(device), mask.to(device), labels.to(device)


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token NLL (0 where unlabelled), shape (batch, seq-1), from full logits."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    nll = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels.clamp_min(0), reduction="none")
    return nll * (shift_labels != -100)


def _decoder_and_head(model: torch.nn.Module):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    # Logits post-processed in forward() (Gemma's softcapping, Granite's and Cohere's scaling) are
    # not head(decoder(x)): such a model takes the plain path.
    if getattr(cfg, "final_logit_softcapping", None) or any(getattr(cfg, k, 1.0) not in (1.0, None)
                                                            for k in ("logits_scaling", "logit_scale")):
        return None
    try:
        decoder, head = base.get_decoder(), base.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    return None if decoder is None or head is None else (decoder, head)


def logits_at(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Logits at positions (rows[k], cols[k]) only, shape (k, vocab): the vocabulary projection
    (tokens x 49k vocab) dominates memory traffic on CPU, and most positions are never read."""
    parts = _decoder_and_head(model)
    if parts is None:
        return model(input_ids=ids, attention_mask=mask).logits[rows, cols]
    decoder, head = parts
    return head(decoder(input_ids=ids, attention_mask=mask).last_hidden_state[rows, cols])


@torch.no_grad()
def text_features(model: torch.nn.Module, tokenizer, texts: Sequence[str], max_length: int = 512,
                  max_tokens: int = 4096) -> np.ndarray:
    """Per text, the model's own reading of it: the last layer's state at the final token (what the
    model would answer from) next to the mean state of the layer two thirds up. For a linear probe:
    on the bench's sst2 and trec rows these found label flips far better than a sentence embedder
    (benchmarks/README.md). Long texts keep their last `max_length` tokens, where a prompt asks."""
    device = next(model.parameters()).device
    items = [Encoded(ids[-max_length:] or [tokenizer.eos_token_id], 0)
             for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder()
    out = None
    # One text a forward on a CPU, as the losses: a row's features then never depend on its batch
    # mates (2.4e-7 apart between batch budgets), so cached and fresh rows agree bit for bit.
    for batch in length_batches([len(e.ids) for e in items], max_tokens, ROWS_PER_FORWARD.get(device.type, 64)):
        ids, mask, _ = pad_batch([items[i] for i in batch], tokenizer.pad_token_id, device)
        states = decoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        mid = states[(2 * (len(states) - 1)) // 3]
        m = mask[..., None].to(mid.dtype)
        last = states[-1][torch.arange(len(batch), device=device), mask.sum(1) - 1]
        feats = torch.cat([last, (mid * m).sum(1) / m.sum(1)], 1).float().cpu().numpy()
        if out is None:
            out = np.zeros((len(items), feats.shape[1]), dtype=np.float32)
        out[batch] = feats
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def response_token_nll(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token NLL like `token_nll(model(...).logits, labels)`, but projected to the vocabulary
    only at response positions (prompts are most tokens)."""
    return nll_at_responses(labels, lambda rows, cols: logits_at(model, ids, mask, rows, cols))


def nll_at_responses(labels: torch.Tensor, logits_of) -> torch.Tensor:
    """Per-token NLL (batch, seq-1), 0 outside the response, from `logits_of(rows, cols)`: the
    logits predicting each labelled token, asked for only at those positions."""
    target = labels[:, 1:]
    keep = target != -100
    rows, cols = keep.nonzero(as_tuple=True)
    nll = torch.zeros(target.shape, dtype=torch.float32, device=labels.device)
    nll[keep] = F.cross_entropy(logits_of(rows, cols).float(), target[keep], reduction="none")
    return nll


@torch.inference_mode()
def response_nll(
    model: torch.nn.Module,
    encoded: Sequence[Encoded],
    pad_id: int,
    max_tokens: int = 4096,
    progress: ProgressLog | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Summed response NLL, response token count and the last token's NLL per example, in input
    order. With `encode(..., add_eos=True)` the last token is EOS: how sure the model is that the
    response is finished, which a truncated response fails. Advances `progress` by each row done:
    the caller owns it, so a pass split into cached parts logs one count over all of them."""
    device = next(model.parameters()).device
    total = np.zeros(len(encoded), dtype=np.float64)
    count = np.zeros(len(encoded), dtype=np.int64)
    last = np.zeros(len(encoded), dtype=np.float64)
    for batch in length_batches([len(e.ids) for e in encoded], max_tokens, ROWS_PER_FORWARD.get(device.type, 64)):
        ids, mask, labels = pad_batch([encoded[i] for i in batch], pad_id, device)
        nll = response_token_nll(model, ids, mask, labels)
        total[batch] = nll.sum(1).double().cpu().numpy()
        count[batch] = (labels[:, 1:] != -100).sum(1).cpu().numpy()
        ends = torch.tensor([len(encoded[i].ids) - 2 for i in batch], device=device)
        last[batch] = nll[torch.arange(len(batch), device=device), ends].double().cpu().numpy()
        check_stop()
        if progress:
            progress.update(progress.done + len(batch))
    return total, count, last


def _cache_kwarg(decoder: torch.nn.Module) -> str:
    """The forward's name for the key/value cache: `cache` from transformers 5.2x, which warns on
    (and will drop) the older `past_key_values`."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


@torch.inference_mode()
def shared_prompt_nll(
    model: torch.nn.Module,
    groups: Sequence[Sequence[Encoded]],
    pad_id: int,
    max_tokens: int = 4096,
    what: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """Summed response NLL and response token count of every item of `groups`, flattened in order,
    where the items of a group share their prompt (one question, several answer choices).

    Each prompt runs through the model once and its cached keys and values serve every choice: on
    a multiple-choice question the prompt is most of the tokens, so scoring each (prompt, choice)
    pair on its own ran the question 4 times. Same values as `response_nll` up to float rounding.
    A group whose items do not share their prompt tokens (truncation), or a model whose logits
    need its own forward, takes the pair-by-pair path."""
    sizes = [len(g) for g in groups]
    total, count = np.zeros(sum(sizes), dtype=np.float64), np.zeros(sum(sizes), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
    parts = _decoder_and_head(model)
    shared = [g for g, items in enumerate(groups) if items and parts is not None
              and len({tuple(e.ids[:e.n_prompt]) for e in items}) == 1 and items[0].n_prompt > 0]
    alone = sorted(set(range(len(groups))) - set(shared))
    if alone:
        flat = [(g, k) for g in alone for k in range(sizes[g])]
        s, n, _ = response_nll(model, [groups[g][k] for g, k in flat], pad_id, max_tokens)
        idx = [starts[g] + k for g, k in flat]
        total[idx], count[idx] = s, n
    if not shared:
        return total, count
    decoder, head = parts
    cache_kw, device = _cache_kwarg(decoder), next(model.parameters()).device
    progress = ProgressLog(what, len(shared), "prompts") if what else None
    # a batch's cost: the prompts, plus each choice's continuation over the same batch
    cost = [groups[g][0].n_prompt + sum(len(e.ids) - e.n_prompt for e in groups[g]) for g in shared]
    for batch in length_batches(cost, max_tokens):
        gs = [shared[b] for b in batch]
        prompts = [groups[g][0].ids[:groups[g][0].n_prompt] for g in gs]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(gs), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):  # left-padded: every prompt ends at the last column
            ids[row, width - len(p):] = torch.tensor(p)
            mask[row, width - len(p):] = 1
        ids, mask = ids.to(device), mask.to(device)
        out = decoder(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp_min(0), use_cache=True)
        cache, first = out.past_key_values, torch.log_softmax(head(out.last_hidden_state[:, -1]).float(), -1)
        plen = torch.tensor([len(p) for p in prompts], device=device)
        for j in range(max(sizes[g] for g in gs)):
            conts = [groups[g][j].ids[groups[g][j].n_prompt:] if j < sizes[g] else [pad_id] for g in gs]
            nll = -first[torch.arange(len(gs), device=device), torch.tensor([c[0] for c in conts], device=device)]
            longest = max(len(c) for c in conts)
            if longest > 1:  # tokens after the first: feed all but the last, read each next token
                cids = torch.full((len(gs), longest - 1), pad_id, dtype=torch.long)
                cmask = torch.zeros_like(cids)
                for row, c in enumerate(conts):
                    cids[row, :len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
                    cmask[row, :len(c) - 1] = 1
                cids, cmask = cids.to(device), cmask.to(device)
                pos = plen[:, None] + torch.arange(longest - 1, device=device)[None]
                hidden = decoder(input_ids=cids, attention_mask=torch.cat([mask, cmask], 1), position_ids=pos,
                                 use_cache=True, **{cache_kw: cache}).last_hidden_state
                cache.crop(-(longest - 1))  # back to the prompts alone for the next choice
                labels = torch.full((len(gs), longest), -100, dtype=torch.long)  # column k+1: what hidden[:, k] predicts
                for row, c in enumerate(conts):
                    labels[row, 1:len(c)] = torch.tensor(c[1:], dtype=torch.long)
                nll = nll + nll_at_responses(labels.to(device), lambda r, k: head(hidden[r, k])).sum(1)
            for row, g in enumerate(gs):
                if j < sizes[g]:
                    total[starts[g] + j], count[starts[g] + j] = float(nll[row]), len(conts[row])
        check_stop()
        if progress:
            progress.update(progress.done + len(gs))
    return total, count


@torch.inference_mode()
def next_token_logprobs(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str],
    token_ids: Sequence[int],
    max_length: int = 512,
    max_tokens: int = 4096,
) -> np.ndarray:
    """Log-probabilities of `token_ids` as the next token after each prompt, shape (n, len(token_ids)).

    One forward per batch, projected to the vocabulary at the last position only."""
    device = next(model.parameters()).device
    enc = [e[-max_length:] for e in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = np.zeros((len(enc), len(token_ids)), dtype=np.float64)
    want = torch.tensor(list(token_ids), device=device)
    for batch in length_batches([len(e) for e in enc], max_tokens):
        items = [Encoded(ids=enc[i], n_prompt=len(enc[i])) for i in batch]
        ids, mask, _ = pad_batch(items, pad, device)
        last = torch.tensor([len(enc[i]) - 1 for i in batch], device=device)
        logits = logits_at(model, ids, mask, torch.arange(len(batch), device=device), last)
        out[batch] = torch.log_softmax(logits.float(), -1)[:, want].double().cpu().numpy()
    return out


class _RowGumbel:
    """Logits processor: temperature sampling as argmax(logits / T + Gumbel noise), the noise drawn
    from one generator per sequence, so a row's samples do not depend on what it is batched with."""

    def __init__(self, seeds: Sequence[int], temperature: float):
        self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature = temperature

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        u = torch.stack([torch.rand(scores.shape[1], generator=g) for g in self.gens]).to(scores.device)
        gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1 - 1e-7)))
        return scores.float() / self.temperature + gumbel


def stop_tokens(model: torch.nn.Module, tokenizer) -> list[int]:
    """The tokens that end an answer: the tokenizer's end token and every one the model's
    generation config names (an Instruct model's end of turn can differ from its end of text)."""
    config = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    extra = [config] if isinstance(config, int) else list(config or [])
    return sorted({t for t in [tokenizer.eos_token_id, *extra] if t is not None})


@torch.inference_mode()
def generate(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 16,
    max_tokens: int = 4096,
    max_length: int = 512,
    num_samples: int = 1,
    temperature: float | None = None,
    seeds: Sequence[int] | None = None,
    what: str = "",
) -> list[list[str]]:
    """`num_samples` continuations per prompt, batched by length with left padding: greedy when
    `temperature` is None, else sampled with per-prompt `seeds` (reproducible under any batching).
    Logs progress as `what` when named."""
    from transformers import LogitsProcessorList

    device = next(model.parameters()).device
    enc = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    enc = [e[-max(1, max_length - max_new_tokens):] for e in enc]  # room for the answer, one prompt token at least
    seeds = list(seeds) if seeds is not None else list(range(len(prompts)))
    jobs = [(i, j) for i in range(len(prompts)) for j in range(num_samples if temperature is not None else 1)]
    out: list[list[str]] = [[] for _ in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    progress = ProgressLog(what, len(jobs), "generations") if what else None
    stop = stop_tokens(model, tokenizer)
    for batch in length_batches([len(enc[i]) + max_new_tokens for i, _ in jobs], max_tokens):
        width = max(len(enc[jobs[b][0]]) for b in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, b in enumerate(batch):
            e = enc[jobs[b][0]]
            ids[row, width - len(e):] = torch.tensor(e)
            mask[row, width - len(e):] = 1
        procs = None
        if temperature is not None:
            procs = LogitsProcessorList([_RowGumbel([seeds[jobs[b][0]] * 1009 + jobs[b][1] for b in batch], temperature)])
        gen = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
            do_sample=False, logits_processor=procs, pad_token_id=pad, eos_token_id=stop,
        )
        texts = tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
        for row, b in enumerate(batch):
            out[jobs[b][0]].append(texts[row])
        if progress:
            progress.update(progress.done + len(batch))
    return out


def generate_greedy(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 16,
    max_tokens: int = 4096,
    max_length: int = 512,
    what: str = "",
) -> list[str]:
    """Greedy continuation per prompt."""
    return [g[0] for g in generate(model, tokenizer, prompts, max_new_tokens, max_tokens, max_length, what=what)]
