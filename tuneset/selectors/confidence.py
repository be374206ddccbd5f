"""Confidence that a given response is right, from the reference model alone (BSDetector-style,
as CLEAR uses it): no stronger model is needed than the one being fine-tuned.

Each component is its own column, in [0, 1], so a user can see *why* a row scored low:

- `likelihood` (cheap, two forward passes): the geometric mean of
  `p_relevant = sigmoid(log p(response | instruction) - log p(response))`, the posterior that the
  response belongs to this instruction rather than to any other, and `p_end`, the model's
  probability that the response is finished (truncation). Any question prefix raises a response's
  likelihood, so on SmolLM2-135M a shuffled response still scores p_relevant 0.99 (6 of 6 in a
  selector audit, stop 34): `p_end` catches truncation, `relevance` catches shuffled pairs.
- `relevance` (cheap, embeddings): cosine between the instruction's and the response's embedding,
  as (1 + cos) / 2: a response written for another instruction (shuffled) lands far away.
- `reflection`: ask the model whether the response is correct and read P(Yes) against P(No).
- `consistency`: sample answers at a temperature and measure how well they agree with the given
  response (token F1 on normalised words: exact match for short answers, overlap for long ones).

`score` is the geometric mean of the chosen components (any one near 0 pulls it down), a ranking
for policies; filters should read the component columns, whose meaning is plain. Generation makes
`consistency` the costly one.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from tuneset.data.fingerprint import fingerprint
from tuneset.data.text import normalise
from tuneset.models.lm import generate, next_token_logprobs
from tuneset.selectors.base import Selector, register

Component = Literal["likelihood", "relevance", "reflection", "consistency"]

log = logging.getLogger("tuneset.confidence")

REFLECTION_TEMPLATE = "{instruction}\nProposed answer: {response}\nIs the proposed answer correct? Answer Yes or No.\nAnswer:"


class ConfidenceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    components: list[Component] = Field(default=["likelihood", "relevance", "reflection", "consistency"], min_length=1)
    samples: int = Field(default=4, ge=1)  # sampled answers per row for `consistency`
    temperature: float = Field(default=0.8, gt=0)
    max_new_tokens: int = Field(default=48, ge=1)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))


def token_f1(a: str, b: str) -> float:
    """SQuAD-style token F1 on normalised words; 1.0 for two empty strings."""
    ta, tb = normalise(a).split(), normalise(b).split()
    if not ta or not tb:
        return float(ta == tb)
    common = sum((Counter(ta) & Counter(tb)).values())
    if common == 0:
        return 0.0
    p, r = common / len(ta), common / len(tb)
    return 2 * p * r / (p + r)


def first_token(tokenizer, word: str) -> int:
    return tokenizer(word, add_special_tokens=False)["input_ids"][0]


@register
class ConfidenceSelector(Selector):
    """How confident the reference model is that the given response is right (higher: keep)."""

    name = "confidence"
    judges = True
    Params = ConfidenceParams
    # sampling is seeded per row id: reproducible without a global seed
    uses = frozenset({"lm", "embedder", "batches"})
    # token F1 on casefolded words, invisible characters removed (data.text.normalise) (2); a response cut
    # at max_length neither reads a content token as its end nor compares unequal token counts (3)
    revision = 3

    def _score(self, rows: pl.DataFrame) -> pl.DataFrame:
        comps = list(dict.fromkeys(self.params.components))
        cols: dict[str, np.ndarray] = {}
        for comp in comps:
            cols.update(getattr(self, f"_{comp}")(rows))
        parts = np.stack([cols[c] for c in comps])
        score = np.exp(np.log(np.clip(parts, 1e-12, 1.0)).mean(0))
        return pl.DataFrame({"id": rows["id"], "score": score, **cols})

    def _likelihood(self, rows: pl.DataFrame) -> dict[str, np.ndarray]:
        cond = self.ctx.response_losses(rows, conditioned=True, add_eos=True)
        free = self.ctx.response_losses(rows, conditioned=False)
        c_sum, c_n, c_last = (cond[c].to_numpy() for c in ("nll_sum", "n_tokens", "nll_last"))
        f_sum, f_n = free["nll_sum"].to_numpy(), np.maximum(free["n_tokens"].to_numpy(), 1)
        # A response longer than max_length is cut, its end token first: the conditioned pass then
        # ends on a content token and scores fewer response tokens than the response-alone pass.
        whole = c_n == f_n + 1
        if (cut := int((~whole).sum())):
            log.warning("confidence: %d of %d responses are cut at model.max_length %d: their p_end is not measured "
                        "(1.0; likelihood is p_relevant alone) and p_relevant compares per-token losses", cut, len(whole),
                        self.ctx.max_length)
        body = np.where(whole, c_sum - c_last, c_sum)  # response tokens, the end token excluded
        n = np.maximum(np.where(whole, c_n - 1, c_n), 1)
        # log p(r | x) - log p(r) over the conditioned pass's response tokens: summed where both passes
        # saw the whole response (per-token means times n are then the sums), per-token means otherwise
        pmi = (f_sum / f_n - body / n) * n
        p_relevant = sigmoid(pmi)
        p_end = np.where(whole, np.exp(-c_last), 1.0)  # 1.0 where not measured: a filter on it keeps the row
        return {
            # the geometric mean of what was measured: p_relevant alone for a cut response, so an unseen
            # end neither lifts it above rows whose end was read nor drags it below
            "likelihood": np.where(whole, np.sqrt(p_relevant * p_end), p_relevant),
            "p_relevant": p_relevant,
            "p_end": p_end,
            "pmi_per_token": pmi / n,
            "p_token": np.exp(-body / n),
        }

    def _relevance(self, rows: pl.DataFrame) -> dict[str, np.ndarray]:
        ins = self.ctx.embeddings(rows["instruction"].to_list())
        resp = self.ctx.embeddings(rows["response"].to_list())
        cos = np.clip((ins * resp).sum(1).astype(np.float64), -1.0, 1.0)
        return {"relevance": (1.0 + cos) / 2.0}

    def _reflection(self, rows: pl.DataFrame) -> dict[str, np.ndarray]:
        lm = self.ctx.lm()
        prompts = [REFLECTION_TEMPLATE.format(instruction=i, response=r)
                   for i, r in rows.select("instruction", "response").iter_rows()]
        words = [" Yes", " yes", " No", " no"]
        lp = next_token_logprobs(lm.model, lm.tokenizer, prompts, [first_token(lm.tokenizer, w) for w in words],
                                 self.ctx.max_length, self.ctx.max_batch_tokens)
        p = np.exp(lp)
        return {"reflection": (p[:, 0] + p[:, 1]) / np.maximum(p.sum(1), 1e-30)}

    def _consistency(self, rows: pl.DataFrame) -> dict[str, np.ndarray]:
        lm = self.ctx.lm()
        seeds = [int(fingerprint("consistency", i)[:8], 16) for i in rows["id"].to_list()]
        samples = generate(lm.model, lm.tokenizer, rows["instruction"].to_list(), self.params.max_new_tokens,
                           self.ctx.max_batch_tokens, self.ctx.max_length, self.params.samples,
                           self.params.temperature, seeds)
        cap = self.params.max_new_tokens
        agree = []
        for given, outs in zip(rows["response"].to_list(), samples):
            # Compare against the part of the response a sample of `cap` tokens could reach.
            ref = " ".join(given.split()[: max(1, int(cap * 0.75))])
            agree.append(np.mean([token_f1(o, ref) for o in outs]))
        return {"consistency": np.asarray(agree, dtype=np.float64)}
