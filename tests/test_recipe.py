from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneset.demo import demo_pool_file, demo_recipe_file, demo_tasks_file
from tuneset.errors import TunesetError
from tuneset.recipe import (
    CompareConfig,
    PolicyConfig,
    Recipe,
    SelectorSpec,
    Strategy,
    apply_overrides,
    load_recipe,
    load_tasks_file,
)


@pytest.fixture
def recipe_file(tmp_path):
    d = tmp_path / "proj"
    d.mkdir()
    p = d / "r.yaml"
    p.write_text("name: t\npool: data/pool.jsonl\nselect:\n  budget: 5\n")
    return p


def test_relative_paths_resolve_against_the_recipe_folder(recipe_file):
    r = load_recipe(recipe_file)
    assert r.pool == recipe_file.parent / "data" / "pool.jsonl"
    assert (r.name, r.select.budget, r.tasks) == ("t", 5, [])


def test_absolute_pool_is_kept(recipe_file):
    r = load_recipe(recipe_file, ["pool=/abs/pool.jsonl"])
    assert r.pool == Path("/abs/pool.jsonl")


def test_without_a_file_relative_paths_resolve_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_recipe(None, ["pool=p.jsonl"]).pool == tmp_path / "p.jsonl"


def test_a_relative_path_in_an_override_resolves_against_cwd_and_the_files_against_its_folder(recipe_file, tmp_path, monkeypatch):
    """`--set work_dir=.tuneset/bench` typed in the repository means the repository's folder, as
    every other command-line path does, not one beside the recipe."""
    monkeypatch.chdir(tmp_path)
    r = load_recipe(recipe_file, ["work_dir=.tuneset/bench", "compare.references={mine: refs/mine.jsonl}",
                                  "tasks=[{name: t, metric: exact_match, dev: t/dev.jsonl}]"])
    assert (r.work_dir, r.compare.references["mine"]) == (tmp_path / ".tuneset/bench", tmp_path / "refs/mine.jsonl")
    assert r.tasks[0].dev == tmp_path / "t/dev.jsonl"
    assert r.pool == recipe_file.parent / "data" / "pool.jsonl"  # the file's own path is untouched
    rel = Path(recipe_file.parent.name) / recipe_file.name  # a recipe named relative to cwd, as users do
    again = load_recipe(rel, ["work_dir=w"])
    assert (again.pool, again.work_dir) == (recipe_file.parent / "data" / "pool.jsonl", tmp_path / "w")
    # A hub name in the file stays one, even where the current directory has a folder of that name.
    (tmp_path / "org" / "adapter").mkdir(parents=True)
    hub = recipe_file.parent / "hub.yaml"
    hub.write_text("pool: data/pool.jsonl\nmodel: {adapter: org/adapter}\n")
    assert load_recipe(hub, ["work_dir=w"]).model.adapter == "org/adapter"
    assert load_recipe(hub, ["model.adapter=org/adapter"]).model.adapter == str(tmp_path / "org" / "adapter")


def test_model_and_embedder_folders_beside_the_recipe_resolve_against_it(recipe_file, tmp_path, monkeypatch):
    """A recipe runs the same from anywhere: `model.name: lm` beside it is that folder, wherever the
    command runs; a name with no such folder there stays a hub name or alias."""
    for d in ("lm", "emb"):
        (recipe_file.parent / d).mkdir()
    r = recipe_file.parent / "local.yaml"
    r.write_text("pool: data/pool.jsonl\nmodel: {name: lm, embedder: emb}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    m = load_recipe(r).model
    assert (m.name, m.embedder) == (str(recipe_file.parent / "lm"), str(recipe_file.parent / "emb"))
    r.write_text("pool: data/pool.jsonl\nmodel: {name: HuggingFaceTB/SmolLM2-135M, embedder: minilm}\n")
    m = load_recipe(r).model
    assert (m.name, m.embedder) == ("HuggingFaceTB/SmolLM2-135M", "minilm")


def test_defaults_fill_everything_but_pool(recipe_file):
    r = load_recipe(recipe_file)
    assert r.model.name == "smollm2" and r.model.max_length == 256
    assert [s.name for s in r.score.selectors] == ["random", "length"]
    assert r.curate.dedup and r.curate.decontaminate and r.curate.decontaminate_ngram is None
    assert r.compare.seeds == [0, 1] and r.compare.baselines == ["none", "full"]
    assert r.quarantine is False


def test_overrides_are_parsed_as_yaml(recipe_file):
    r = load_recipe(recipe_file, [
        "select.budget=10%", "model.max_length=64", "select.weights={ppl: 1, -len: 0.5}",
        "score.selectors=[random, length]", "finetune.lr=1e-4", "quarantine=true", "select.band=[0.1, 0.9]",
    ])
    assert r.select.budget == "10%"
    assert r.model.max_length == 64
    assert r.select.weights == {"ppl": 1.0, "-len": 0.5}
    assert r.score.selectors == [SelectorSpec(name="random"), SelectorSpec(name="length")]
    assert r.finetune.lr == pytest.approx(1e-4)
    assert r.quarantine is True
    assert r.select.band == (0.1, 0.9)


def test_override_value_may_contain_equals_and_later_override_wins(recipe_file):
    r = load_recipe(recipe_file, ["compare.references={a: x=y.jsonl}", "select.budget=3", "select.budget=7"])
    assert (r.compare.references["a"].name, r.select.budget) == ("x=y.jsonl", 7)


def test_override_creates_missing_sections():
    data = apply_overrides({}, ["a.b.c=1", "a.b.d=[x]"])
    assert data == {"a": {"b": {"c": 1, "d": ["x"]}}}


def test_yaml_merge_keys_still_work_and_may_be_overridden(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("pool: p.jsonl\nselect: &s {budget: 5, threshold: 0.2}\ncompare: {strategies: [{<<: *s, name: x, budget: null}]}\n")
    assert load_recipe(p).compare.strategies[0].threshold == 0.2
    r = load_recipe(None, ["pool=p.jsonl", "select={<<: {budget: 5, threshold: 0.2}, budget: 7}"])
    assert (r.select.budget, r.select.threshold) == (7, 0.2)


def test_an_unknown_key_is_named_at_its_own_path_whatever_its_case():
    for override, where in [("select.Budget=5", "select.Budget"), ("Select.budget=5", "Select"),
                            ("tasks=[{name: a, metric: exact_match, dev: d.jsonl, Dev: x}]", "tasks.0.Dev")]:
        with pytest.raises(TunesetError, match=rf"recipe: {where}: Extra inputs are not permitted; valid: "):
            load_recipe(None, ["pool=p.jsonl", override])


def test_integral_budgets_of_any_number_type_are_counts():
    import numpy as np

    assert [PolicyConfig(budget=b).budget for b in (300.0, np.int64(7), 3)] == [300, 7, 3]


def test_a_key_given_twice_is_an_error_not_the_last_one_winning(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("pool: p.jsonl\nselect:\n  budget: 5\nname: x\nselect:\n  budget: 99\n")
    with pytest.raises(TunesetError, match=r"r\.yaml:5:1: not valid YAML: key 'select' appears twice \(first on line 2\)"):
        load_recipe(p)
    with pytest.raises(TunesetError, match=r"override 'select=\{budget: 3, budget: 4\}': the value is not valid YAML: key 'budget' appears twice"):
        load_recipe(None, ["pool=p.jsonl", "select={budget: 3, budget: 4}"])


@pytest.mark.parametrize(("override", "message"), [
    ("nokey", "override 'nokey' is not of the form key.path=value"),
    ("score.selectors=[random", "override 'score.selectors=[random': the value is not valid YAML: expected ',' or ']', but got '<stream end>'"),
    ("name.x=1", "override 'name.x=1': 'name' is not a section"),
])
def test_malformed_overrides(recipe_file, override, message):
    with pytest.raises(TunesetError) as e:
        load_recipe(recipe_file, [override])
    assert str(e.value) == message


@pytest.mark.parametrize(("override", "where", "message"), [
    ("select.budgt=3", "select.budgt", "Extra inputs are not permitted"),
    ("select.budget=0", "select.budget", "a count budget is at least 1"),
    ("select.budget=150%", "select.budget", "a percent budget lies in (0, 100]"),
    ("select.budget=ten", "select.budget", "a budget is a row count (300) or a percent ('10%')"),
    ("select.band=[0.5, 0.2]", "select.band", "band is [lo, hi] quantiles with 0 <= lo < hi <= 1"),
    ("model.max_length=8", "model.max_length", "greater than or equal to 16"),
    ("curate.decontaminate_ngram=2", "curate.decontaminate_ngram", "greater than or equal to 4"),
    ("score.runner=spark", "score.runner", "'local', 'dask' or 'ray'"),
    ("finetune.method=qlora", "finetune.method", "'lora' or 'full'"),
    # a union: the member that got furthest into the value speaks, else every member that failed at once
    ("select.targets={sentiment: lots}", "select.targets.sentiment", "Input should be a valid number"),
    ("select.targets=banana", "select.targets", "Input should be 'equal' or 'dev_size', or a valid dictionary"),
    ("score.selectors=[{name: random, params: {seed: 1}}, {name: random, params: {seed: 2}}]", "score.selectors",
     "selector names repeat: random"),
    ("evaluate.max_test_rows=0", "evaluate.max_test_rows", "greater than or equal to 1"),
    ("evaluate.max_new_tokens=0", "evaluate.max_new_tokens", "greater than or equal to 1"),
])
def test_validation_errors_name_file_and_field(recipe_file, override, where, message):
    with pytest.raises(TunesetError) as e:
        load_recipe(recipe_file, [override])
    assert str(e.value).startswith(f"{recipe_file}: {where}: ")
    assert message in str(e.value)


def test_two_rows_errors_in_one_list_are_not_offered_as_alternatives(recipe_file):
    with pytest.raises(TunesetError) as e:
        load_recipe(recipe_file, ["tasks=[{name: a, metric: 5, dev: x.jsonl}, {name: b, dev: x.jsonl}]"])
    assert str(e.value) == f"{recipe_file}: tasks.0.metric: Input should be a valid string"


def test_an_answer_budget_that_leaves_no_room_for_the_prompt_is_an_error(recipe_file):
    with pytest.raises(TunesetError, match=r"evaluate.max_new_tokens \(300\) must be below model.max_length \(256\)"):
        load_recipe(recipe_file, ["model.max_length=256", "evaluate.max_new_tokens=300"])


def test_missing_pool_is_named(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\n")
    with pytest.raises(TunesetError, match=r"r\.yaml: pool: Field required"):
        load_recipe(p)


@pytest.mark.parametrize(("text", "message"), [
    ("name: [unclosed\n", r"r\.yaml:2:1: not valid YAML: "),
    ("- a\n- b\n", "a recipe is a YAML mapping"),
])
def test_unreadable_recipe(tmp_path, text, message):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(TunesetError, match=message) as e:
        load_recipe(p)
    assert str(e.value).startswith(str(p))


def test_missing_recipe_file(tmp_path):
    with pytest.raises(TunesetError, match=r"nope\.yaml: cannot read recipe"):
        load_recipe(tmp_path / "nope.yaml")


def test_demo_tasks_file():
    tasks = load_tasks_file(demo_tasks_file())
    assert [(t.name, t.metric) for t in tasks] == [("sentiment", "choice_accuracy"), ("capitals", "exact_match")]
    sentiment, capitals = tasks
    assert sentiment.choices == ["negative", "positive"]
    assert capitals.choices is None
    root = demo_tasks_file().parent
    assert sentiment.dev == root / "targets" / "sentiment" / "dev.jsonl"
    assert capitals.test == root / "targets" / "capitals" / "test.jsonl"
    assert all(t.dev.is_file() and t.test.is_file() for t in tasks)


def test_tasks_file_subset_keeps_requested_order():
    tasks = load_tasks_file(demo_tasks_file(), ["capitals", "sentiment"])
    assert [t.name for t in tasks] == ["capitals", "sentiment"]


def test_tasks_file_unknown_task_lists_valid_ones():
    with pytest.raises(TunesetError) as e:
        load_tasks_file(demo_tasks_file(), ["sentiment", "math"])
    assert str(e.value) == f"{demo_tasks_file()}: unknown task 'math'; valid: sentiment, capitals"


def test_tasks_file_default_paths_and_non_list_choices(tmp_path):
    p = tmp_path / "tasks.json"
    p.write_text(json.dumps({"qa": {"metric": "exact_match", "choices": "per-row"}}))
    (t,) = load_tasks_file(p)
    assert (t.dev, t.test, t.choices) == (tmp_path / "targets/qa/dev.jsonl", None, None)  # no test file: select-only
    (tmp_path / "targets/qa").mkdir(parents=True)
    (tmp_path / "targets/qa/test.jsonl").write_text("")
    (t,) = load_tasks_file(p)
    assert t.test == tmp_path / "targets/qa/test.jsonl"


@pytest.mark.parametrize(("spec", "message"), [
    ([{"name": "qa", "metric": "exact_match"}], r"a tasks file maps each task name to its spec.*got a JSON list"),
    ({"qa": "exact_match"}, r"task 'qa': a task's spec is an object with at least 'metric', not 'exact_match'"),
    ({"qa": {"metric": "exact_match", "devv": "qa.jsonl"}}, r"task 'qa': devv: Extra inputs are not permitted; valid: metric, dev, test"),
    ({"qa": {"dev": "qa.jsonl"}}, r"task 'qa': metric: Field required"),
])
def test_a_tasks_file_mistake_names_the_task_and_field(tmp_path, spec, message):
    """A misspelt `dev` used to fall back to targets/<task>/dev.jsonl silently."""
    p = tmp_path / "tasks.json"
    p.write_text(json.dumps(spec))
    with pytest.raises(TunesetError, match=message):
        load_tasks_file(p)


def test_broken_tasks_file(tmp_path):
    p = tmp_path / "tasks.json"
    p.write_text('{"qa": ')
    with pytest.raises(TunesetError, match=r"tasks\.json: cannot read tasks file"):
        load_tasks_file(p)
    with pytest.raises(TunesetError, match=r"missing\.json: cannot read tasks file"):
        load_tasks_file(tmp_path / "missing.json")


def test_tasks_file_entry_without_metric_is_named(tmp_path):
    p = tmp_path / "tasks.json"
    p.write_text(json.dumps({"qa": {"dev": "d.jsonl", "test": "t.jsonl"}}))
    with pytest.raises(TunesetError) as e:
        load_tasks_file(p)
    assert str(p) in str(e.value) and "qa" in str(e.value) and "metric" in str(e.value)


def test_tasks_file_entry_with_invalid_metric_is_named(tmp_path):
    """Metrics are a registry above the recipe module: the recipe check names the task and the valid metrics."""
    from tuneset.flows.checks import check_recipe

    p = tmp_path / "tasks.json"
    p.write_text(json.dumps({"qa": {"metric": "bleu"}}))
    with pytest.raises(TunesetError, match=r"task 'qa': metric: unknown metric 'bleu'; valid: choice_accuracy, exact_match, target_loss"):
        check_recipe(load_recipe(None, ["pool=/p.jsonl", f"tasks={p}"]))


def test_recipe_with_tasks_file_and_task_names():
    r = load_recipe(None, ["pool=/p.jsonl", f"tasks={demo_tasks_file()}", "task_names=[capitals]"])
    assert [t.name for t in r.task_specs()] == ["capitals"]
    with pytest.raises(TunesetError, match="unknown task 'nope'; valid: sentiment, capitals"):
        load_recipe(None, ["pool=/p.jsonl", f"tasks={demo_tasks_file()}", "task_names=[nope]"])


def test_inline_task_list_with_unknown_task_name(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(
        "pool: /p.jsonl\n"
        "tasks:\n  - {name: qa, metric: exact_match, dev: d.jsonl, test: t.jsonl}\n"
        "task_names: [qa, zz]\n"
    )
    with pytest.raises(TunesetError, match=r"unknown task\(s\) \['zz'\]; valid: \['qa'\]"):
        load_recipe(p)
    r = load_recipe(p, ["task_names=[qa]"])
    assert [t.name for t in r.task_specs()] == ["qa"]


def test_demo_recipe_loads_with_its_tasks():
    r = load_recipe(demo_recipe_file())
    assert r.pool == demo_pool_file() and r.pool.is_file()
    assert [t.name for t in r.task_specs()] == ["sentiment", "capitals"]
    assert [s.name for s in r.compare.strategies] == ["random", "ifd", "embedding_knn"]
    assert r.compare.budgets == ["10%"]


def test_strategy_policy_defaults_to_its_own_selector():
    assert Strategy(name="ifd").policy(50) == PolicyConfig(weights={"ifd": 1.0}, budget=50)
    st = Strategy(name="mix", weights={"ppl": 1, "-len": 2}, quota_by="source")
    assert st.policy("5%") == PolicyConfig(weights={"ppl": 1, "-len": 2}, budget="5%", quota_by="source")
    assert CompareConfig(strategies=["a", {"name": "b"}]).strategies == [Strategy(name="a"), Strategy(name="b")]


def test_recipe_model_rejects_unknown_top_level_key():
    with pytest.raises(TunesetError, match="recipe: colour: Extra inputs are not permitted"):
        load_recipe(None, ["pool=/p.jsonl", "colour=blue"])
    assert isinstance(load_recipe(None, ["pool=/p.jsonl"]), Recipe)


def test_model_adapter_reaches_the_scoring_context(recipe_file, tmp_path):
    from tuneset.flows.context import run_context

    r = load_recipe(recipe_file, ["model.adapter=/runs/round1/adapter", f"work_dir={tmp_path}"])
    ctx = run_context(r).scoring()
    assert (ctx.model, ctx.adapter) == ("smollm2", "/runs/round1/adapter")


def test_a_strategy_carries_every_policy_field_and_its_own_curation():
    st = Strategy(name="rec", weights={"got": 1}, targets="equal", threshold=0.2, band=(0.1, 0.9),
                  max_similarity=0.9, curate={"relabel": {"min_prob": 0.7}})
    p = st.policy(300)
    assert (p.weights, p.budget, p.targets, p.threshold, p.band, p.max_similarity) == (
        {"got": 1}, 300, "equal", 0.2, (0.1, 0.9), 0.9)
    assert st.curate.relabel.min_prob == 0.7 and st.columns() == ["got"]
    with pytest.raises(ValueError, match="compare.budgets sets every strategy's budget"):
        Strategy(name="x", budget=10)  # the compare's budgets set it


def test_compare_rejects_repeated_names_and_a_sweep_over_an_unknown_strategy():
    with pytest.raises(ValueError, match=r"repeated: \['got'\]"):
        CompareConfig(strategies=["got", "got"])
    with pytest.raises(ValueError, match=r"sweep.strategy 'knn' is not a compare strategy; valid: \['random'\]"):
        CompareConfig(strategies=["random"], sweep={"strategy": "knn"})
    with pytest.raises(ValueError, match=r"must differ from strategies and baselines; repeated: \['random'\]"):
        CompareConfig(strategies=["random"], references={"random": "/r.jsonl"})
    with pytest.raises(ValueError, match=r"seeds must be unique; repeated: \[0\]"):
        CompareConfig(seeds=[0, 1, 0])  # the leaderboard would count a second, identical seed
    with pytest.raises(ValueError, match=r"full_seeds must be unique; repeated: \[2\]"):
        CompareConfig(full_seeds=[2, 2])
    for budgets in (["10%", "10%"], [30, 30.0]):  # each repeat counted as further, identical seeds
        with pytest.raises(ValueError, match=r"budgets must be unique; repeated: \['(10%|30)'\]"):
            CompareConfig(budgets=budgets)
    for name in ("none", "full"):  # the leaderboard read them as the baselines
        with pytest.raises(ValueError, match=rf"strategy names 'none' and 'full' name the baselines; rename {name}"):
            CompareConfig(strategies=["random", {"name": name, "weights": {"random": 1}}])
    for epochs in (0, -1):  # 0 was ignored (falsy), -1 reached the full pool's fine-tune
        with pytest.raises(ValueError, match="full_epochs"):
            CompareConfig(full_epochs=epochs)


@pytest.mark.parametrize(("grid", "message"), [
    ({"lrr": [1e-3]}, "unknown fine-tune setting 'lrr' in the sweep grid; valid: .*lr"),
    ({"lr": []}, "needs a non-empty list"),
    ({"lr": [-1.0]}, "greater than 0"),
    ({"prompt_format": ["markdown"]}, "'auto', 'chat' or 'plain'"),
])
def test_sweep_grid_is_checked_at_load(grid, message):
    from tuneset.recipe import SweepConfig

    with pytest.raises(ValueError, match=message):
        SweepConfig(grid=grid)


def test_sweep_points_are_the_grid_product_on_the_recipe_settings():
    from tuneset.recipe import FinetuneConfig, SweepConfig

    pts = SweepConfig(grid={"lr": [1e-4, 1e-3], "epochs": [1, 2, 3]}).points(FinetuneConfig(batch_size=4))
    assert [(p.lr, p.epochs) for p in pts] == [(1e-4, 1), (1e-4, 2), (1e-4, 3), (1e-3, 1), (1e-3, 2), (1e-3, 3)]
    assert {p.batch_size for p in pts} == {4}


def test_full_fine_tuning_takes_its_own_default_lr(recipe_file):
    """LoRA's lr on every weight of the model was the old full-fine-tune default; each method now
    has the step size its own dev-row sweep chose, and an explicit lr still wins."""
    from tuneset.recipe import DEFAULT_LR, FinetuneConfig, SweepConfig

    assert FinetuneConfig().lr == DEFAULT_LR["lora"] == 1e-3
    assert FinetuneConfig(method="full").lr == DEFAULT_LR["full"] < DEFAULT_LR["lora"]
    assert load_recipe(recipe_file, ["finetune.method=full"]).finetune.lr == DEFAULT_LR["full"]
    assert load_recipe(recipe_file, ["finetune.method=full", "finetune.lr=2e-3"]).finetune.lr == 2e-3
    # The resolved value is what a cache key and a leaderboard see.
    assert FinetuneConfig(method="full").model_dump()["lr"] == DEFAULT_LR["full"]
    # A sweep over the method gives each point its method's lr, unless the recipe set one.
    grid = SweepConfig(grid={"method": ["lora", "full"]})
    assert [p.lr for p in grid.points(FinetuneConfig())] == [DEFAULT_LR["lora"], DEFAULT_LR["full"]]
    assert [p.lr for p in grid.points(FinetuneConfig(lr=5e-4))] == [5e-4, 5e-4]


@pytest.mark.parametrize(("override", "message"), [
    ("finetune.lr=-1", "finetune.lr: Input should be greater than 0"),
    ("finetune.epochs=0", "finetune.epochs: Input should be greater than 0"),
    ("finetune.batch_size=0", "finetune.batch_size: Input should be greater than or equal to 1"),
    ("select.weights={got: .nan}", "weights are finite and positive"),
    ("select.weights={got: 0}", "weights are finite and positive"),
    ("select.targets={}", "targets shares are finite"),
])
def test_impossible_settings_fail_at_load(recipe_file, override, message):
    with pytest.raises(TunesetError, match=message):
        load_recipe(recipe_file, [override])


def test_a_tasks_file_saved_with_a_bom_reads(tmp_path):
    import shutil

    src = demo_tasks_file()
    for d in ("targets",):
        shutil.copytree(src.parent / d, tmp_path / d)
    bom = tmp_path / "tasks.json"
    bom.write_bytes(b"\xef\xbb\xbf" + src.read_bytes())  # what a Windows editor saves
    assert [t.name for t in load_tasks_file(bom)] == [t.name for t in load_tasks_file(src)]


def test_every_relative_path_resolves_against_the_recipe_folder(tmp_path):
    d = tmp_path / "proj"
    (d / "ad").mkdir(parents=True)
    p = d / "r.yaml"
    p.write_text("pool: p.jsonl\nwork_dir: out\nmodel: {adapter: ad}\n"
                 "tasks: [{name: t, metric: exact_match, dev: t/dev.jsonl, test: t/test.jsonl}]\n"
                 "compare: {references: {mine: refs/mine.jsonl}, strategies: [{name: judged, curate: {judge_rows: gold/own.jsonl}}]}\n"
                 "curate: {judge_rows: gold/judged.jsonl}\n")
    r = load_recipe(p)
    assert r.compare.strategies[0].curate.judge_rows == str(d / "gold/own.jsonl")  # a strategy's own curation too
    assert (r.work_dir, r.model.adapter, r.compare.references["mine"]) == (d / "out", str(d / "ad"), d / "refs/mine.jsonl")
    assert r.curate.judge_rows == str(d / "gold/judged.jsonl")
    assert (r.tasks[0].dev, r.tasks[0].test) == (d / "t/dev.jsonl", d / "t/test.jsonl")
    assert load_recipe(p, ["model.adapter=org/hub-adapter"]).model.adapter == "org/hub-adapter"  # not a folder here


@pytest.mark.parametrize("name", ["../../../escaped", "a/b", ".hidden", "", "x" * 200])
def test_names_that_become_paths_cannot_escape_the_work_dir(recipe_file, name):
    with pytest.raises(TunesetError, match="name: String should"):
        load_recipe(recipe_file, [f"name={json.dumps(name)}"])
    with pytest.raises(TunesetError, match="compare.strategies.0.name: String should"):
        load_recipe(recipe_file, [f"compare.strategies=[{{name: {json.dumps(name)}}}]"])


def test_a_control_task_is_evaluated_but_never_aimed_at(tmp_path):
    from tuneset.flows.checks import check_recipe
    from tuneset.flows.context import run_context

    base = [f"pool={demo_pool_file()}", f"tasks={demo_tasks_file()}", f"work_dir={tmp_path}"]
    r = load_recipe(None, [*base, "controls=[capitals]"])
    ctx = run_context(r)
    assert [t.name for t in ctx.tasks] == ["sentiment", "capitals"]  # evaluation still reads it
    assert list(ctx.targets()) == ["sentiment"]  # selectors and budget splits do not
    with pytest.raises(TunesetError, match="select.targets: unknown task 'capitals'; valid: sentiment"):
        check_recipe(load_recipe(None, [*base, "controls=[capitals]", "select.targets={capitals: 1}",
                                        "select.weights={embedding_knn: 1}"]))
    with pytest.raises(TunesetError, match="controls: unknown task 'nope'; valid"):
        load_recipe(None, [*base, "controls=[nope]"])
    with pytest.raises(TunesetError, match="controls name every task"):
        load_recipe(None, [*base, "controls=[sentiment, capitals]"])


def test_a_tasks_file_that_is_not_utf8_names_its_line(tmp_path):
    """After a BOM (which a tasks file may carry), the line count starts where the decoder's does."""
    from tuneset.recipe import load_tasks_file

    p = tmp_path / "tasks.json"
    p.write_bytes(b'\xef\xbb\xbf{\n"a":\n{"metric": "caf\xe9"}}')
    with pytest.raises(TunesetError, match=r"tasks.json: line 3: byte 0xe9 is not UTF-8"):
        load_tasks_file(p)
