"""Recipe mistakes fail in one line before any work starts (no store, no Prefect run)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tuneset.demo import DEMO_DIR

runner = CliRunner()
_DEV = DEMO_DIR / "targets" / "capitals" / "dev.jsonl"


@pytest.fixture(scope="module", autouse=True)
def prefect_logging_on_real_stderr():
    """Import the flows (and so Prefect) outside a CliRunner: Prefect binds its log handler to the
    stderr it sees first, and a closed CliRunner buffer there breaks every later module's logging."""
    from prefect.logging.configuration import setup_logging

    import tuneset.flows.compare  # noqa: F401

    setup_logging()
    yield

MISTAKES = [
    ("score.selectors=[gott]", "score.selectors[0]: unknown selector 'gott'; valid: "),
    ("score.selectors=[perplexityy]", "unknown selector 'perplexityy'"),
    ("score.selectors=[{name: embedding_knn, params: {kk: 3}}]", "(embedding_knn): selector 'embedding_knn': params.kk: Extra inputs are not permitted"),
    ("score.selectors=[{name: embedding_knn, params: {k: 0}}]", "greater than or equal to 1"),
    ("score.selectors=[]", "score.selectors: "),
    ("select.weights={gott: 1}", "select.weights: unknown selector 'gott'"),
    ("select.weights={-perplexityy.ppl: 1}", "select.weights: unknown selector 'perplexityy'"),
    ("compare.strategies=[{name: mix, weights: {knn: 1}}]", "compare.strategies (mix).weights: unknown selector 'knn'"),
    ("compare.strategies=[gott]", "compare.strategies (gott).weights: unknown selector 'gott'"),
    ("compare.strategies=[{name: got, targets: {sst: 1}}]", "compare.strategies (got).targets: unknown task 'sst'"),
    ("curate.filters=[{column: confidance.p_end, min: 0.1}]", "curate.filters[0].column: unknown selector 'confidance'"),
    ("select.quotas={a: 3}", "select: quotas {'a': 3} need quota_by"),
    ("select.quotas=equal", "select: quotas 'equal' need quota_by"),  # was a plain top-k without a word
    ("compare.strategies=[{name: random, budget: 300}]", "budget: compare.budgets sets every strategy's budget; drop budget 300"),
    ("select.quotas={a: 0.5}", "select.quotas: group 'a': a budget is a row count (300) or a percent ('10%'), not 0.5; for a share"),
    ("curate={decontaminate: false, decontaminate_ngram: 8}", "curate.decontaminate_ngram: refines decontamination"),
    ("pool=missing.jsonl", "missing.jsonl: no such file or folder"),
    ("pool=data/*.jsonl", "data/*.jsonl: the pattern matches no file"),
    ("compare.references={mine: nowhere.jsonl}", "compare.references.mine: no such file"),
    ("curate.judge_rows=gold.jsonl", "curate.judge_rows: "),
    ("compare.strategies=[{name: own, weights: {random: 1}, curate: {judge_rows: gold.jsonl}}]", "compare.strategies (own).curate.judge_rows: "),
    ("finetune.lr=-1", "finetune.lr: Input should be greater than 0"),
    ("model.device=gpu", "model.device: unknown device 'gpu'; valid: auto, cpu, cuda"),
    (f"model.embedder={DEMO_DIR}", "model.embedder: " + str(DEMO_DIR) + " is not a sentence-transformers, model2vec or "
                                   "tuneset ONNX folder"),
    ("pool=''", "pool: name the pool: a file, a folder, a glob"),
    ("select.budgt=5", "select.budgt: Extra inputs are not permitted; valid: weights, budget, threshold"),
    ("model.devce=cpu", "model.devce: Extra inputs are not permitted; valid: name, adapter, embedder, device"),
    # The misspelt key, not the "Field required" it leaves beside it.
    (f"tasks=[{{name: a, metrc: exact_match, dev: {_DEV}}}]", "tasks.0.metrc: Extra inputs are not permitted; valid: name, metric"),
    ("select.budget=0.5", "select.budget: a budget is a row count (300) or a percent ('10%'), not 0.5; for a share of the pool write '50%'"),
    ("select.budget=abc%", "not 'abc%'"),
    ("compare.budgets=[300, abc]", "compare.budgets: a budget is a row count (300) or a percent ('10%'), not 'abc'"),
    ("score.selectors=rndom", "score.selectors[0]: unknown selector 'rndom'"),  # one name, not five letters
    (f"tasks=[{{name: a, metric: exact_match, dev: {_DEV}}}, {{name: a, metric: exact_match, dev: {_DEV}}}]",
     "task names repeat: a; give each task its own name"),
    (f"tasks=[{{name: a, metric: exact_match, dev: {_DEV}, tst: t.jsonl}}]", "tasks.0.tst: Extra inputs are not permitted; valid: name, metric, dev, test"),
    ("finetune.epochs=0", "finetune.epochs: Input should be greater than 0"),
    ("select.budget=0", "select.budget"),
    ("select.band=[0.9, 0.1]", "band is [lo, hi] quantiles"),
    ("compare.sweep={grid: {lrr: [1]}}", "unknown fine-tune setting 'lrr'"),
    ("task_names=[sentimentt]", "unknown task 'sentimentt'"),
    ("work_dir=afile", "work_dir: "),
]


@pytest.mark.parametrize(("override", "message"), MISTAKES)
def test_a_recipe_mistake_is_one_line_before_any_work(tmp_path, monkeypatch, override, message):
    from tuneset.cli import app

    monkeypatch.chdir(tmp_path)  # where a relative --set path resolves
    (tmp_path / "afile").write_text("not a folder")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"pool: {DEMO_DIR / 'pool.jsonl'}\ntasks: {DEMO_DIR / 'tasks.json'}\n"
                      "score: {selectors: [random, length]}\ncompare: {strategies: [random]}\n")
    res = runner.invoke(app, ["score", str(recipe), "--set", override, "--set", f"work_dir={tmp_path / 'w'}"]
                        if not override.startswith("work_dir") else ["score", str(recipe), "--set", override])
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and message in res.output, res.output  # one line, never wrapped
    assert res.output.startswith("error: ") and "Traceback" not in res.output
    assert not (tmp_path / "w").exists()  # nothing was written: no work started


def test_select_weights_must_name_a_scored_selector(tmp_path):
    from tuneset.cli import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"pool: {DEMO_DIR / 'pool.jsonl'}\nscore: {{selectors: [length]}}\nselect: {{weights: {{random: 1}}}}\n")
    res = runner.invoke(app, ["select", str(recipe), "--set", f"work_dir={tmp_path / 'w'}"])
    assert res.exit_code == 2 and "'random' needs selector 'random', which score.selectors does not run" in " ".join(res.output.split())


def test_bracketed_text_in_errors_is_shown_not_eaten_as_markup(tmp_path):
    from tuneset.cli import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"pool: {DEMO_DIR / 'pool.jsonl'}\nselect: {{band: [0.9, 0.1]}}\n")
    res = runner.invoke(app, ["score", str(recipe)])
    assert "[lo, hi]" in res.output


def test_a_missing_test_file_is_named_when_read_not_at_load(tmp_path):
    """Scoring and selecting read only dev rows, so a task whose test file is absent still loads;
    evaluation and decontamination, which read it, name the task and the split."""
    from tuneset.errors import TunesetError
    from tuneset.flows.checks import check_recipe
    from tuneset.flows.context import run_context
    from tuneset.recipe import load_recipe

    r = check_recipe(load_recipe(None, [f"pool={DEMO_DIR / 'pool.jsonl'}", f"work_dir={tmp_path / 'w'}",
                                        f"tasks=[{{name: a, metric: exact_match, dev: {_DEV}, test: {tmp_path / 'gone.jsonl'}}}]"]))
    with pytest.raises(TunesetError, match="task 'a': test rows not found: .*gone.jsonl"):
        run_context(r).split(r.task_specs()[0], "test")


def test_commands_that_read_test_rows_check_them_first(tmp_path):
    """`evaluate`, `pipeline`, `compare` found a missing test file only after the server start (and
    `pipeline` after scoring, selecting and fine-tuning); `curate` and `select` read it as
    curation's evaluation rows. `score` reads dev rows alone, so it still runs."""
    from tuneset.cli import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"pool: {DEMO_DIR / 'pool.jsonl'}\nwork_dir: {tmp_path / 'w'}\nscore: {{selectors: [random]}}\n"
                      f"tasks: [{{name: a, metric: exact_match, dev: {_DEV}, test: {tmp_path / 'gone.jsonl'}}}]\n")
    for command in ("evaluate", "pipeline", "compare", "curate", "select"):
        res = runner.invoke(app, [command, str(recipe)])
        assert res.exit_code == 2 and "task 'a': test rows not found: " in res.output, (command, res.output)
    from tuneset.flows.checks import check_recipe
    from tuneset.recipe import load_recipe

    check_recipe(load_recipe(recipe))  # as `score` checks it
    res = runner.invoke(app, ["evaluate", str(recipe), "--set", f"tasks=[{{name: a, metric: exact_match, dev: {_DEV}}}]"])
    assert res.exit_code == 2 and "task 'a' has no test rows, which evaluation reads" in res.output
    assert not (tmp_path / "w").exists()


def test_command_line_mistakes_stop_before_any_work(tmp_path):
    from tuneset.cli import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"pool: {DEMO_DIR / 'pool.jsonl'}\nwork_dir: {tmp_path / 'w'}\nscore: {{selectors: [random]}}\n")
    # --selector/--target make a recipe from a pool: beside a recipe they were silently ignored.
    res = runner.invoke(app, ["select", str(recipe), "--selector", "bogus"])
    assert res.exit_code == 2 and "--selector and --target select from a pool;" in res.output
    for argv in (["finetune", str(recipe), "--rows", str(tmp_path / "nope.jsonl")],  # wrote a lock, then failed
                 ["evaluate", str(recipe), "--model-dir", str(tmp_path / "nowhere")]):  # tried the hub
        assert runner.invoke(app, argv).exit_code == 2
    # A recipe that is not UTF-8 was a traceback.
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes(b"name: t\n# caf\xe9\npool: p.jsonl\n")
    res = runner.invoke(app, ["score", str(latin)])
    assert res.exit_code == 2 and "latin1.yaml: line 2: byte 0xe9 is not UTF-8" in " ".join(res.output.split())
    assert not (tmp_path / "w").exists()


def test_paths_from_flags_are_read_as_typed(tmp_path):
    """A path holding ` #` or `: ` was pasted into YAML bare: the rest read as a comment or a mapping."""
    from pathlib import Path

    from tuneset.cli import one_off_recipe
    from tuneset.recipe import load_recipe

    for name in ("a #b", "c: d"):
        pool = tmp_path / name / "pool.jsonl"
        tasks = tmp_path / name / "tasks.json"
        tasks.parent.mkdir()
        tasks.write_text((DEMO_DIR / "tasks.json").read_text())
        r = load_recipe(None, one_off_recipe(pool, ["random"], [tasks], "10%"))
        assert Path(r.pool) == pool.resolve() and r.task_specs()[0].dev.parent.parent.parent == tasks.parent.resolve()


def test_finetune_and_score_default_to_the_recipes_seed(tmp_path, monkeypatch):
    """`tuneset finetune --set finetune.seed=5` trained at seed 0: the option's default won."""
    from contextlib import nullcontext

    import tuneset.flows.api
    import tuneset.flows.train_eval
    from tuneset.cli import app

    seen = []
    monkeypatch.setattr(tuneset.flows.api, "prefect_api", nullcontext)
    monkeypatch.setattr(tuneset.flows.train_eval, "finetune_flow", lambda r, rows, seed: seen.append(seed) or "m")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"pool: {DEMO_DIR / 'pool.jsonl'}\nwork_dir: {tmp_path / 'w'}\nscore: {{selectors: [random]}}\n")
    for extra, want in (([], 0), (["--set", "finetune.seed=5"], 5), (["--set", "finetune.seed=5", "--seed", "2"], 2)):
        assert runner.invoke(app, ["finetune", str(recipe), "--rows", str(_DEV), *extra]).exit_code == 0
        assert seen[-1] == want


def test_a_targeted_selector_without_target_tasks_is_named_before_any_work(tmp_path):
    from tuneset.cli import app

    res = runner.invoke(app, ["select", str(DEMO_DIR / "pool.jsonl"), "--selector", "embedding_knn",
                              "--set", f"work_dir={tmp_path / 'w'}", "--out", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2 and "(embedding_knn) reads the target tasks' dev rows" in res.output
    assert "--target tasks.json" in res.output and not (tmp_path / "w").exists()


def test_a_dev_answer_outside_the_tasks_choices_is_named_before_any_work(tmp_path):
    """A task with fixed choices took any dev answer; a typo there ('Pos' for 'pos') was a label no
    evaluation can ever give, read silently by every targeted selector."""
    import json

    from tuneset.cli import app

    dev = tmp_path / "dev.jsonl"
    dev.write_text("\n".join(json.dumps({"instruction": f"q{i}", "response": a})
                             for i, a in enumerate(["pos", "neg", "Pos", "maybe"])) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"pool: {DEMO_DIR / 'pool.jsonl'}\nwork_dir: {tmp_path / 'w'}\nscore: {{selectors: [random]}}\n"
                      f"tasks: [{{name: yn, metric: choice_accuracy, dev: {dev}, choices: [pos, neg]}}]\n")
    res = runner.invoke(app, ["score", str(recipe)])
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    assert "task 'yn': 2 bad rows:" in out and "dev.jsonl:3: field 'response': 'Pos' is not one of the task's choices" in out
    assert "dev.jsonl:4: field 'response': 'maybe'" in out and not (tmp_path / "w").exists()


def test_one_off_selections_of_other_pools_or_selectors_get_their_own_run(tmp_path):
    """Every one-off select shared `runs/recipe/`: its lock, its quarantine and its reports."""
    from tuneset.cli import one_off_recipe
    from tuneset.recipe import load_recipe

    def name(pool, selectors):
        return load_recipe(None, one_off_recipe(tmp_path / pool, selectors, [], "10%")).name

    assert name("pool.jsonl", ["got", "less"]) == "select-pool-got+less"
    assert name("pool.jsonl", ["got"]) != name("pool.jsonl", ["less"]) != name("other.jsonl", ["less"])
    assert name("my pool #2.jsonl", ["random"]) == "select-my-pool-2-random"  # a safe folder name


def test_rows_a_choice_metric_cannot_score_are_named_before_any_work(tmp_path):
    """choice_accuracy on rows without choices failed at evaluation, after the fine-tunes, naming
    the test file and a row index for a dev row."""
    import json

    from tuneset.cli import app

    dev = tmp_path / "dev.jsonl"
    dev.write_text(json.dumps({"id": "d1", "instruction": "q", "response": "a", "choices": ["a", "b"]}) + "\n"
                   + json.dumps({"id": "d2", "instruction": "q", "response": "a"}) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"pool: {DEMO_DIR / 'pool.jsonl'}\nwork_dir: {tmp_path / 'w'}\nscore: {{selectors: [random]}}\n"
                      f"tasks: [{{name: mc, metric: choice_accuracy, dev: {dev}}}]\n")
    res = runner.invoke(app, ["score", str(recipe)])
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "task 'mc': choice_accuracy scores answer options, which 1 of the rows of" in out, out
    assert "(first: id 'd2')" in out and not (tmp_path / "w").exists()
    ok = runner.invoke(app, ["score", str(recipe), "--set", "tasks=[{name: mc, metric: exact_match, dev: " + str(dev) + "}]",
                             "--set", "score.selectors=[length]"])
    assert ok.exit_code == 0, ok.output  # exact match reads no choices
