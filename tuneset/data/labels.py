"""Answer spaces: the labels a closed-label source uses, and mapping free text into a row's space.

A correction (a relabel, a model's rewrite) is only a correction if it is an answer the row could
have: one of its `choices`, one of its source's labels, or text in the original's format. A model
answer that pastes the option list, or names a label no row of the source uses, is not one."""

from __future__ import annotations

import random
import re
from collections import Counter

import polars as pl

from tuneset.data.io import iter_records, parse_row, pool_files
from tuneset.data.text import normalise
from tuneset.errors import DataError, TunesetError

_MARKER = re.compile(r"^\W*(#+|answer\s*:|final answer\s*:)", re.IGNORECASE)


def is_closed_label(labels: list[str], max_classes: int = 200, min_rows_per_class: float = 5.0) -> bool:
    """A source is closed-label when its normalised responses take 2..`max_classes` values, each
    used on average by at least `min_rows_per_class` rows (classification, not free text)."""
    n = len(set(labels))
    return 2 <= n <= max_classes and len(labels) >= min_rows_per_class * n


def label_sets(sources: list[str], responses: list[str], max_classes: int = 200, min_rows_per_class: float = 5.0) -> dict[str, list[str]]:
    """source -> its labels (each as most often written), for the closed-label sources only."""
    by_source: dict[str, list[str]] = {}
    for s, r in zip(sources, responses):
        by_source.setdefault(s, []).append(r)
    out = {}
    for s, rs in by_source.items():
        if is_closed_label([normalise(r) for r in rs], max_classes, min_rows_per_class):
            spelled: dict[str, Counter] = {}
            for r in rs:
                spelled.setdefault(normalise(r), Counter())[r] += 1
            out[s] = sorted(c.most_common(1)[0][0] for c in spelled.values())
    return out


def to_answer_space(text: str, space: list[str]) -> str | None:
    """The one answer of `space` that `text` gives: equal after normalising, or the only one its
    first line names as whole words ("The answer is B" -> "B"); None when it names none or
    several (an answer that lists the options is no answer)."""
    norm = {normalise(a): a for a in space}
    first = normalise(text.strip().split("\n", 1)[0])
    if first in norm:
        return norm[first]
    hits = {a for n, a in norm.items() if n and f" {n} " in f" {first} "}
    return hits.pop() if len(hits) == 1 else None


def same_format(original: str, proposal: str, max_ratio: float = 3.0) -> bool:
    """The proposal keeps the original's shape: one line stays one line, a final-answer marker
    (`#### 42`, `Answer: ...`) is kept, and the length stays within `max_ratio` of the original's."""
    o, p = original.strip(), proposal.strip()
    if not p or ("\n" in o) != ("\n" in p):
        return False
    o_last, p_last = o.rsplit("\n", 1)[-1], p.rsplit("\n", 1)[-1]
    o_mark, p_mark = _MARKER.match(o_last), _MARKER.match(p_last)
    if o_mark and (not p_mark or p_mark.group(1).lower() != o_mark.group(1).lower()):
        return False
    return 1 / max_ratio <= len(p) / max(len(o), 1) <= max_ratio


def known_answer_pairs(known: dict[str, pl.DataFrame], seed: int = 0) -> pl.DataFrame:
    """Rows whose answers are known (the target tasks' dev rows), each as given (`correct`) and
    spoiled the ways curation must catch: another of its choices (a wrong answer), another row's
    response (shuffled) and its first half (truncated). A judge that cannot tell these apart
    should not decide which pool rows are wrong."""
    rng = random.Random(seed)
    out: list[dict] = []
    for task, rows in sorted(known.items()):
        recs = rows.to_dicts()
        for r in recs:
            base = {"source": task, "instruction": r["instruction"], "choices": r.get("choices")}
            out.append({**base, "id": f"{task}/{r['id']}/given", "response": r["response"], "correct": True, "spoiled": ""})
            wrong = [c for c in (r.get("choices") or []) if normalise(c) != normalise(r["response"])]
            if wrong:
                out.append({**base, "id": f"{task}/{r['id']}/wrong", "response": rng.choice(wrong), "correct": False,
                            "spoiled": "wrong choice"})
            others = [o["response"] for o in recs if normalise(o["response"]) != normalise(r["response"])]
            if others and not wrong:
                out.append({**base, "id": f"{task}/{r['id']}/shuffled", "response": rng.choice(others), "correct": False,
                            "spoiled": "shuffled"})
            words = r["response"].split()
            if len(words) >= 4:
                out.append({**base, "id": f"{task}/{r['id']}/truncated", "response": " ".join(words[: len(words) // 2]),
                            "correct": False, "spoiled": "truncated"})
    return pl.DataFrame(out, schema=KNOWN_SCHEMA)


KNOWN_SCHEMA = {"id": pl.String, "source": pl.String, "instruction": pl.String, "response": pl.String,
                "choices": pl.List(pl.String), "correct": pl.Boolean, "spoiled": pl.String}


def load_judge_rows(path: str, columns: dict[str, str] | None = None) -> pl.DataFrame:
    """Rows whose verdict the user knows: any row shape the pool accepts (with the recipe's
    `columns` mapping) plus `correct` (true or false) on every row, in `known_answer_pairs`' shape. A golden set from the user's own domain
    says what the target tasks' dev rows cannot: a judge that spots shuffled or truncated answers
    may still be at chance on a wrong solution to a maths problem."""
    out: list[dict] = []
    seen: dict[str, tuple[str, int]] = {}
    for file in pool_files(path):
        auto: dict[str, int] = {}
        for line, rec in iter_records(file):
            if isinstance(rec, DataError):
                raise rec
            correct = rec.pop("correct", None)
            if not isinstance(correct, bool):
                raise DataError(str(file), line, "correct", f"must be true or false (the row's known verdict), got {correct!r}")
            ex = parse_row(file, line, rec, columns, auto)
            if ex.id in seen:
                raise DataError(str(file), line, "id", f"repeats the id of {seen[ex.id][0]} line {seen[ex.id][1]}")
            seen[ex.id] = (str(file), line)
            out.append({"id": ex.id, "source": ex.source, "instruction": ex.instruction, "response": ex.response,
                        "choices": ex.choices, "correct": correct, "spoiled": "" if correct else "known wrong"})
    verdicts = {r["correct"] for r in out}
    if verdicts != {True, False}:
        raise TunesetError(f"{path}: curate.judge_rows needs rows with correct: true and rows with correct: false "
                           f"(found only {'true' if True in verdicts else 'false' if verdicts else 'no rows'}); "
                           "the gate measures how well the judge tells them apart")
    return pl.DataFrame(out, schema=KNOWN_SCHEMA)
