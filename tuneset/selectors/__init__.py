"""Selectors: one contract, one registry. Importing this package registers the built-ins."""

from tuneset.selectors import baselines, confidence, distribution, diversity, embedding, label_quality, less, perplexity, rewrite  # noqa: F401  (registration)
from tuneset.selectors.base import (
    Selector,
    get_selector,
    make_selector,
    register,
    selector_names,
    validate_scores,
)
from tuneset.selectors.context import ScoringContext

__all__ = ["ScoringContext", "Selector", "get_selector", "make_selector", "register", "selector_names", "validate_scores"]
