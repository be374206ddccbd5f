"""Exact deduplication and decontamination against evaluation rows, each drop with its reason."""

from __future__ import annotations

from collections import Counter

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


def contaminated(rows: pl.DataFrame, eval_rows: dict[str, pl.DataFrame], ngram: int | None = None,
                 template_rows: int = 3) -> dict[str, str]:
    """id -> which evaluation row it leaks and how: the same normalised instruction, or (with
    `ngram`) a shared word n-gram.

    An n-gram found in `template_rows` or more rows, evaluation and candidate rows together (and
    in 1% of them, when many), is phrasing, not a leak: a prompt template ("is the sentiment
    of this product review positive or negative") or a stock phrase. Matching on those dropped every
    training row that asks the same question. A copied evaluation row is still caught: by its
    instruction, by the n-grams only it has, or, repeated by up to PHRASE_ROWS - 1 pool rows, by
    holding at least `COPY_SHARE` of the evaluation row's own n-grams (those touching no word its
    task's rows repeat, as their template, nor a phrase PHRASE_ROWS pool rows share). Such copies
    never count towards a template."""
    exact: dict[str, str] = {}
    grams: dict[tuple[str, ...], str] = {}
    in_eval: dict[tuple[str, ...], int] = {}
    evals: dict[str, str] = {}
    for task, frame in eval_rows.items():
        for i, ins in frame.select("id", "instruction").iter_rows():
            norm, where = normalise(ins), f"{task}/{i}"
            exact.setdefault(norm, where)
            evals[where] = norm
            for g in _ngrams(norm, ngram) if ngram else ():
                grams.setdefault(g, where)
                in_eval[g] = in_eval.get(g, 0) + 1
    cand = [(i, normalise(ins)) for i, ins in rows.select("id", "instruction").iter_rows()]
    hits = {i: f"{exact[norm]} (same instruction)" for i, norm in cand if norm in exact}
    limit = max(template_rows, 0.01 * (len(evals) + len(cand)))
    shared = {i: _ngrams(norm, ngram) & grams.keys() for i, norm in cand if i not in hits} if ngram else {}
    in_all = Counter(g for s in shared.values() for g in s)
    # Phrasing however the rows hold it: the evaluation rows' own template, and a stock phrase
    # PHRASE_ROWS candidate rows share. Each evaluation row's own n-grams touch neither.
    phrasing = {g for g, k in in_eval.items() if k >= limit} | {g for g, k in in_all.items() if k >= max(PHRASE_ROWS, limit)}
    own = {where: set(_content_ngrams(norm.split(), ngram, phrasing)) for where, norm in evals.items()} if ngram else {}
    copies = {i: c for i, s in shared.items() if (c := _copied_row(s, own, grams))}
    hits.update(copies)
    in_pool = Counter(g for i, s in shared.items() if i not in copies for g in s)
    templates = {g for g, k in in_eval.items() if k + in_pool.get(g, 0) >= limit}
    for i, norm in cand if ngram else ():
        for g in () if i in hits else _content_ngrams(norm.split(), ngram, templates):
            if g in grams:
                hits[i] = f"{grams[g]} (shares the {ngram}-gram '{' '.join(g)}')"
                break
    return hits


COPY_SHARE = 0.5  # of an evaluation row's own n-grams a candidate holds to be its copy
PHRASE_ROWS = 10  # candidate rows sharing an n-gram that make it a stock phrase, not a leak copied that often


def _copied_row(shared: set[tuple[str, ...]], own: dict[str, set[tuple[str, ...]]],
                grams: dict[tuple[str, ...], str]) -> str | None:
    """The evaluation row whose own n-grams (its task's template set aside) a candidate mostly
    holds, with how many: a copy of it under any wrapper, however often the pool repeats it."""
    for where in sorted({grams[g] for g in shared}):
        mine = own[where]
        k = len(shared & mine)
        if mine and k >= COPY_SHARE * len(mine):
            return f"{where} (holds {k} of its {len(mine)} own {len(next(iter(mine)))}-grams)"
    return None


def _content_ngrams(words: list[str], n: int, templates: set[tuple[str, ...]]):
    """The n-grams of `words` that touch no word of a template n-gram: a window straddling the end
    of a template and the start of the content ("... positive or negative review the desk lamp")
    is still mostly template."""
    covered = [False] * len(words)
    for j in range(len(words) - n + 1):
        if tuple(words[j:j + n]) in templates:
            covered[j:j + n] = [True] * n
    for j in range(len(words) - n + 1):
        if not any(covered[j:j + n]):
            yield tuple(words[j:j + n])
