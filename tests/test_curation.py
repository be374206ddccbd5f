from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from tuneset.curation.audit import audit_frame, check_accounting, summary_by_source
from tuneset.curation.curate import curate_rows
from tuneset.curation.dedup import contaminated, exact_duplicates, normalise
from tuneset.data.io import load_rows
from tuneset.errors import TunesetError, UnknownNameError
from tuneset.recipe import CurateConfig, FilterRule

OFF = CurateConfig(dedup=False, decontaminate=False)


def _rows(*recs: tuple[str, str, str, str]) -> pl.DataFrame:
    return pl.DataFrame(
        {"id": [r[0] for r in recs], "source": [r[1] for r in recs],
         "instruction": [r[2] for r in recs], "response": [r[3] for r in recs]}
    )


def _eval(**tasks: list[tuple[str, str]]) -> dict[str, pl.DataFrame]:
    return {t: pl.DataFrame({"id": [i for i, _ in rs], "instruction": [q for _, q in rs]}) for t, rs in tasks.items()}


def _reasons(audit: pl.DataFrame) -> dict[str, tuple[str, str]]:
    return {i: (a, r) for i, a, r in audit.select("id", "action", "reason").iter_rows()}


def test_normalise_ignores_case_space_and_punctuation():
    assert normalise("  What's the\tCAPITAL of  France?! ") == "what s the capital of france"
    assert normalise("ﬁne") == "fine"
    # A soft hyphen or zero-width space inside a word hid a copy of an evaluation row; lower() left ß.
    assert normalise("The capi\u200btal of Fran\u00adce") == normalise("the capital of france") == "the capital of france"
    assert normalise("STRASSE") == normalise("Straße")


def test_duplicates_name_the_first_row():
    rows = _rows(
        ("a", "s", "What is 2+2?", "4"),
        ("b", "s", "what is 2 + 2", "4."),
        ("c", "s", "What is 2+2?", "5"),
        ("d", "t", "WHAT IS 2+2?", " 4 "),
    )
    assert exact_duplicates(rows) == {"b": "a", "d": "a"}
    kept, audit = curate_rows(rows, CurateConfig(decontaminate=False), {})
    assert kept["id"].to_list() == ["a", "c"]
    reasons = _reasons(audit)
    assert reasons["b"] == reasons["d"] == ("dropped", "duplicate of a")
    assert reasons["a"] == reasons["c"] == ("kept", "passed all checks")


def test_dedup_off_keeps_duplicates():
    rows = _rows(("a", "s", "q", "r"), ("b", "s", "q", "r"))
    kept, audit = curate_rows(rows, OFF, {})
    assert kept.height == 2
    assert set(audit["action"]) == {"kept"}


def test_contaminated_rows_name_the_evaluation_row():
    rows = _rows(
        ("a", "s", "What is the capital of France?", "Paris"),
        ("b", "s", "what is the capital of   FRANCE", "Paris"),
        ("c", "s", "What is the capital of Spain?", "Madrid"),
    )
    evals = _eval(capitals=[("t7", "What is the capital of France?")], sentiment=[("s1", "Great blender!")])
    kept, audit = curate_rows(rows, CurateConfig(dedup=False), evals)
    assert kept["id"].to_list() == ["c"]
    reasons = _reasons(audit)
    assert reasons["a"] == reasons["b"] == ("dropped", "contaminated: matches evaluation row capitals/t7 (same instruction)")


def test_ngram_decontamination_only_when_enabled():
    rows = _rows(("a", "s", "Please tell me: the quick brown fox jumps, okay?", "r"))
    evals = _eval(t=[("e1", "Story: the quick brown fox jumps over the dog")])
    assert contaminated(rows, evals) == {}
    assert contaminated(rows, evals, ngram=4) == {"a": "t/e1 (shares the 4-gram 'the quick brown fox')"}
    assert contaminated(rows, evals, ngram=6) == {}
    kept, audit = curate_rows(rows, CurateConfig(decontaminate_ngram=4), evals)
    assert kept.is_empty()
    assert _reasons(audit)["a"] == ("dropped", "contaminated: matches evaluation row t/e1 (shares the 4-gram 'the quick brown fox')")


def test_first_applicable_reason_is_recorded():
    rows = _rows(("a", "s", "q one", "r"), ("b", "s", "q one", "r"), ("c", "s", "q two", "r"))
    scores = pl.DataFrame({"id": ["a", "b", "c"], "length": [1.0, 1.0, 1.0]})
    cfg = CurateConfig(filters=[FilterRule(column="length", min=2)])
    _, audit = curate_rows(rows, cfg, _eval(t=[("e1", "Q one")]), scores=scores)
    reasons = _reasons(audit)
    assert reasons["a"][1] == "contaminated: matches evaluation row t/e1 (same instruction)"
    assert reasons["b"][1] == "contaminated: matches evaluation row t/e1 (same instruction)"
    assert reasons["c"][1] == "length=1 below min 2.0"


def test_filter_rules_record_the_value():
    rows = _rows(*[(i, "s", f"q {i}", "r") for i in "abcd"])
    scores = pl.DataFrame({"id": ["d", "c", "b", "a"], "length": [500.25, 40.0, 3.0, 12345.678]})
    cfg = OFF.model_copy(update={"filters": [FilterRule(column="length", min=5, max=1000)]})
    kept, audit = curate_rows(rows, cfg, {}, scores=scores)
    assert kept["id"].to_list() == ["c", "d"]
    reasons = _reasons(audit)
    assert reasons["b"] == ("dropped", "length=3 below min 5.0")
    assert reasons["a"] == ("dropped", "length=1.235e+04 above max 1000.0")
    assert reasons["d"] == ("kept", "passed all checks")


def test_filter_on_unknown_column_lists_valid_ones():
    rows = _rows(("a", "s", "q", "r"))
    scores = pl.DataFrame({"id": ["a"], "length": [1.0], "ppl": [2.0]})
    cfg = OFF.model_copy(update={"filters": [FilterRule(column="perplexity", max=3)]})
    with pytest.raises(UnknownNameError, match="unknown score column 'perplexity'; valid: length, ppl"):
        curate_rows(rows, cfg, {}, scores=scores)


def test_audit_keeps_responses_and_sources():
    rows = _rows(("a", "s1", "q", "r1"), ("b", "s2", "q", "r1"))
    _, audit = curate_rows(rows, CurateConfig(), {})
    assert audit.select("id", "source", "old_response").rows() == [("a", "s1", "r1"), ("b", "s2", "r1")]
    assert audit["new_response"].null_count() == 2


@pytest.fixture
def loaded(tmp_path):
    lines = [
        {"id": "a", "source": "s1", "instruction": "What is the capital of France?", "response": "Paris"},
        {"id": "b", "source": "s1", "instruction": "Say hi", "response": "hi"},
        {"id": "c", "source": "s2", "instruction": "say HI!", "response": "hi"},
        {"id": "d", "source": "s2", "instruction": "q"},
        "{not json",
        {"id": "e", "source": "s2", "instruction": "Name a colour", "response": "blue"},
    ]
    p = tmp_path / "pool.jsonl"
    p.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return p, load_rows(p, quarantine=tmp_path / "q.jsonl")


def test_quarantined_rows_appear_in_the_audit_and_accounting_balances(loaded):
    path, res = loaded
    evals = _eval(capitals=[("t1", "what is the capital of france")])
    kept, audit = curate_rows(res.rows, CurateConfig(), evals, quarantined=res.quarantined)
    assert kept["id"].to_list() == ["b", "e"]
    assert check_accounting(audit, res.n_read) == {"kept": 2, "dropped": 2, "corrected": 0, "quarantined": 2}
    q = audit.filter(pl.col("action") == "quarantined")
    assert q["id"].to_list() == ["d", None]
    assert q["reason"].to_list() == [
        f"{path}:4: field 'response': field required; rows may be instruction/response, prompt/completion (TRL), "
        "messages (chat), or Alpaca instruction/input/output, or name their columns with the recipe's `columns`",
        f"{path}:5: field '<line>': broken JSON: Expecting property name enclosed in double quotes (column 2)",
    ]
    assert set(audit.filter(pl.col("action") == "kept")["id"]) == set(kept["id"])
    summary = summary_by_source(audit)
    assert summary.select("source", "kept", "dropped", "quarantined").rows() == [
        ("<quarantined>", 0, 0, 2), ("s1", 1, 1, 0), ("s2", 1, 1, 0)]


def test_check_accounting_raises_when_a_row_is_missing(loaded):
    _, res = loaded
    _, audit = curate_rows(res.rows, CurateConfig(), {}, quarantined=res.quarantined)
    with pytest.raises(TunesetError, match=f"accounting broken: .* sums to 5, input had {res.n_read} rows"):
        check_accounting(audit.slice(1), res.n_read)
    with pytest.raises(TunesetError, match="accounting broken"):
        check_accounting(audit, res.n_read + 1)


def test_check_accounting_raises_when_a_row_is_duplicated(loaded):
    _, res = loaded
    _, audit = curate_rows(res.rows, CurateConfig(), {}, quarantined=res.quarantined)
    with pytest.raises(TunesetError, match="accounting broken"):
        check_accounting(pl.concat([audit, audit.head(1)]), res.n_read)
    swapped = pl.concat([audit.head(1), audit.head(1), audit.slice(2)])
    with pytest.raises(TunesetError, match="an id appears twice"):
        check_accounting(swapped, res.n_read)


def test_check_accounting_rejects_unknown_actions():
    audit = audit_frame([{"id": "a", "source": "s", "action": "kept", "reason": "ok"},
                         {"id": "b", "source": "s", "action": "lost", "reason": "?"}])
    with pytest.raises(TunesetError, match=r"unknown actions \['lost'\]"):
        check_accounting(audit, 2)


def test_quarantined_rows_without_ids_are_not_duplicates():
    audit = audit_frame([{"id": None, "action": "quarantined", "reason": "x"},
                         {"id": None, "action": "quarantined", "reason": "y"},
                         {"id": "a", "action": "kept", "reason": "ok"}])
    assert check_accounting(audit, 3)["quarantined"] == 2


def _lq(ids, issue, suggested, p_new, p_old=0.1):
    return pl.DataFrame({"id": ids, "label_quality.label_issue": issue, "label_quality.suggested": suggested,
                         "label_quality.suggested_prob": p_new, "label_quality.given_prob": [p_old] * len(ids)})


def test_relabel_corrects_confident_issues_and_drops_unsure_ones():
    from tuneset.recipe import RelabelConfig

    rows = _rows(("a", "s", "great film", "negative"), ("b", "s", "awful film", "positive"), ("c", "s", "fine", "positive"))
    scores = _lq(["a", "b", "c"], [1.0, 1.0, 0.0], ["positive", "negative", "positive"], [0.9, 0.4, 0.8])
    curated, audit = curate_rows(rows, OFF.model_copy(update={"relabel": RelabelConfig(min_prob=0.6)}), {}, scores)
    got = _reasons(audit)
    assert got["a"][0] == "corrected" and "given 'negative'" in got["a"][1] and "suggests 'positive'" in got["a"][1]
    assert got["b"][0] == "dropped" and "below min_prob 0.6" in got["b"][1]
    assert got["c"][0] == "kept"
    assert dict(curated.select("id", "response").iter_rows()) == {"a": "positive", "c": "positive"}
    row = audit.filter(pl.col("id") == "a")
    assert row["old_response"][0] == "negative" and row["new_response"][0] == "positive"
    assert row["label_quality.suggested_prob"][0] == 0.9  # the scores behind the decision travel with it


def test_near_duplicates_name_the_row_they_copy():
    rows = _rows(("a", "s", "q1", "r1"), ("b", "s", "q1 ", "r1."))
    scores = pl.DataFrame({"id": ["a", "b"], "semdedup.duplicate_of": ["", "a"], "semdedup.max_similarity": [0.2, 0.99]})
    _, audit = curate_rows(rows, OFF.model_copy(update={"near_dedup": 0.95}), {}, scores)
    assert _reasons(audit)["b"] == ("dropped", "near-duplicate of a (cosine 0.990)")
    _, audit = curate_rows(rows, OFF.model_copy(update={"near_dedup": 0.995}), {}, scores)  # scored at another cut
    assert _reasons(audit)["b"][0] == "kept"


def test_a_near_duplicate_stays_when_a_later_step_drops_its_original():
    """near_dedup dropped b as a copy of a, then a filter dropped a: neither was left, though b
    passes the filter. A copy now leaves only where its original is kept at the end."""
    from tuneset.recipe import FilterRule

    rows = _rows(("a", "s", "q1", "r1"), ("b", "s", "q1 ", "r1 and more"), ("c", "s", "q2", "r2"), ("d", "s", "q2 ", "r2!"))
    scores = pl.DataFrame({"id": ["a", "b", "c", "d"], "semdedup.duplicate_of": ["", "a", "", "c"],
                           "semdedup.max_similarity": [0.1, 0.97, 0.1, 0.98], "length": [2.0, 10.0, 10.0, 1.0]})
    cfg = OFF.model_copy(update={"near_dedup": 0.95, "filters": [FilterRule(column="length", min=5)]})
    curated, audit = curate_rows(rows, cfg, {}, scores)
    got = _reasons(audit)
    assert got["a"] == ("dropped", "length=2 below min 5.0") and got["b"] == ("kept", "passed all checks")
    # Where the original stays, the copy leaves for that first reason, whatever a later step said of it.
    assert got["d"] == ("dropped", "near-duplicate of c (cosine 0.980)")
    assert curated["id"].to_list() == ["b", "c"]


def test_a_correction_that_makes_a_row_a_copy_of_a_kept_one_drops_the_later(tmp_path):
    """Exact dedup runs before relabelling: 'great film' relabelled positive became a copy of the
    row beside it, and both trained."""
    from tuneset.recipe import RelabelConfig

    rows = _rows(("a", "s", "great film", "positive"), ("b", "s", "great film", "negative"), ("c", "s", "bad", "negative"))
    scores = _lq(["a", "b", "c"], [0.0, 1.0, 0.0], ["positive", "positive", "negative"], [0.9, 0.9, 0.9])
    cfg = OFF.model_copy(update={"dedup": True, "relabel": RelabelConfig(min_prob=0.6)})
    curated, audit = curate_rows(rows, cfg, {}, scores)
    assert _reasons(audit)["b"] == ("dropped", "duplicate of a once corrected")
    assert curated["id"].to_list() == ["a", "c"]
    _, audit = curate_rows(rows, cfg.model_copy(update={"dedup": False}), {}, scores)  # dedup off: both stay
    assert _reasons(audit)["b"][0] == "corrected"


def test_exact_and_near_dedup_together_keep_one_copy():
    """Exact dedup keeps the first copy in input order, SemDeDup the first in id order: where they
    disagreed, each dropped the copy the other kept, and no copy of the row was left."""
    rows = _rows(("a", "s", "What is 2+2?", "4"), ("b", "s", "what is 2 + 2", "4"), ("c", "s", "Name a colour", "red"))
    scores = pl.DataFrame({"id": ["a", "b", "c"], "semdedup.duplicate_of": ["b", "", ""], "semdedup.max_similarity": [1.0, 0.1, 0.1]})
    curated, audit = curate_rows(rows, OFF.model_copy(update={"dedup": True, "near_dedup": 0.95}), {}, scores)
    assert curated["id"].to_list() == ["a", "c"]
    assert _reasons(audit)["b"] == ("dropped", "duplicate of a")
    # A third row, a near copy of SemDeDup's original: judged against the copy exact dedup kept.
    rows = _rows(("b", "s", "What is 2+2?", "4"), ("a", "s", "what is 2 + 2", "4"), ("c", "s", "What is two plus two?", "4"))
    scores = pl.DataFrame({"id": ["a", "b", "c"], "semdedup.duplicate_of": ["", "a", "a"], "semdedup.max_similarity": [0.0, 1.0, 0.97]})
    curated, audit = curate_rows(rows, OFF.model_copy(update={"dedup": True, "near_dedup": 0.95}), {}, scores)
    assert curated["id"].to_list() == ["b"]
    assert _reasons(audit)["c"] == ("dropped", "near-duplicate of b (cosine 0.970, a copy of a)")


def _rw(ids, given, proposed, p_new) -> pl.DataFrame:
    """The `rewrite` selector's columns: given confidence, the model's answer ('' none), its confidence, gain."""
    return pl.DataFrame({"id": ids, "rewrite": given, "rewrite.proposed": proposed, "rewrite.proposed_confidence": p_new,
                         "rewrite.gain": [n - g if p else 0.0 for g, p, n in zip(given, proposed, p_new)]})


def test_rewrite_takes_a_proposal_only_when_its_confidence_gains_the_margin():
    from tuneset.recipe import RewriteConfig

    rows = _rows(("a", "s", "q", "bad"), ("b", "s", "q2", "meh"), ("c", "s", "q3", "fine"))
    scores = _rw(["a", "b", "c"], [0.1, 0.2, 0.9], ["good", "better?", ""], [0.9, 0.3, 0.0])
    curated, audit = curate_rows(rows, OFF.model_copy(update={"rewrite": RewriteConfig(margin=0.2)}), {}, scores)
    assert _reasons(audit) == {"a": ("corrected", "rewritten: model answer confidence 0.90 vs given 0.10"),
                               "b": ("kept", "passed all checks"), "c": ("kept", "passed all checks")}
    assert curated["response"].to_list() == ["good", "meh", "fine"]
    # The same answer spelled otherwise is no correction: it inflated the count and touched clean rows.
    rows = _rows(("a", "s", "q", "positive"), ("b", "s", "q2", "Great, thanks"))
    curated, audit = curate_rows(rows, OFF.model_copy(update={"rewrite": RewriteConfig(margin=0.2)}), {},
                                 _rw(["a", "b"], [0.1, 0.1], ["Positive", "great thanks!"], [0.9, 0.9]))
    assert set(audit["action"]) == {"kept"} and curated["response"].to_list() == ["positive", "Great, thanks"]


def test_filters_do_not_judge_corrected_rows():
    from tuneset.recipe import RewriteConfig

    rows = _rows(("a", "s", "q", "bad"), ("b", "s", "q2", "bad too"))
    scores = _rw(["a", "b"], [0.1, 0.1], ["good", ""], [0.9, 0.0]).with_columns(pl.Series("confidence", [0.1, 0.1]))
    cfg = OFF.model_copy(update={"filters": [FilterRule(column="confidence", min=0.3)], "rewrite": RewriteConfig(margin=0.2)})
    curated, audit = curate_rows(rows, cfg, {}, scores)
    assert _reasons(audit) == {"a": ("corrected", "rewritten: model answer confidence 0.90 vs given 0.10"),
                               "b": ("dropped", "confidence=0.1 below min 0.3")}
    assert curated["response"].to_list() == ["good"]


def test_curated_plus_audit_rebuild_the_input_exactly(tmp_path):
    from tuneset.curation.audit import reconstruct_input
    from tuneset.recipe import RelabelConfig

    path = tmp_path / "rows.jsonl"
    recs = [{"id": f"r{i}", "source": "s", "instruction": f"q{i % 5}", "response": f"a{i % 5}",
             "tag": i, **({"choices": [f"a{i % 5}", "other"]} if i % 3 == 0 else {})} for i in range(12)]
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    rows = load_rows(path).rows
    scores = _lq(rows["id"].to_list(), [float(i % 4 == 1) for i in range(12)], ["a9"] * 12, [0.9 if i % 8 == 1 else 0.2 for i in range(12)])
    cfg = CurateConfig(decontaminate=False, relabel=RelabelConfig())
    curated, audit = curate_rows(rows, cfg, {}, scores)
    counts = check_accounting(audit, rows.height)
    assert counts["dropped"] > 0 and counts["corrected"] > 0 and counts["kept"] > 0
    rebuilt = reconstruct_input(curated, audit)
    assert rebuilt.to_dicts() == rows.to_dicts()


def test_a_template_shared_by_many_evaluation_rows_is_not_contamination():
    template = "Is the sentiment of this product review positive or negative? Review:"
    evals = _eval(s=[(f"e{k}", f"{template} text number {k} here") for k in range(5)])
    rows = _rows(("a", "s", f"{template} a different review entirely", "positive"),
                 ("b", "s", f"{template} text number 3 here", "negative"),
                 ("c", "s", "Quote: this product review text number 2 here is great", "r"))
    hits = contaminated(rows, evals, ngram=4)
    assert "a" not in hits  # shares only the template with the evaluation rows
    assert hits["b"] == "s/e3 (same instruction)"
    assert hits["c"].startswith("s/e2 (shares the 4-gram")  # 'text number 2 here' is e2's alone


def test_a_leak_the_pool_repeats_is_still_a_leak():
    """Copies of a leaked evaluation passage under other wrappers pushed its n-grams over the
    template count: one copy was caught, two or three were not."""
    evals = _eval(t=[("e1", "Story: the quick brown fox jumps over the lazy dog near the river bank")])
    for k in (1, 2, 3, 6):
        rows = _rows(*[(f"p{j}", "s", f"Variant {j}: the quick brown fox jumps over the lazy dog near the river bank", "r")
                       for j in range(k)], ("x", "s", "Note: the quick brown fox is a common test phrase in typing", "r"))
        hits = contaminated(rows, evals, ngram=5)
        assert set(hits) == {f"p{j}" for j in range(k)}, k
        assert hits["p0"] == "t/e1 (holds 9 of its 10 own 5-grams)"
    # A stock phrase 30 pool rows share is phrasing, even where it is half of a short evaluation row.
    evals = _eval(t=[("e1", "Summarise: thanks for reading and please subscribe to our newsletter. Mars has two moons")])
    rows = _rows(*[(f"p{j}", "s", f"Article {j} on topic {j}. thanks for reading and please subscribe to our newsletter", "r")
                   for j in range(30)])
    assert contaminated(rows, evals, ngram=5) == {}


def test_demo_decontamination_finds_the_planted_leaks_and_only_them():
    from tuneset.data.io import load_rows
    from tuneset.demo import DEMO_DIR
    from tuneset.recipe import load_tasks_file

    pool = load_rows(DEMO_DIR / "pool.jsonl").rows
    truth = {r["id"]: r.get("noise") for r in map(json.loads, (DEMO_DIR / "truth.jsonl").read_text().splitlines())}
    tasks = load_tasks_file(DEMO_DIR / "tasks.json")
    evals = {f"{t.name}/{s}": load_rows(getattr(t, s)).rows for t in tasks for s in ("dev", "test")}
    planted = {i for i, n in truth.items() if n == "contaminated"}
    assert set(contaminated(pool, evals)) == planted and len(planted) == 4  # exact match: precision 1, recall 1
    # 8-grams: the demo's reviews are built from stock phrases, so unrelated rows share 8 words
    # with an evaluation row. Setting templates aside keeps recall at 1 and cuts the false leaks
    # from 112 to 40 (every sentiment row shared the prompt template before). Two of the 40 hold
    # 4 of a short test review's 6 own 8-grams: its two stock sentences, which 2 pool rows repeat.
    with_templates = set(contaminated(pool, evals, ngram=8))
    without = set(contaminated(pool, evals, ngram=8, template_rows=10**9))
    assert planted <= with_templates and planted <= without
    assert (len(with_templates), len(without)) == (44, 116)


def test_a_rewrite_lands_in_the_rows_answer_space_or_not_at_all():
    from tuneset.recipe import RewriteConfig

    mc = [("m1", "mmlu", "Q1 A) x B) y C) z D) w", "D"), ("m2", "mmlu", "Q2", "D"), ("m3", "mmlu", "Q3", "C")]
    sentiment = [(f"s{i}", "sst", f"review {i}", "positive" if i % 2 else "negative") for i in range(12)]
    rows = _rows(*mc, *sentiment, ("g", "gsm", "How many?", "3 + 4 = 7\n#### 7"), ("h", "gsm", "And now?", "2 * 4 = 8\n#### 8"))
    rows = rows.with_columns(pl.Series("choices", [["A", "B", "C", "D"]] * 3 + [None] * 14, dtype=pl.List(pl.String)))
    ids = ["m1", "m2", "m3", "s0", "s1", "g", "h"]
    proposals = ["The answer is B", "A) x B) y C) z D) w", "c.", "Positive!", "neutral", "#### 7", "2 * 4 = 9\n#### 9"]
    scores = _rw(ids, [0.1] * 7, proposals, [0.9] * 7)
    curated, audit = curate_rows(rows, OFF.model_copy(update={"rewrite": RewriteConfig(margin=0.2)}), {}, scores)
    got = dict(zip(curated["id"], curated["response"]))
    assert got["m1"] == "B"  # mapped onto its choice
    assert got["m2"] == "D"  # the pasted option list is no answer: unchanged
    assert got["m3"] == "C"  # the same answer: nothing to correct
    assert got["s0"] == "positive"  # into the source's label set, as the source spells it
    assert got["s1"] == "positive"  # 'neutral' is no label of this source: unchanged
    assert got["g"] == "3 + 4 = 7\n#### 7"  # lost the worked solution: not the original's format
    assert got["h"] == "2 * 4 = 9\n#### 9"  # same format: taken (the judge gate decides trust, not this)
    assert set(_reasons(audit)) >= {"m1", "s0", "h"}


@pytest.mark.parametrize(("text", "space", "expected"), [
    ("B", ["A", "B"], "B"), ("b)", ["A", "B"], "B"), ("Answer: B", ["A", "B"], "B"),
    ("A or B", ["A", "B"], None), ("", ["A", "B"], None), ("Paris\nbecause", ["Paris", "Rome"], "Paris"),
    ("the capital is rome", ["Paris", "Rome"], "Rome"), ("Berlin", ["Paris", "Rome"], None),
])
def test_to_answer_space(text, space, expected):
    from tuneset.data.labels import to_answer_space

    assert to_answer_space(text, space) == expected


def test_the_judge_gate_skips_confidence_filters_and_rewrites_a_weak_judge_cannot_back():
    from tuneset.curation.judge import gate_notes
    from tuneset.recipe import RewriteConfig

    rows = _rows(("a", "s", "q", "bad"), ("b", "s", "q2", "fine answer"))
    scores = _rw(["a", "b"], [0.1, 0.9], ["good", ""], [0.9, 0.0]).with_columns(pl.Series("confidence", [0.1, 0.05]))
    cfg = OFF.model_copy(update={"filters": [FilterRule(column="confidence", min=0.3)], "rewrite": RewriteConfig(margin=0.2)})
    weak = {"confidence": 0.52, "rewrite": 0.55}
    curated, audit = curate_rows(rows, cfg, {}, scores, judge=weak)
    assert curated["response"].to_list() == ["bad", "fine answer"]  # nothing dropped or rewritten
    notes = gate_notes(cfg, weak)
    assert len(notes) == 2 and "AUROC 0.52, below curate.judge_min_auroc 0.6" in notes[0]
    curated, _ = curate_rows(rows, cfg, {}, scores, judge={"confidence": 0.9, "rewrite": 0.8})
    assert curated["response"].to_list() == ["good"]  # a judge that passed acts: a rewritten, b dropped
    unmeasured, _ = curate_rows(rows, cfg.model_copy(update={"judge_min_auroc": None}), {}, scores, judge=weak)
    assert unmeasured["response"].to_list() == ["good"]  # no bar: trusted as before


def test_the_gate_report_lists_every_measured_column_skipped_or_applied():
    from tuneset.curation.judge import gate_lines

    cfg = OFF.model_copy(update={"filters": [FilterRule(column="confidence.p_end", min=0.3),
                                             FilterRule(column="confidence.relevance", min=0.5)]})
    lines = gate_lines(cfg, {"confidence.p_end": 0.57, "confidence.relevance": 0.93})
    assert lines[0].startswith("confidence.p_end: skipped:") and "AUROC 0.57" in lines[0]
    assert lines[1] == "confidence.relevance: AUROC 0.93 on known answers, at or above 0.6: applied"


def test_known_answer_pairs_spoil_each_known_row_the_ways_curation_must_catch():
    from tuneset.curation.judge import auroc
    from tuneset.data.labels import known_answer_pairs

    mc = pl.DataFrame({"id": ["m"], "instruction": ["Q"], "response": ["B"], "choices": [["A", "B", "C"]]})
    open_ = pl.DataFrame({"id": ["o1", "o2"], "instruction": ["Q1", "Q2"],
                          "response": ["one two three four five six", "seven eight"], "choices": [None, None]},
                         schema_overrides={"choices": pl.List(pl.String)})
    pairs = known_answer_pairs({"mc": mc, "open": open_}, seed=0)
    kinds = dict(zip(pairs["id"], pairs["spoiled"]))
    assert kinds == {"mc/m/given": "", "mc/m/wrong": "wrong choice", "open/o1/given": "", "open/o1/shuffled": "shuffled",
                     "open/o1/truncated": "truncated", "open/o2/given": "", "open/o2/shuffled": "shuffled"}
    assert pairs.filter(pl.col("id") == "mc/m/wrong")["response"][0] in {"A", "C"}
    assert pairs.filter(pl.col("id") == "open/o1/truncated")["response"][0] == "one two three"
    right = pairs["correct"].to_numpy()
    assert auroc(right.astype(float), right) == 1.0 and auroc(np.zeros(len(right)), right) == 0.5


def test_judge_rows_need_a_verdict_on_every_row_and_both_verdicts(tmp_path):
    import json

    from tuneset.data.labels import load_judge_rows
    from tuneset.errors import DataError, TunesetError

    good = {"id": "a", "instruction": "2+2?", "response": "4", "correct": True}
    path = tmp_path / "judge.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", "correct": "yes"}) + "\n")
    with pytest.raises(DataError, match=r"judge.jsonl:2: field 'correct': must be true or false"):
        load_judge_rows(str(path))
    path.write_text(json.dumps(good) + "\n")
    with pytest.raises(TunesetError, match="correct: true and rows with correct: false"):
        load_judge_rows(str(path))
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", "response": "5", "correct": False}) + "\n")
    known = load_judge_rows(str(path))
    assert known["correct"].to_list() == [True, False] and known["spoiled"].to_list() == ["", "known wrong"]
    mapped = tmp_path / "mapped.jsonl"  # the pool's column mapping applies to the golden set too
    mapped.write_text(json.dumps({"id": "a", "question": "2+2?", "answer": "4", "correct": True}) + "\n"
                      + json.dumps({"id": "b", "question": "2+2?", "answer": "5", "correct": False}) + "\n")
    known = load_judge_rows(str(mapped), {"instruction": "question", "response": "answer"})
    assert known["response"].to_list() == ["4", "5"] and known["instruction"].to_list() == ["2+2?", "2+2?"]
