"""Loss-based selectors under the reference model: perplexity and instruction-following difficulty."""

from __future__ import annotations

import numpy as np
import polars as pl

from tuneset.selectors.base import Selector, register, safe_exp


@register
class PerplexitySelector(Selector):
    """Perplexity of the response given the instruction. Lower is more fluent/expected,
    so it is the default direction; flip it in the policy to pick the surprising rows."""

    name = "perplexity"
    higher_is_better = False
    uses = frozenset({"lm"})

    def _score(self, rows: pl.DataFrame) -> pl.DataFrame:
        loss = self.ctx.response_losses(rows, conditioned=True)
        mean = loss["nll_sum"].to_numpy() / np.maximum(loss["n_tokens"].to_numpy(), 1)
        return pl.DataFrame({"id": rows["id"], "score": safe_exp(mean), "nll": mean})


@register
class IFDSelector(Selector):
    """Instruction-following difficulty (Li et al., Cherry LLM): ppl(response | instruction) /
    ppl(response). Near or above 1 the instruction does not help predict the response: hard rows
    or mismatched pairs; the paper keeps high-IFD rows below 1."""

    name = "ifd"
    uses = frozenset({"lm"})

    def _score(self, rows: pl.DataFrame) -> pl.DataFrame:
        cond = self.ctx.response_losses(rows, conditioned=True)
        free = self.ctx.response_losses(rows, conditioned=False)
        n = np.maximum(cond["n_tokens"].to_numpy(), 1)
        ppl_c = safe_exp(cond["nll_sum"].to_numpy() / n)
        ppl_u = safe_exp(free["nll_sum"].to_numpy() / np.maximum(free["n_tokens"].to_numpy(), 1))
        return pl.DataFrame({"id": rows["id"], "score": ppl_c / ppl_u, "ppl_conditioned": ppl_c, "ppl_response": ppl_u})
