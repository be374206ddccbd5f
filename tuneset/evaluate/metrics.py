"""Per-example evaluation: every metric returns one row per test example, so strategies can be
compared pairwise on the same rows rather than by their means alone."""

from __future__ import annotations

import numpy as np
import polars as pl

from tuneset.data.text import normalise_answer
from tuneset.errors import DataError
from tuneset.models.lm import encode, format_prompts, generate_greedy, response_nll
from tuneset.models.loading import LoadedLM
from tuneset.recipe import TaskSpec


def _choices(task: TaskSpec, rows: pl.DataFrame) -> list[list[str]]:
    out = [task.choices] * rows.height if task.choices else rows["choices"].to_list()
    for line, (c, r) in enumerate(zip(out, rows["response"].to_list()), start=1):
        if not c:
            raise DataError(str(task.test), line, "choices", f"task '{task.name}' uses choice_accuracy but the row has no choices")
        if r not in c:
            raise DataError(str(task.test), line, "response", "is not one of the row's choices")
    return out


def evaluate_task(lm: LoadedLM, task: TaskSpec, rows: pl.DataFrame, max_length: int = 256,
                  max_batch_tokens: int = 4096, max_new_tokens: int = 16, prompt_format: str = "plain") -> pl.DataFrame:
    """Columns: id, score (1/0 correct, or -loss for target_loss), loss (gold response NLL/token), prediction.
    `prompt_format` must be the one the model was fine-tuned with (`TrainResult.prompt_format`)."""
    tok, pad = lm.tokenizer, lm.tokenizer.pad_token_id
    prompts, sep = format_prompts(tok, rows["instruction"].to_list(), prompt_format)
    gold = rows["response"].to_list()
    if task.metric == "choice_accuracy":
        choices = _choices(task, rows)
        flat_p = [p for p, cs in zip(prompts, choices) for _ in cs]
        flat_c = [c for cs in choices for c in cs]
        c_sum, c_n, _ = response_nll(lm.model, encode(tok, flat_p, flat_c, max_length, sep=sep), pad, max_batch_tokens,
                                     what=f"evaluate {task.name}: choices")
        preds, loss, k = [], np.zeros(rows.height), 0
        for row, (cs, g) in enumerate(zip(choices, gold)):
            preds.append(cs[int(np.argmin(c_sum[k:k + len(cs)]))])  # highest summed log-likelihood
            j = k + cs.index(g)  # the gold response is one of the choices: its loss is already here
            loss[row] = c_sum[j] / max(c_n[j], 1)
            k += len(cs)
        score = np.array([float(p == g) for p, g in zip(preds, gold)])
        return pl.DataFrame({"id": rows["id"], "score": score, "loss": loss, "prediction": preds})
    g_sum, g_n, _ = response_nll(lm.model, encode(tok, prompts, gold, max_length, sep=sep), pad, max_batch_tokens,
                                 what=f"evaluate {task.name}: gold loss")
    loss = g_sum / np.maximum(g_n, 1)
    if task.metric == "exact_match":
        preds = generate_greedy(lm.model, tok, prompts, max_new_tokens, max_batch_tokens, max_length,
                                what=f"evaluate {task.name}: generate")
        score = np.array([float(normalise_answer(p) == normalise_answer(g)) for p, g in zip(preds, gold)])
    else:
        preds = [""] * rows.height
        score = -loss
    return pl.DataFrame({"id": rows["id"], "score": score, "loss": loss, "prediction": preds})
