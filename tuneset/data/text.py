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


# In an answer, punctuation is a space (SQuAD), except what makes a number another number: a minus
# sign before a digit and a decimal point between digits. A thousands comma is dropped outright.
_ANSWER_PUNCT = re.compile(r"(?<![\w.])-(?=\.?\d)|(?<=\d)\.(?=\d)|(?<![\w.])\.(?=\d)|([^\w\s])")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def normalise_answer(text: str) -> str:
    """An answer as exact match compares it (SQuAD-style): lower-case, NFKC, no punctuation or
    articles, single spaces; but "-7" is not "7" nor "3.14" "3 14" ("1,000" is "1000"). An answer
    made only of articles keeps them: "A", a multiple-choice letter, would otherwise normalise to
    "" and match an empty answer."""
    text = _THOUSANDS.sub("", unicodedata.normalize("NFKC", text).replace("\u2212", "-").lower())
    words = _ANSWER_PUNCT.sub(lambda m: " " if m.group(1) else m.group(0), text).split()
    return " ".join([w for w in words if w not in _ARTICLE_WORDS] or words)


def answers_match(prediction: str, gold: str) -> bool:
    """Exact match of a generated answer: the generation runs on past its answer, so it is cut to
    as many lines as the gold answer has before both are normalised."""
    lines = max(1, len(gold.strip().splitlines()))
    cut = "\n".join(prediction.strip().splitlines()[:lines])
    if not (want := normalise_answer(gold)):  # a gold of punctuation alone ("?") is compared as written, not as ""
        return cut.strip() == gold.strip()
    return normalise_answer(cut) == want
