"""Text normalisers shared by every layer that compares text: dedup and decontamination, the
selectors that match labels or answers, and exact-match evaluation."""

from __future__ import annotations

import re
import unicodedata

_WS = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise(text: str) -> str:
    """Case-, whitespace- and punctuation-insensitive form used for matching rows."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _WS.sub(" ", _PUNCT.sub(" ", text)).strip()


def normalise_answer(text: str) -> str:
    """An answer as exact match compares it: first line, lower-case, no punctuation or articles,
    single spaces (SQuAD-style)."""
    line = text.strip().split("\n", 1)[0].lower()
    line = _PUNCT.sub(" ", line)
    return " ".join(_ARTICLES.sub(" ", line).split())
