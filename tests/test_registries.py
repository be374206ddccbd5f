"""Extension points as one file each: a new metric and a new curation step, written as a module the
way a user would, registered on import, validated at registration and at recipe load."""

from __future__ import annotations

import importlib
import json
import textwrap

import numpy as np
import pytest

from tuneset.errors import TunesetError, UnknownNameError
from tuneset.evaluate import metrics
from tuneset.flows.checks import check_recipe
from tuneset.recipe import load_recipe


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Import a module written into tmp_path; registrations made by it vanish after the test."""
    monkeypatch.setattr(metrics, "_METRICS", dict(metrics._METRICS))
    monkeypatch.syspath_prepend(str(tmp_path))

    def load(name: str, source: str):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        return importlib.import_module(name)

    yield load


def _recipe(tmp_path, demo_dir, metric: str, *overrides: str):
    tasks = json.loads((demo_dir / "tasks.json").read_text())
    t = tasks["capitals"]
    spec = {"capitals": {**t, "metric": metric, "dev": str(demo_dir / t["dev"]), "test": str(demo_dir / t["test"])}}
    (tmp_path / "tasks.json").write_text(json.dumps(spec))
    return load_recipe(None, [f"pool={demo_dir / 'pool.jsonl'}", f"tasks={tmp_path / 'tasks.json'}",
                              f"work_dir={tmp_path / 'w'}", *overrides])


ANSWER_LENGTH = """
    import numpy as np

    from tuneset.evaluate.metrics import EvalInput, Scored, register_metric


    @register_metric("answer_length", higher_is_better=False)
    def answer_length(x: EvalInput) -> Scored:
        preds = x.generate()
        return Scored(np.array([len(p) for p in preds], dtype=float), x.gold_loss(), preds)
"""


def test_a_new_metric_is_one_file_checked_at_load_and_oriented_when_it_runs(plugin, tmp_path, demo_dir, tiny_lm_dir):
    with pytest.raises(TunesetError, match="task 'capitals': metric: unknown metric 'answer_length'; valid: choice_accuracy, "):
        check_recipe(_recipe(tmp_path, demo_dir, "answer_length"))
    plugin("my_metric", ANSWER_LENGTH)
    recipe = check_recipe(_recipe(tmp_path, demo_dir, "answer_length"))
    assert metrics.get_metric("answer_length").higher_is_better is False
    with pytest.raises(TunesetError, match=r"unknown metric 'answer_lenght'; valid: answer_length, choice_accuracy"):
        check_recipe(_recipe(tmp_path, demo_dir, "answer_lenght"))

    from tuneset.data.io import load_rows
    from tuneset.models.loading import load_lm

    task = recipe.task_specs()[0]
    rows = load_rows(task.test).rows.head(3)
    out = metrics.evaluate_task(load_lm(str(tiny_lm_dir), "cpu"), task, rows, 64, max_new_tokens=3)
    # Lower is better, so the reported score is minus the length: higher is better everywhere.
    np.testing.assert_allclose(out["score"].to_numpy(), [-len(p) for p in out["prediction"]])
    assert out.columns == ["id", "score", "loss", "prediction"] and (out["loss"] > 0).all()


@pytest.mark.parametrize(("name", "direction", "message"), [
    ("exact_match", True, "registered twice"),
    ("Bad-Name", True, "lowercase letters"),
    ("fine_name", None, "higher_is_better must be True or False"),
    ("fine_name", 1, "higher_is_better must be True or False"),
])
def test_metric_registration_is_validated(plugin, name, direction, message):
    with pytest.raises(ValueError, match=message):
        metrics.register_metric(name, higher_is_better=direction)(lambda x: None)
    assert "fine_name" not in metrics.metric_names()


def test_unknown_metric_at_evaluation_names_the_valid_ones(tiny_lm_dir, demo_dir):
    from tuneset.recipe import TaskSpec

    task = TaskSpec(name="c", metric="bleu", dev=demo_dir / "x")
    with pytest.raises(UnknownNameError, match="unknown metric 'bleu'; valid: choice_accuracy, exact_match, target_loss"):
        metrics.evaluate_task(None, task, None)  # refused before any model or row is touched
