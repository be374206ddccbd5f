"""Text normalisers shared by every layer that compares text: dedup and decontamination, the
selectors that match labels or answers, and exact-match evaluation."""

from __future__ import annotations

import re
import unicodedata

_WS = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")
_ARTICLE_WORDS = frozenset({"a", "an", "the"})


def normalise(text: str) -> str:
    """Case-, whitespace- and punctuation-insensitive form used for matching rows. Invisible
    format characters (a soft hyphen or zero-width space inside a word, common in web text) are
    removed, not read as a space; case folds fully ("STRASSE" matches "Straße")."""
    text = "".join(ch for ch in unicodedata.normalize("NFKC", text) if unicodedata.category(ch) != "Cf").casefold()
    return _WS.sub(" ", _PUNCT.sub(" ", text)).strip()


def normalise_answer(text: str) -> str:
    """An answer as exact match compares it (SQuAD-style): lower-case, NFKC, no punctuation or
    articles, single spaces. An answer made only of articles keeps them: "A", a multiple-choice
    letter, would otherwise normalise to "" and match an empty answer."""
    words = _PUNCT.sub(" ", unicodedata.normalize("NFKC", text).lower()).split()
    return " ".join([w for w in words if w not in _ARTICLE_WORDS] or words)


def answers_match(prediction: str, gold: str) -> bool:
    """Exact match of a generated answer: the generation runs on past its answer, so it is cut to
    as many lines as the gold answer has before both are normalised."""
    lines = max(1, len(gold.strip().splitlines()))
    return normalise_answer("\n".join(prediction.strip().splitlines()[:lines])) == normalise_answer(gold)
