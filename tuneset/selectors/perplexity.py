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
    """Instruction-following difficulty, ppl(response | instruction) / ppl(response), as
    Superfiltering (Li et al., 2024) writes it (Cherry LLM's code divides the mean losses instead,
    which orders rows somewhat differently). High: the instruction helps little, a row to learn
    from. At or above 1 it does not help at all, a mismatched pair, which both papers drop: such
    rows score minus their ratio, below every other row. `ratio` keeps the ratio itself."""

    name = "ifd"
    uses = frozenset({"lm"})
    revision = 2  # rows at or above 1 rank last, as the papers drop them

    def _score(self, rows: pl.DataFrame) -> pl.DataFrame:
        cond = self.ctx.response_losses(rows, conditioned=True)
        free = self.ctx.response_losses(rows, conditioned=False)
        n = np.maximum(cond["n_tokens"].to_numpy(), 1)
        ppl_c = safe_exp(cond["nll_sum"].to_numpy() / n)
        ppl_u = safe_exp(free["nll_sum"].to_numpy() / np.maximum(free["n_tokens"].to_numpy(), 1))
        ratio = ppl_c / ppl_u
        return pl.DataFrame({"id": rows["id"], "score": np.where(ratio < 1, ratio, -ratio), "ratio": ratio,
                             "ppl_conditioned": ppl_c, "ppl_response": ppl_u})
