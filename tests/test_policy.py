from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuneset.errors import TunesetError, UnknownNameError
from tuneset.recipe import PolicyConfig
from tuneset.selection.policy import apply_policy, budget_count, combined_score, rank_normalise

FAST = settings(max_examples=60, deadline=None)


def _scores(**cols: list[float]) -> pl.DataFrame:
    n = len(next(iter(cols.values())))
    return pl.DataFrame({"id": [f"r{i:02d}" for i in range(n)], **{k: [float(v) for v in vs] for k, vs in cols.items()}})


def _ranks(values: list[float]) -> np.ndarray:
    """1-based ranks of distinct values, computed independently of the code under test."""
    return np.argsort(np.argsort(values)) + 1.0


@pytest.mark.parametrize(("budget", "n", "k"), [
    (None, 7, 7), (3, 7, 3), (50, 7, 7), ("100%", 9, 9), ("1%", 10, 1), ("0.5%", 3, 1),
    ("10%", 25, 2), ("10%", 35, 4), ("50%", 7, 4), ("30%", 5, 2), ("33%", 100, 33),
])
def test_budget_count(budget, n, k):
    """Percent budgets round half to even (Python's round): 2.5 -> 2, 3.5 -> 4; never below 1."""
    assert budget_count(budget, n) == k


@FAST
@given(n=st.integers(1, 5000), pct=st.floats(0.01, 100, allow_nan=False))
def test_percent_budget_is_nearest_count(n, pct):
    k = budget_count(f"{pct}%", n)
    assert 1 <= k <= n
    assert abs(k - n * pct / 100) <= 0.5 or k == 1


def test_weights_add_in_key_order_as_the_selection_key_reads_them():
    """The key sorts the weights; the sum ran in dict order, so reordering them moved 177 of 200
    combined scores by rounding and the selection by 2 rows, under one cached key."""
    rng = np.random.default_rng(0)
    s = _scores(a=rng.random(200), b=rng.random(200), c=rng.random(200))
    w = {"a": 0.1, "b": 0.2, "c": 0.7}
    np.testing.assert_array_equal(combined_score(s, w, {}), combined_score(s, dict(reversed(list(w.items()))), {}))


def test_rank_normalise_ties_share_rank():
    assert rank_normalise(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [0.875, 0.25, 0.875, 0.5]


@FAST
@given(
    data=st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)), min_size=2, max_size=40),
    wa=st.floats(0.1, 5), wb=st.floats(0.1, 5),
    b_higher=st.booleans(),
)
def test_combined_score_matches_independent_formula(data, wa, wb, b_higher):
    a_vals = list(dict.fromkeys(x for x, _ in data))
    b_vals = list(dict.fromkeys(y for _, y in data))
    n = min(len(a_vals), len(b_vals))
    a_vals, b_vals = a_vals[:n], b_vals[:n]
    comb = combined_score(_scores(a=a_vals, b=b_vals), {"a": wa, "-b": wb}, {"b": b_higher})
    ra, rb = _ranks(a_vals) / n, _ranks(b_vals) / n
    rb_oriented = (n - _ranks(b_vals) + 1) / n if b_higher else rb  # '-' flips the declared direction
    expected = (wa * ra + wb * rb_oriented) / (wa + wb)
    np.testing.assert_allclose(comb, expected, rtol=1e-12, atol=1e-12)


def test_minus_prefix_equals_lower_is_better():
    s = _scores(ppl=[30, 10, 20, 50])
    flipped = combined_score(s, {"-ppl": 1}, {})
    declared = combined_score(s, {"ppl": 1}, {"ppl": False})
    np.testing.assert_allclose(flipped, declared)
    assert np.argmax(flipped) == 1
    assert np.argmax(combined_score(s, {"ppl": 1}, {})) == 3
    assert np.argmax(combined_score(s, {"-ppl": 1}, {"ppl": False})) == 3


def test_a_component_column_reads_in_its_selectors_direction():
    """`perplexity.nll` is lower-is-better like `perplexity` itself: weighting either picks the
    most fluent row, never the one quantity's opposite ends."""
    s = _scores(**{"perplexity": [2.0, 5.0, 9.0, 20.0], "perplexity.nll": np.log([2.0, 5.0, 9.0, 20.0])})
    dirs = {"perplexity": False}
    assert np.argmax(combined_score(s, {"perplexity": 1}, dirs)) == np.argmax(combined_score(s, {"perplexity.nll": 1}, dirs)) == 0
    assert np.argmax(combined_score(s, {"-perplexity.nll": 1}, dirs)) == 3


@FAST
@given(vals=st.lists(st.floats(-100, 100), min_size=1, max_size=30), w=st.floats(0.1, 10))
def test_column_and_its_negation_cancel_to_a_constant(vals, w):
    n = len(vals)
    comb = combined_score(_scores(x=vals), {"x": w, "-x": w}, {})
    np.testing.assert_allclose(comb, np.full(n, (1 + 1 / n) / 2))


def test_cancelled_weights_still_select_exactly_the_budget():
    s = _scores(x=list(range(20)))
    out = apply_policy(s, PolicyConfig(weights={"x": 1, "-x": 1}, budget=5), {})
    assert out["selected"].sum() == 5
    assert sorted(out["rank"].to_list()) == list(range(1, 21))
    again = apply_policy(s, PolicyConfig(weights={"x": 1, "-x": 1}, budget=5), {})
    assert again.equals(out)


def test_a_budget_beyond_the_candidates_takes_them_all_and_says_so(caplog):
    out = apply_policy(_scores(x=list(range(4))), PolicyConfig(weights={"x": 1}, budget=10), {})
    assert out["selected"].all()
    assert "budget 10 is more than the 4 candidate rows" in caplog.text


def test_empty_weights_and_unknown_column():
    s = _scores(x=[1, 2])
    with pytest.raises(TunesetError, match="weights are empty"):
        combined_score(s, {}, {})
    with pytest.raises(UnknownNameError, match="unknown score column 'y'; valid: x"):
        combined_score(s, {"-y": 1}, {})


@FAST
@given(
    vals=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=60, unique=True),
    budget=st.one_of(st.integers(1, 80), st.integers(1, 100).map(lambda p: f"{p}%")),
)
def test_top_k_picks_exactly_the_budget_of_best_rows(vals, budget):
    s = _scores(q=vals)
    out = apply_policy(s, PolicyConfig(weights={"q": 1}, budget=budget), {})
    k = budget_count(budget, len(vals))
    sel = out.filter(pl.col("selected"))
    assert sel.height == k
    best = sorted(vals, reverse=True)[:k]
    assert sorted(s.filter(pl.col("id").is_in(sel["id"].to_list()))["q"].to_list(), reverse=True) == best
    assert sorted(sel["rank"].to_list()) == list(range(1, k + 1))
    assert all(r.startswith("selected (rank ") and r.endswith(f", budget {k})") for r in sel["reason"])
    assert set(out.filter(~pl.col("selected"))["reason"]) <= {f"not selected: outside budget {k}"}


def test_top_k_with_two_weighted_columns():
    s = _scores(quality=[1, 2, 3, 4, 5, 6], ppl=[6, 5, 4, 3, 2, 1])
    # quality and -ppl agree, so the best three are the last three
    out = apply_policy(s, PolicyConfig(weights={"quality": 2, "-ppl": 1}, budget=3), {})
    assert out.filter(pl.col("selected"))["id"].to_list() == ["r03", "r04", "r05"]
    assert out["rank"].to_list() == [6, 5, 4, 3, 2, 1]


def test_threshold_excludes_with_reason():
    s = _scores(q=list(range(10)))
    out = apply_policy(s, PolicyConfig(weights={"q": 1}, budget=8, threshold=0.55), {})
    below = out.filter(pl.col("combined") < 0.55)
    assert below.height == 5
    assert set(below["reason"]) == {"combined score below threshold 0.55"}
    assert not below["selected"].any()
    assert out["selected"].sum() == 5


def test_band_excludes_with_reason_and_threshold_reason_wins():
    s = _scores(q=list(range(10)))
    out = apply_policy(s, PolicyConfig(weights={"q": 1}, budget=None, band=(0.3, 0.8)), {})
    assert out.filter(pl.col("selected"))["id"].to_list() == ["r03", "r04", "r05", "r06", "r07"]  # half the rows
    assert out.filter(~pl.col("selected"))["reason"].to_list() == ["outside quantile band (0.3, 0.8]"] * 5

    both = apply_policy(s, PolicyConfig(weights={"q": 1}, budget=None, band=(0.3, 0.8), threshold=0.35), {})
    reasons = dict(zip(both["id"], both["reason"]))
    assert reasons["r00"] == reasons["r02"] == "combined score below threshold 0.35"
    assert reasons["r09"] == "outside quantile band (0.3, 0.8]"
    assert both["selected"].sum() == 5


GROUPS = ["a"] * 6 + ["b"] * 3 + ["c"]
# Interleave so the global order differs from the group order.
QVALS = [10, 9, 8, 1, 2, 3, 7, 6, 0.5, 5]


def _quota_run(budget, quotas) -> tuple[pl.DataFrame, dict[str, list[str]]]:
    s = _scores(q=QVALS)
    out = apply_policy(s, PolicyConfig(weights={"q": 1}, budget=budget, quota_by="source", quotas=quotas), {},
                       pl.Series(GROUPS))
    picked: dict[str, list[str]] = {}
    for i, g, sel in zip(out["id"], GROUPS, out["selected"]):
        if sel:
            picked.setdefault(g, []).append(i)
    return out, picked


def test_proportional_quotas_use_largest_remainder():
    out, picked = _quota_run(5, "proportional")
    # shares 3, 1.5, 0.5 -> floors 3, 1, 0; the one left goes to b (ties on remainder break by name)
    assert picked == {"a": ["r00", "r01", "r02"], "b": ["r06", "r07"]}
    assert set(out.filter(pl.col("selected"))["reason"].str.extract(r"(budget .*)\)$").to_list()) == {
        "budget 5 with quotas by source"}


def test_equal_quotas_refill_from_best_remaining():
    out, picked = _quota_run(6, "equal")
    # 2 each, but c has one row: the spare slot goes to the best unpicked row overall (r02, a)
    assert picked == {"a": ["r00", "r01", "r02"], "b": ["r06", "r07"], "c": ["r09"]}
    assert out["selected"].sum() == 6


def test_dict_quotas_take_each_groups_best():
    _, picked = _quota_run(None, {"a": 2, "b": "50%"})
    assert picked == {"a": ["r00", "r01"], "b": ["r06", "r07"]}


def test_dict_quota_of_zero_selects_nothing_from_that_group():
    _, picked = _quota_run(None, {"a": 0, "b": 1})
    assert picked == {"b": ["r06"]}


def test_dict_quotas_hold_the_budget():
    """Explicit quotas ignored the budget: budget 2 with quotas {a: 3, b: 3} selected 6 rows."""
    out, picked = _quota_run(2, {"a": 3, "b": 3})
    assert out["selected"].sum() == 2 and picked == {"a": ["r00"], "b": ["r06"]}
    _, picked = _quota_run(10, {"a": 3, "b": 1})  # within the budget: as asked
    assert picked == {"a": ["r00", "r01", "r02"], "b": ["r06"]}


def test_a_quota_group_the_threshold_empties_is_not_unknown():
    """A group named in quotas whose rows all fall below the threshold was "unknown"."""
    out = apply_policy(_scores(q=QVALS), PolicyConfig(weights={"q": 1}, threshold=0.95, quota_by="source",
                                                      quotas={"c": 1, "a": 1}), {}, pl.Series(GROUPS))
    assert out.filter("selected")["id"].to_list() == ["r00"]  # only a's best clears the threshold


def test_percent_budgets_round_half_to_even_exactly():
    assert [budget_count(b, n) for b, n in (("64.4%", 125), ("64.6%", 250), ("50%", 3), ("50%", 5))] == [80, 162, 2, 2]


def test_max_similarity_one_never_rejects_an_identical_copy():
    from tuneset.selection.policy import DiversityGate

    rng = np.random.default_rng(0)
    for _ in range(200):
        x = rng.normal(size=(1, 384)).astype(np.float32)
        x /= np.linalg.norm(x)
        gate = DiversityGate(np.vstack([x, x]), 1.0, ["a", "b"])
        assert gate(0) and gate(1)


def test_quota_errors():
    s = _scores(q=QVALS)
    with pytest.raises(TunesetError, match="quota_by='source' needs that column"):
        apply_policy(s, PolicyConfig(weights={"q": 1}, quota_by="source"), {})
    with pytest.raises(UnknownNameError, match="unknown source in quotas 'zz'; valid: a, b, c"):
        apply_policy(s, PolicyConfig(weights={"q": 1}, quota_by="source", quotas={"zz": 1}), {}, pl.Series(GROUPS))


@FAST
@given(
    data=st.lists(st.tuples(st.floats(0, 1), st.sampled_from("abcd")), min_size=1, max_size=50),
    budget=st.integers(1, 60),
    quotas=st.sampled_from(["proportional", "equal"]),
)
def test_quotas_spend_the_budget_and_respect_group_shares(data, budget, quotas):
    vals, groups = [v for v, _ in data], [g for _, g in data]
    s = _scores(q=vals)
    out = apply_policy(s, PolicyConfig(weights={"q": 1}, budget=budget, quota_by="g", quotas=quotas), {},
                       pl.Series(groups))
    k = min(budget, len(vals))
    assert out["selected"].sum() == k
    names = sorted(set(groups))
    sizes = {g: groups.count(g) for g in names}
    got = {g: sum(1 for gg, sel in zip(groups, out["selected"]) if sel and gg == g) for g in names}
    share = {g: (sizes[g] if quotas == "proportional" else 1) for g in names}
    total = sum(share.values())
    for g in names:
        ideal = k * share[g] / total
        assert got[g] >= min(sizes[g], int(np.floor(ideal)))


@FAST
@given(
    vals=st.lists(st.floats(-5, 5), min_size=1, max_size=40),
    budget=st.one_of(st.none(), st.integers(1, 50), st.sampled_from(["1%", "25%", "100%"])),
    threshold=st.one_of(st.none(), st.floats(0, 1)),
    band=st.one_of(st.none(), st.tuples(st.floats(0, 0.5), st.floats(0.51, 1))),
    quota=st.booleans(),
)
def test_every_row_appears_once_with_a_reason(vals, budget, threshold, band, quota):
    s = _scores(q=vals)
    groups = pl.Series([("x", "y", "z")[i % 3] for i in range(len(vals))])
    policy = PolicyConfig(weights={"q": 1}, budget=budget, threshold=threshold, band=band,
                          quota_by="g" if quota else None)
    out = apply_policy(s, policy, {}, groups if quota else None)
    assert out["id"].to_list() == s["id"].to_list()
    assert all(isinstance(r, str) and r for r in out["reason"])
    assert out["selected"].sum() <= budget_count(budget, len(vals))
    assert sorted(out["rank"].to_list()) == list(range(1, len(vals) + 1))
    excluded = ~out["reason"].str.starts_with("selected") & ~out["reason"].str.starts_with("not selected")
    assert not (out["selected"] & excluded).any()


def _two_tasks() -> pl.DataFrame:
    """Task `a` scores on a big scale, task `b` on a tiny one: max-over-tasks would give `a` everything."""
    return _scores(**{
        "got": [10, 9, 8, 7, 6, 0.5, 0.4, 0.3, 0.2, 0.1],
        "got.vs_a": [10, 9, 8, 7, 6, 0, 0, 0, 0, 0],
        "got.vs_b": [0, 0, 0, 0, 0, 0.5, 0.4, 0.3, 0.2, 0.1],
        "quality": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    })


def test_targets_split_the_budget_so_no_task_is_crowded_out():
    scores = _two_tasks()
    plain = apply_policy(scores, PolicyConfig(weights={"got": 1}, budget=4), {"got": True})
    assert plain.filter("selected")["id"].to_list() == ["r00", "r01", "r02", "r03"]  # all task a
    out = apply_policy(scores, PolicyConfig(weights={"got": 1}, budget=4, targets="equal"), {"got": True})
    chosen = out.filter("selected")
    assert sorted(chosen["id"]) == ["r00", "r01", "r05", "r06"]
    assert chosen.filter(pl.col("id") == "r05")["reason"][0] == "selected (rank 1 for b, budget 4 split over targets (equal))"


def test_targets_shares_dev_size_and_quality_columns_stay_shared():
    scores = _two_tasks()
    out = apply_policy(scores, PolicyConfig(weights={"got": 1}, budget=5, targets={"a": 4, "b": 1}), {"got": True})
    assert sorted(out.filter("selected")["id"]) == ["r00", "r01", "r02", "r03", "r05"]
    dev = apply_policy(scores, PolicyConfig(weights={"got": 1}, budget=5, targets="dev_size"), {"got": True},
                       dev_sizes={"a": 1, "b": 4})
    assert sorted(dev.filter("selected")["id"]) == ["r00", "r05", "r06", "r07", "r08"]
    # A column without per-task versions (quality) enters every task's ranking: task a's best is
    # then r09 (top quality), and task b, whose own best that was, takes its next, r08.
    mixed = apply_policy(scores, PolicyConfig(weights={"got": 1, "quality": 3}, budget=2, targets="equal"),
                         {"got": True, "quality": True})
    assert mixed.filter("selected").sort("id")["reason"].to_list()[1].startswith("selected (rank 1 for a, ")
    assert sorted(mixed.filter("selected")["id"]) == ["r08", "r09"]


def test_the_split_takes_only_eligible_rows_and_still_spends_the_budget():
    scores = _two_tasks()
    # Threshold 0.3 on the combined score leaves r00-r07 eligible: task b ranks r08, r09 above
    # a's rows but may not take them, so it fills its share from a's leftovers.
    out = apply_policy(scores, PolicyConfig(weights={"got": 1}, budget=8, targets="equal", threshold=0.3),
                       {"got": True})
    assert sorted(out.filter("selected")["id"]) == [f"r{i:02d}" for i in range(8)]
    # When every row a task ranks first is vetoed (near-copies of a row already chosen), it goes
    # down its own ranking, and the budget is still spent.
    emb = np.vstack([np.eye(5), np.tile(np.eye(5)[0], (5, 1))])  # b's rows all copy r00
    gated = apply_policy(scores, PolicyConfig(weights={"got": 1}, budget=4, targets="equal", max_similarity=0.5),
                         {"got": True}, embeddings=emb)
    chosen = gated.filter("selected")["id"].to_list()
    assert len(chosen) == 4 and "r00" in chosen and not set(chosen) & {f"r{i:02d}" for i in range(5, 10)}


def test_targets_errors_name_what_is_missing():
    scores = _two_tasks()
    with pytest.raises(TunesetError, match=r"per-task columns .*weights name \['quality'\]"):
        apply_policy(scores, PolicyConfig(weights={"quality": 1}, budget=2, targets="equal"), {})
    with pytest.raises(UnknownNameError, match="'c'"):
        apply_policy(scores, PolicyConfig(weights={"got": 1}, budget=2, targets={"c": 1}), {})
    with pytest.raises(TunesetError, match="dev row count"):
        apply_policy(scores, PolicyConfig(weights={"got": 1}, budget=2, targets="dev_size"), {})
    with pytest.raises(TunesetError, match="use one"):
        apply_policy(scores, PolicyConfig(weights={"got": 1}, budget=2, targets="equal", quota_by="source"), {},
                     groups=pl.Series(["x"] * 10))


def test_largest_remainder_gives_the_leftover_to_the_largest_fraction():
    from tuneset.selection.policy import _largest_remainder

    # 4 x (5, 3, 2)/10 = 2.0, 1.2, 0.8 -> floors 2, 1, 0; the leftover goes to c (0.8), not a
    assert _largest_remainder({"a": 5, "b": 3, "c": 2}, 4) == {"a": 2, "b": 1, "c": 1}
    assert _largest_remainder({"b": 1, "a": 1}, 1) == {"a": 1, "b": 0}  # equal fractions: by name
    # Through the policy: c's rows score worst, so a floor-then-refill would hand c's seat to a.
    scores = _scores(s=[10, 9, 8, 7, 6, 5, 4, 3, 2, 1])
    groups = pl.Series(["a"] * 5 + ["b"] * 3 + ["c"] * 2)
    out = apply_policy(scores, PolicyConfig(weights={"s": 1}, budget=4, quota_by="source"), {"s": True}, groups)
    assert sorted(out.filter("selected")["id"]) == ["r00", "r01", "r05", "r08"]


def test_a_pick_by_a_similarity_selector_names_its_nearest_dev_row():
    s = _scores(got=[0.1, 0.9, 0.5, 0.7]).with_columns(
        pl.Series("got.nearest_dev", [f"sst2/dev-{i} (cos 0.{i}0)" for i in range(4)]))
    out = apply_policy(s, PolicyConfig(weights={"got": 1}, budget=2), {"got": True})
    reasons = dict(zip(out["id"], out["reason"]))
    assert reasons["r01"] == "selected (rank 1, budget 2); got: nearest dev row sst2/dev-1 (cos 0.10)"
    assert reasons["r03"].endswith("nearest dev row sst2/dev-3 (cos 0.30)")
    assert reasons["r00"] == "not selected: outside budget 2"  # only picks carry it


def test_bands_that_meet_split_the_rows_without_overlap():
    """A band was [lo, hi] on quantiles in (0, 1]: the top tenth kept two rows of ten, and the two
    halves shared their middle row."""
    s = _scores(q=list(range(10)))

    def kept(band):
        return set(apply_policy(s, PolicyConfig(weights={"q": 1}, budget=None, band=band), {}).filter("selected")["id"])

    assert kept((0.9, 1.0)) == {"r09"} and kept((0.0, 0.1)) == {"r00"}
    low, high = kept((0.0, 0.5)), kept((0.5, 1.0))
    assert len(low) == len(high) == 5 and not low & high


def test_a_threshold_keeps_the_same_rows_whichever_way_a_column_points():
    """A flipped column was ranked as 1 - r + 1/n, a hair under the exact value: at threshold 0.3
    of ten rows it kept 7 where the same order pointing up kept 8."""
    up = apply_policy(_scores(q=list(range(10))), PolicyConfig(weights={"q": 1}, budget=None, threshold=0.3), {})
    down = apply_policy(_scores(q=list(range(10))[::-1]), PolicyConfig(weights={"-q": 1}, budget=None, threshold=0.3), {})
    flipped = apply_policy(_scores(q=list(range(10))[::-1]), PolicyConfig(weights={"q": 1}, budget=None, threshold=0.3),
                           {"q": False})
    assert up["selected"].sum() == down["selected"].sum() == flipped["selected"].sum() == 8


def test_weights_read_numbers_only_and_refuse_missing_values():
    s = _scores(q=[1.0, 2.0, float("nan")]).with_columns(pl.Series("label", ["zebra", "ant", "bee"]))
    with pytest.raises(TunesetError, match="weights: 'label' holds String, not numbers; valid: q"):
        combined_score(s, {"label": 1}, {})
    with pytest.raises(TunesetError, match="weights: 'q' has a missing or non-finite value for row 'r02'"):
        combined_score(s, {"q": 1}, {})  # polars ranks NaN above every number: it was picked first
    flags = _scores(q=[1.0, 2.0, 3.0]).with_columns(pl.Series("issue", [True, False, False]))
    assert np.argmin(combined_score(flags, {"-issue": 1}, {})) == 0  # a flag column is a number


def test_equal_remainders_go_by_name_exactly():
    """12 rows over groups of 42, 38, 5 and 63: a and c have the same remainder (15/37), which
    float noise gave to c; by name it goes to a."""
    from tuneset.selection.policy import _largest_remainder

    assert _largest_remainder({"a": 42.0, "b": 38.0, "c": 5.0, "d": 63.0}, 12) == {"a": 4, "b": 3, "c": 0, "d": 5}


def test_reasons_quote_the_rank_and_quotas_that_decided():
    scores = _two_tasks()
    out = apply_policy(scores, PolicyConfig(weights={"got": 1}, budget=4, targets="equal"), {"got": True})
    assert dict(zip(out["id"], out["reason"]))["r06"].startswith("selected (rank 2 for b, ")  # rank 7 overall
    s = _scores(q=QVALS)
    scaled = apply_policy(s, PolicyConfig(weights={"q": 1}, budget=4, quota_by="g", quotas={"a": 10, "b": 10}), {},
                          groups=pl.Series(GROUPS))
    assert "quotas by g {'a': 3, 'b': 1, 'c': 0}" in scaled.filter("selected")["reason"][0]
