"""Confidence and label-quality pieces on data whose answer is known."""

import numpy as np
import polars as pl
import pytest

from tuneset.errors import UnknownNameError
from tuneset.selectors.confidence import token_f1
from tuneset.selectors.label_quality import LabelQualityParams, label_groups, out_of_fold_probs, strip_template


def test_token_f1():
    assert token_f1("Paris", "paris.") == 1.0
    assert token_f1("", "") == 1.0 and token_f1("a", "") == 0.0
    assert token_f1("the cat sat", "the cat") == pytest.approx(0.8)
    assert token_f1("dog", "cat") == 0.0


def test_label_groups_are_sources_with_few_frequent_answers():
    rows = pl.DataFrame({
        "source": ["cls"] * 40 + ["gen"] * 40,
        "response": [["pos", "neg"][i % 2] for i in range(40)] + [f"free text {i}" for i in range(40)],
    })
    assert list(label_groups(rows, LabelQualityParams())) == ["cls"]
    assert list(label_groups(rows, LabelQualityParams(sources=["gen"]))) == ["gen"]
    with pytest.raises(UnknownNameError, match="unknown label_quality source 'gne'; valid: cls, gen"):
        label_groups(rows, LabelQualityParams(sources=["gne"]))


def test_strip_template_keeps_the_varying_part():
    texts = ["Review: good film\nSentiment:", "Review: bad\nSentiment:", "Review: fine\nSentiment:"]
    assert strip_template(texts) == ["good film", "bad", "fine"]


def _order(n: int) -> np.ndarray:
    """A per-row fold key, as the selector derives from the row ids."""
    return np.random.default_rng(7).random(n)


def test_out_of_fold_probs_and_confident_learning_find_flipped_labels():
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 12)) * 3
    y_true = np.repeat(np.arange(4), 60)
    x = centers[y_true] + rng.normal(size=(240, 12))
    y = y_true.copy()
    flipped = rng.choice(240, size=24, replace=False)
    y[flipped] = (y[flipped] + 1 + rng.integers(3, size=24)) % 4
    probs = out_of_fold_probs(x, y, 4, folds=5, C=1.0, order=_order(240))
    np.testing.assert_allclose(probs.sum(1), 1.0)
    quality = get_label_quality_scores(y, probs)
    is_flip = np.isin(np.arange(240), flipped)
    assert quality[is_flip].max() < np.median(quality[~is_flip])
    issues = find_label_issues(y, probs, n_jobs=1)  # cleanlab forks a pool otherwise, which hung beside torch threads
    assert issues[is_flip].mean() > 0.75 and issues[~is_flip].mean() < 0.05
    assert (probs.argmax(1)[flipped] == y_true[flipped]).mean() > 0.9  # the suggestion restores the label


def test_calibrated_probs_pick_the_grid_penalty_with_the_lowest_out_of_fold_log_loss():
    from tuneset.selectors.label_quality import C_GRID, calibrated_probs

    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 40)
    x = np.hstack([np.eye(3)[y] * 2 + rng.normal(size=(120, 3)), rng.normal(size=(120, 30))])
    loss = {c: -np.log(out_of_fold_probs(x, y, 3, 5, c, _order(120))[np.arange(120), y]).mean() for c in C_GRID}
    best = min(loss, key=loss.get)
    np.testing.assert_allclose(calibrated_probs(x, y, 3, 5, None, _order(120)), out_of_fold_probs(x, y, 3, 5, best, _order(120)))
    np.testing.assert_allclose(calibrated_probs(x, y, 3, 5, 0.5, _order(120)), out_of_fold_probs(x, y, 3, 5, 0.5, _order(120)))
    assert len(set(np.round(list(loss.values()), 6))) > 1  # the grid matters on this data


def test_out_of_fold_probs_fit_only_on_trusted_rows():
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(3), 30)
    x = np.eye(3)[y] * 3 + rng.normal(size=(90, 3))
    probs = out_of_fold_probs(x, y, 3, 5, 1.0, _order(len(y)), trusted=y != 2)
    assert probs[:, 2].max() < 1e-3  # no fold ever trained on class 2
    assert (probs.argmax(1)[y != 2] == y[y != 2]).mean() > 0.9
    # A fold whose training rows are all untrusted learns nothing: uniform, not a crash.
    order = _order(len(y))
    first_fold = np.argsort(order)[::2]  # two folds, dealt in key order
    untrusted = np.zeros(len(y), dtype=bool)
    untrusted[first_fold] = True
    none_trusted = out_of_fold_probs(x, y, 3, 2, 1.0, order, trusted=~untrusted)
    np.testing.assert_allclose(none_trusted[np.setdiff1d(np.arange(len(y)), first_fold)], 1 / 3)


def test_prob_label_right_is_calibrated_under_uniform_flips_and_compares_across_label_counts():
    from tuneset.selectors.label_quality import prob_label_right

    rng = np.random.default_rng(3)
    for k in (2, 20):
        clean = rng.dirichlet(np.full(k, 0.3), size=20000)  # the clean-label distribution per row
        y_true = np.array([rng.choice(k, p=p) for p in clean])
        flip = rng.random(20000) < 0.2
        y = np.where(flip, (y_true + rng.integers(1, k, size=20000)) % k, y_true)
        post = prob_label_right(clean, y, noise_rate=0.2)
        for lo, hi in [(0, 0.3), (0.3, 0.7), (0.7, 1.01)]:
            sel = (post >= lo) & (post < hi)
            assert abs(post[sel].mean() - (y == y_true)[sel].mean()) < 0.03, (k, lo)
    # the same p(given label) means more with more labels: a flip into one of 150 is rare
    p = np.array([[0.15, 0.85]]), np.array([[0.15] + [0.85 / 149] * 149])
    two, many = (prob_label_right(q, np.array([0]), 0.2)[0] for q in p)
    assert two < 0.5 < many


def test_fit_group_refits_without_the_rows_its_first_fit_flags():
    from tuneset.selectors.label_quality import fit_group

    rng = np.random.default_rng(4)
    y_true = np.repeat(np.arange(2), 100)
    x = np.eye(2)[y_true] * 1.5 + rng.normal(size=(200, 2))
    y = y_true.copy()
    flipped = rng.choice(200, size=40, replace=False)
    y[flipped] = 1 - y[flipped]
    fit = fit_group(x, y, 2, folds=5, C=1.0, order=_order(len(y)))
    np.testing.assert_array_equal(fit.first, out_of_fold_probs(x, y, 2, 5, 1.0, _order(len(y))))
    np.testing.assert_array_equal(fit.probs, out_of_fold_probs(x, y, 2, 5, 1.0, _order(len(y)), trusted=~fit.flagged))
    assert fit.flagged.any() and fit.noise_rate == fit.flagged.mean()
    rows = np.arange(200)
    # without the flips in training, the model is surer that a flipped label is wrong
    assert fit.probs[rows, y][flipped].mean() < fit.first[rows, y][flipped].mean()


def test_a_label_written_two_ways_equally_often_is_spelt_the_same_in_every_process():
    """The spelling a class is written back as (and scored by the LM as) must not follow the
    process's hash seed: sets of strings iterate in PYTHONHASHSEED's order."""
    import os
    import subprocess
    import sys

    code = ("from tuneset.selectors.label_quality import label_classes; "
            "print(label_classes(['Positive', 'positive', 'Negative', 'negative', 'no'] * 3)[1])")
    seen = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": str(h)},
                           capture_output=True, text=True, check=True).stdout for h in range(6)}
    assert seen == {"['Negative', 'no', 'Positive']\n"}
