"""The dev-row rule shared by the fine-tune sweep and the bench's recommendation."""

from __future__ import annotations

import polars as pl
import pytest

from tuneset.evaluate.choose import rank_on_dev


def _dev(candidate: str, task: str, scores: list[float], loss: float = 1.0, seed: int = 0) -> list[dict]:
    return [{"candidate": candidate, "task": task, "id": f"{task}-{i}", "seed": seed, "score": s, "loss": loss}
            for i, s in enumerate(scores)]


def test_target_rows_are_pooled_so_a_small_task_does_not_outweigh_a_large_one():
    # a: 2/2 on the 2-row task, 2/8 on the 8-row one (mean of means 0.625, pooled 0.4);
    # b: 0/2 and 6/8 (mean of means 0.375, pooled 0.6).
    dev = pl.DataFrame(_dev("a", "small", [1, 1]) + _dev("a", "big", [1, 1] + [0] * 6)
                       + _dev("b", "small", [0, 0]) + _dev("b", "big", [1] * 6 + [0, 0]))
    ranked = rank_on_dev(dev)
    assert [r.name for r in ranked] == ["b", "a"]
    assert ranked[0].score == pytest.approx(0.6) and ranked[0].rows == 10


def test_the_control_is_a_constraint_never_part_of_the_score():
    ctrl = [1.0] * 10
    dev = pl.DataFrame(
        _dev("none", "target", [0] * 4) + _dev("none", "ctrl", ctrl)
        + _dev("best_target_harms_control", "target", [1] * 4) + _dev("best_target_harms_control", "ctrl", [0] * 10)
        + _dev("good_control", "target", [1, 0, 0, 0]) + _dev("good_control", "ctrl", ctrl)
        + _dev("better_target", "target", [1, 1, 0, 0]) + _dev("better_target", "ctrl", [1.0] * 9 + [0.0]))
    ranked = rank_on_dev(dev, controls=["ctrl"], base="none")
    # better_target loses one control row of ten: within two standard errors, so it stays eligible
    # and wins on the target rows; the control's own score never lifts good_control.
    assert [r.name for r in ranked] == ["better_target", "good_control", "best_target_harms_control"]
    assert [r.eligible for r in ranked] == [True, True, False]
    assert ranked[0].score == pytest.approx(0.5) and ranked[0].control_diff == pytest.approx(-0.1)
    assert ranked[2].control_words().startswith("-1.000 ± ")


def test_ties_on_the_score_go_to_the_lower_loss_and_seeds_are_averaged_per_row():
    dev = pl.DataFrame(_dev("sure", "t", [1, 0], loss=0.5, seed=0) + _dev("sure", "t", [0, 1], loss=0.7, seed=1)
                       + _dev("unsure", "t", [1, 0], loss=2.0))
    ranked = rank_on_dev(dev)
    assert [r.name for r in ranked] == ["sure", "unsure"]
    assert ranked[0].rows == 2 and ranked[0].loss == pytest.approx(0.6) and ranked[0].score == pytest.approx(0.5)


def test_bad_dev_results_name_what_is_missing():
    with pytest.raises(ValueError, match=r"lack column\(s\) \['loss'\]"):
        rank_on_dev(pl.DataFrame(_dev("a", "t", [1])).drop("loss"))
    with pytest.raises(ValueError, match="'a' has no dev rows on a target task"):
        rank_on_dev(pl.DataFrame(_dev("a", "ctrl", [1])), controls=["ctrl"])
    with pytest.raises(ValueError, match="base 'none' has no dev rows"):
        rank_on_dev(pl.DataFrame(_dev("a", "t", [1]) + _dev("a", "ctrl", [1])), controls=["ctrl"], base="none")
