"""Extension points as one file each: a new metric and a new curation step, written as a module the
way a user would, registered on import, validated at registration and at recipe load."""

from __future__ import annotations

import importlib
import json
import textwrap

import numpy as np
import polars as pl
import pytest

from tuneset.curation import steps
from tuneset.curation.curate import curate_rows
from tuneset.errors import TunesetError, UnknownNameError
from tuneset.evaluate import metrics
from tuneset.flows.checks import check_recipe
from tuneset.recipe import load_recipe


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Import a module written into tmp_path; registrations made by it vanish after the test."""
    for registry in (metrics.METRICS, steps.STEPS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
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


@pytest.mark.parametrize("revision", [0, 1.5, "2", True])
def test_a_metric_revision_must_be_a_positive_int(plugin, revision):
    with pytest.raises(ValueError, match="revision must be a positive int"):
        metrics.register_metric("fine_name", higher_is_better=True, revision=revision)(lambda x: None)


@pytest.mark.parametrize("bounds", [(1.0, 0.0), (0.0,), (2.0, 2.0)])
def test_metric_bounds_are_checked_at_registration(bounds):
    with pytest.raises(ValueError, match="bounds must be \\(low, high\\) with low < high"):
        metrics.register_metric("bounded_name", higher_is_better=True, bounds=bounds)(lambda x: None)
    assert "bounded_name" not in metrics.metric_names()


def test_the_metric_key_holds_a_revision_only_past_the_first():
    # revision 1 keys as before revisions existed (the name alone), so no cached evaluation is lost
    assert metrics.metric_key("choice_accuracy") == ("choice_accuracy",)
    assert metrics.metric_key("target_loss") == ("target_loss", 2)  # its empty answers became None
    assert metrics.metric_key("exact_match") == ("exact_match", 3)  # article-only answers kept; signs and decimal points


def test_unknown_metric_at_evaluation_names_the_valid_ones(tiny_lm_dir, demo_dir):
    from tuneset.recipe import TaskSpec

    task = TaskSpec(name="c", metric="bleu", dev=demo_dir / "x")
    with pytest.raises(UnknownNameError, match="unknown metric 'bleu'; valid: choice_accuracy, exact_match, target_loss"):
        metrics.evaluate_task(None, task, None)  # refused before any model or row is touched


MIN_WORDS = """
    from pydantic import BaseModel, ConfigDict, Field

    from tuneset.curation.steps import CurationInput, CurationStep, Decisions, register_step


    class MinWordsParams(BaseModel):
        model_config = ConfigDict(extra="forbid")
        min: int = Field(default=2, ge=1)


    @register_step
    class MinWords(CurationStep):
        name = "min_words"
        Params = MinWordsParams

        def run(self, data: CurationInput, decisions: Decisions) -> None:
            for i, response in data.rows.select("id", "response").iter_rows():
                if len(response.split()) < self.params.min:
                    decisions.drop(i, f"response has fewer than {self.params.min} words")
"""


def test_a_new_curation_step_is_one_file_ordered_by_the_recipe(plugin, tmp_path, demo_dir):
    from tuneset.data.io import load_rows

    steps_list = "curate.steps=[decontaminate, dedup, {name: min_words, params: {min: 3}}]"
    with pytest.raises(TunesetError, match=r"curate.steps\[2\]: unknown curation step 'min_words'; valid: decontaminate, dedup, "):
        check_recipe(_recipe(tmp_path, demo_dir, "exact_match", steps_list))
    plugin("my_step", MIN_WORDS)
    recipe = check_recipe(_recipe(tmp_path, demo_dir, "exact_match", steps_list))
    rows = load_rows(recipe.pool).rows
    curated, audit = curate_rows(rows, recipe.curate, {})
    short = {i for i, r in rows.select("id", "response").iter_rows() if len(r.split()) < 3}
    dropped = dict(audit.filter(pl.col("reason") == "response has fewer than 3 words").select("id", "action").iter_rows())
    assert short and set(dropped) <= short and set(dropped.values()) == {"dropped"}
    assert not set(curated["id"]) & short  # short rows left for this step or an earlier one
    assert audit.height == rows.height


def test_the_recipe_orders_steps_and_the_first_reason_stands(plugin):
    from tuneset.recipe import CurateConfig

    rows = pl.DataFrame({"id": ["a", "b"], "source": ["s", "s"], "instruction": ["Q one", "q one"], "response": ["r", "r"]})
    evals = {"t": pl.DataFrame({"id": ["e"], "instruction": ["Q ONE"]})}
    default = dict(curate_rows(rows, CurateConfig(), evals)[1].select("id", "reason").iter_rows())
    dedup_first = dict(curate_rows(rows, CurateConfig(steps=["dedup", "decontaminate"]), evals)[1].select("id", "reason").iter_rows())
    assert default["b"].startswith("contaminated") and dedup_first["b"] == "duplicate of a"


@pytest.mark.parametrize(("override", "message"), [
    ("curate.steps=[dedupe]", r"recipe: curate.steps\[0\]: unknown curation step 'dedupe'; valid: decontaminate, dedup, filters, "),
    ("curate.steps=[decontaminate, dedup, dedup]", r"curate.steps\[2\] \(dedup\): listed twice"),
    ("curate.steps=[decontaminate]", r"curate.steps does not list 'dedup', which curate.dedup turns on"),
    ("curate.steps=[decontaminate, dedup, near_dedup]", r"curate.steps\[2\] \(near_dedup\): curate.near_dedup is off"),
    ("curate.steps=[decontaminate, {name: dedup, params: {k: 1}}]", r"curate.steps\[1\] \(dedup\): params.k: Extra inputs are not permitted; valid: none"),
    ("compare.strategies=[{name: random, curate: {steps: [relabel]}}]",
     r"compare.strategies \(random\): curate.steps\[0\] \(relabel\): curate.relabel is off"),
])
def test_curation_steps_are_checked_at_recipe_load(tmp_path, demo_dir, override, message):
    with pytest.raises(TunesetError, match=message):
        check_recipe(_recipe(tmp_path, demo_dir, "exact_match", override))


def test_curation_step_registration_is_validated(plugin):
    from pydantic import BaseModel

    from tuneset.curation.steps import CurationStep, register_step

    def step(name, setting=None, params=None):
        attrs = {"name": name, "setting": setting, "run": lambda self, data, decisions: None}
        if params is not None:
            attrs["Params"] = params
        return type("S", (CurationStep,), attrs)

    with pytest.raises(ValueError, match="'dedup' registered twice"):
        register_step(step("dedup"))
    with pytest.raises(ValueError, match="lowercase letters"):
        register_step(step("My-Step"))
    with pytest.raises(ValueError, match="setting 'dedupe' is not a curate field; valid: dedup, decontaminate"):
        register_step(step("other", setting="dedupe"))
    with pytest.raises(ValueError, match="from curate.dedup or from Params, not both"):
        register_step(step("other", setting="dedup", params=type("P", (BaseModel,), {})))
    with pytest.raises(ValueError, match="Params must be a pydantic model with model_config = ConfigDict"):
        register_step(step("other", params=type("P", (BaseModel,), {"__annotations__": {"min": int}})))  # extras ignored
    assert "other" not in steps.step_names()
