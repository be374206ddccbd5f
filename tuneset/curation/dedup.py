"""Exact deduplication and decontamination against evaluation rows, each drop with its reason."""

from __future__ import annotations

import polars as pl

from tuneset.data.text import normalise


def exact_duplicates(rows: pl.DataFrame) -> dict[str, str]:
    """id -> id of the first row with the same normalised instruction and response."""
    first: dict[tuple[str, str], str] = {}
    dup: dict[str, str] = {}
    for i, ins, resp in rows.select("id", "instruction", "response").iter_rows():
        key = (normalise(ins), normalise(resp))
        if key in first:
            dup[i] = first[key]
        else:
            first[key] = i
    return dup


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = text.split()
    return {tuple(words[j:j + n]) for j in range(len(words) - n + 1)}


def contaminated(rows: pl.DataFrame, eval_rows: dict[str, pl.DataFrame], ngram: int | None = None) -> dict[str, str]:
    """id -> 'task/id' of an evaluation row whose instruction it matches (normalised exact match,
    or a shared word n-gram when `ngram` is set)."""
    exact: dict[str, str] = {}
    grams: dict[tuple[str, ...], str] = {}
    for task, frame in eval_rows.items():
        for i, ins in frame.select("id", "instruction").iter_rows():
            norm = normalise(ins)
            exact.setdefault(norm, f"{task}/{i}")
            if ngram:
                for g in _ngrams(norm, ngram):
                    grams.setdefault(g, f"{task}/{i}")
    hits: dict[str, str] = {}
    for i, ins in rows.select("id", "instruction").iter_rows():
        norm = normalise(ins)
        if norm in exact:
            hits[i] = exact[norm]
        elif ngram:
            for g in _ngrams(norm, ngram):
                if g in grams:
                    hits[i] = grams[g]
                    break
    return hits
