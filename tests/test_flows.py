"""Flows end to end on tiny models, inside a throwaway Prefect server (no server needed by users)."""

import importlib
import json
import re
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from tuneset.selectors.base import Selector


@pytest.fixture(scope="module", autouse=True)
def prefect_harness():
    from prefect.logging.configuration import setup_logging
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        setup_logging()  # bind Prefect's console handler to the real stderr, not a CliRunner buffer
        yield


def test_interrupted_score_run_resumes_from_finished_shards(tiny_recipe, monkeypatch):
    from tuneset.flows.common import load_pool, run_context
    from tuneset.flows.score import score_flow

    recipe = tiny_recipe("score.selectors=[perplexity]")
    rows = load_pool(run_context(recipe)).rows
    calls: list[int] = []
    real = Selector.score

    def crash_on_third(self, frame):
        calls.append(frame.height)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(self, frame)

    monkeypatch.setattr(Selector, "score", crash_on_third)
    with pytest.raises(BaseException):  # noqa: B017  (Prefect may wrap the interrupt in its own exception)
        score_flow(recipe, rows)
    finished = len(list((run_context(recipe).store.root / "row-scores").glob("*/parts/*.parquet")))
    assert 2 <= finished < 4  # 4 shards of 16 rows; the killed one left nothing behind
    calls.clear()
    monkeypatch.setattr(Selector, "score", lambda self, frame: calls.append(frame.height) or real(self, frame))
    ref = score_flow(recipe, rows)
    assert len(calls) == 4 - finished  # only unfinished shards are computed
    assert ref.read().height == rows.n
    calls.clear()
    score_flow(recipe, rows)
    assert calls == []  # finished: nothing recomputed


def test_map_reduce_selectors_on_the_runner_equal_one_process(tiny_recipe):
    """dsir's counts and semdedup's clusters go out as tasks (16-row shards, several parts); the
    table equals scoring the pool in one process."""
    from polars.testing import assert_frame_equal

    from tuneset.flows.common import load_pool, run_context
    from tuneset.flows.score import score_flow
    from tuneset.selectors import make_selector

    recipe = tiny_recipe("score.selectors=[dsir, {name: semdedup, params: {n_clusters: 5}}]")
    ctx = run_context(recipe)
    rows = load_pool(ctx).rows
    table = score_flow(recipe, rows).read()
    for name, params in (("dsir", {}), ("semdedup", {"n_clusters": 5})):
        direct = make_selector(name, params).fit(ctx.scoring(0, None)).score(rows.read())
        got = table.select("id", *[c for c in table.columns if c == name or c.startswith(f"{name}.")])
        assert_frame_equal(got, direct.rename({c: name if c == "score" else f"{name}.{c}" for c in direct.columns if c != "id"}))


def test_curate_quarantines_bad_rows_and_accounts_for_every_row(tiny_recipe, tmp_path):
    from tuneset.flows.curate import curate_flow

    shards = tmp_path / "shards"
    shards.mkdir()
    recipe = tiny_recipe("quarantine=true", f"pool={shards}")
    lines = (tmp_path / "pool.jsonl").read_text().splitlines()
    lines[3] = '{"id": "bad", "instruction": "x"'
    lines[5] = json.dumps({"id": "bad2", "instruction": "x", "response": 3})
    lines.append(lines[0].replace('"id": "', '"id": "copy-'))
    (shards / "1.jsonl").write_text("\n".join(lines) + "\n")
    (shards / "2.jsonl").write_text("\n".join(lines[:2]) + "\n")  # two rows sent again: read once, and counted
    res = curate_flow(recipe)
    assert sum(res.counts.values()) == len(lines)
    assert res.counts["quarantined"] == 2 and res.counts["dropped"] >= 1
    assert "besides them, 2 rows repeated an earlier file's row exactly" in Path(res.report).read_text()
    audit = pl.read_parquet(res.audit)
    assert audit.filter(pl.col("action") == "quarantined")["reason"].str.contains(":6: field 'response'").any()
    assert audit.filter(pl.col("id").str.starts_with("copy-"))["reason"][0].startswith("duplicate of ")


def test_a_curation_killed_while_writing_its_files_leaves_the_last_set_whole(tiny_recipe, tmp_path, monkeypatch):
    """curated.jsonl, the audit, its CSV, the plot and the report change together: a kill after the
    first of them leaves the previous run's five, not new rows beside an old audit."""
    import tuneset.flows.curate as curate_mod
    from tuneset.flows.curate import curate_flow

    recipe = tiny_recipe()
    first = curate_flow(recipe)
    folder = Path(first.audit).parent
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    lines = (tmp_path / "pool.jsonl").read_text().splitlines()
    (tmp_path / "pool.jsonl").write_text("\n".join(lines[:40]) + "\n")

    def killed(*a, **k):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(curate_mod, "write_csv", killed)  # after curated.jsonl and the audit are written
    with pytest.raises(KeyboardInterrupt):
        curate_flow(recipe)
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before


def test_the_judge_gate_measures_the_judge_on_known_answers_and_holds_back_a_weak_one(tiny_recipe, monkeypatch):
    """A random tiny model cannot separate the dev rows' answers from spoiled ones perfectly: at a
    bar of 1.0 its confidence filter and rewrites are skipped, the report says why, and the plot
    draws no threshold for the skipped filter."""
    import tuneset.flows.curate as curate_module
    from tuneset.flows.curate import curate_flow

    plotted: list = []
    real_plot = curate_module.plot_scores
    monkeypatch.setattr(curate_module, "plot_scores", lambda audit, columns, path, filters=(): plotted.append(
        (columns, list(filters))) or real_plot(audit, columns, path, filters))

    recipe = tiny_recipe(
        "curate.rewrite={margin: 0.0}", "curate.judge_min_auroc=1.0", "curate.filters=[{column: confidence.p_end, min: 0.99}]",
        "score.selectors=[{name: confidence, params: {components: [likelihood]}},"
        " {name: rewrite, params: {confidence: {components: [likelihood]}, below: 1.0, max_new_tokens: 4}}]",
    )
    res = curate_flow(recipe)
    audit = pl.read_parquet(res.audit)
    assert not audit["reason"].str.contains("confidence.p_end|rewritten").any()  # neither acted
    gate = Path(res.report).read_text().split("## Judge gate", 1)[1]
    assert "confidence.p_end: skipped: on rows with known answers 'confidence.p_end' tells right from wrong at AUROC" in gate
    assert "rewrite: skipped" in gate
    [(_, filters)] = plotted
    assert filters == []  # no threshold line for a filter that did not act


def test_the_judge_gate_measures_on_the_recipes_own_judge_rows(tiny_recipe, tmp_path):
    """curate.judge_rows replaces the tasks' dev pairs: here each wrong row is a copy of a correct
    one, so no judge can tell them apart (AUROC exactly 0.50) and the gate holds the filter back."""
    import json

    from tuneset.flows.curate import curate_flow

    rows = [{"instruction": f"What is {i} + {i}?", "response": f"{2 * i}", "source": "maths"} for i in range(6)]
    judged = [{**r, "id": f"{verdict}-{i}", "correct": verdict == "right"} for verdict in ("right", "wrong")
              for i, r in enumerate(rows)]
    (tmp_path / "judge.jsonl").write_text("\n".join(json.dumps(r) for r in judged) + "\n")
    recipe = tiny_recipe(
        f"curate.judge_rows={tmp_path / 'judge.jsonl'}", "curate.filters=[{column: confidence.p_end, min: 0.99}]",
        "score.selectors=[{name: confidence, params: {components: [likelihood]}}]",
    )
    res = curate_flow(recipe)
    gate = Path(res.report).read_text().split("## Judge gate", 1)[1]
    assert "tells right from wrong at AUROC 0.50, below curate.judge_min_auroc 0.6" in gate
    assert not pl.read_parquet(res.audit)["reason"].str.contains("confidence.p_end").any()


def test_curate_corrects_and_the_audit_rebuilds_the_input(tiny_recipe, caplog):
    """Relabel, rewrite, near-dedup and a confidence filter through the flow, with the tiny models."""
    import logging

    from tuneset.curation.audit import reconstruct_input
    from tuneset.data import load_rows
    from tuneset.flows.curate import curate_flow

    recipe = tiny_recipe(
        "curate.relabel={min_prob: 0.05}", "curate.rewrite={margin: 0.0}", "curate.judge_min_auroc=null",
        "curate.near_dedup=0.999", "curate.filters=[{column: confidence.p_end, min: 0.0}]",
        "score.selectors=[{name: confidence, params: {components: [likelihood]}}, {name: label_quality, params: {sources: [reviews], folds: 2}},"
        " {name: rewrite, params: {confidence: {components: [likelihood]}, below: 1.0, max_new_tokens: 4}}]",
    )
    with caplog.at_level(logging.INFO, logger="tuneset.progress"):
        res = curate_flow(recipe)
    audit = pl.read_parquet(res.audit)
    assert res.counts["corrected"] > 0
    progress = [r.getMessage() for r in caplog.records if r.name == "tuneset.progress"]
    assert any(re.match(r"label_quality: fit label groups: (\d+)/\1 rows \(100%\).*group reviews", ln)
               for ln in progress), progress  # the global step's fits say where they are
    assert audit.filter(pl.col("source") == "reviews")["label_quality.in_label_group"].min() == 1
    flagged = audit.filter((pl.col("label_quality.label_issue") == 1) & ~pl.col("reason").str.contains("duplicate of"))  # an earlier reason stands
    assert flagged["reason"].str.contains("label issue").all()  # relabelled or dropped, never kept silently
    assert {"confidence", "label_quality", "semdedup.duplicate_of", "rewrite.proposed"} <= set(audit.columns)
    assert audit["reason"].str.starts_with("rewritten: model answer confidence").any()
    report = Path(res.report)
    assert (report.parent / "scores.png").stat().st_size > 0 and "Scores by action" in report.read_text()
    curated = load_rows(report.parent / "curated.jsonl").rows
    original = load_rows(recipe.pool).rows
    assert reconstruct_input(curated, audit).to_dicts() == original.to_dicts()


def test_near_dedup_is_the_cosine_semdedup_runs_at(tiny_recipe):
    """A near_dedup below semdedup's default 0.95 drops the rows between the two: the step's setting
    is the SemDeDup pass's own threshold, not a second cut after a pass at 0.95."""
    from tuneset.flows.curate import curate_flow

    def near_dups(cut: str) -> pl.DataFrame:
        recipe = tiny_recipe(f"curate.near_dedup={cut}", "curate.dedup=false", "curate.decontaminate=false",
                             "curate.relabel=null", "curate.judge_min_auroc=null")
        audit = pl.read_parquet(curate_flow(recipe).audit)
        return audit.filter(pl.col("reason").str.starts_with("near-duplicate"))

    loose, strict = near_dups("0.5"), near_dups("0.95")
    assert strict["semdedup.max_similarity"].min() > 0.95
    assert loose.height > strict.height and loose["semdedup.max_similarity"].min() <= 0.95
    assert loose["semdedup.max_similarity"].min() > 0.5


def test_compare_writes_a_leaderboard_with_paired_differences(tiny_recipe):
    from tuneset.flows.compare import compare_flow

    recipe = tiny_recipe("compare.strategies=[random, length, ifd]", "compare.budgets=['25%']", "compare.seeds=[0, 1]")
    out = compare_flow(recipe)
    board = pl.read_csv(out["csv"])
    assert set(board["task"]) == {"sentiment", "capitals"}
    assert board.height == 2 * 5  # none, random, length, ifd, full per task
    length = board.filter((pl.col("strategy") == "length") & (pl.col("task") == "sentiment")).row(0, named=True)
    assert length["seeds"] == 2 and length["vs_random_lo"] <= length["vs_random"] <= length["vs_random_hi"]
    runs = pl.read_csv(out["csv"].replace("leaderboard.csv", "runs.csv"))
    random_rows = runs.filter((pl.col("strategy") == "random") & (pl.col("task") == "sentiment"))["n_rows"]
    assert random_rows.to_list() == [14, 14]  # 25% of the 58 rows left after dedup and decontamination
    md = open(out["markdown"]).read()
    assert "Δ vs random" in md and "Compute per run" in md and "Time of this invocation per stage" in md
    assert open(out["plot"], "rb").read(4) == b"\x89PNG"


def test_compare_arms_on_two_dask_workers_give_the_sequential_leaderboard(tiny_recipe, tmp_path):
    """compare.workers fans the arms out as tasks to the runner's worker processes (one per GPU on
    a cluster); every arm's scores equal the one-at-a-time run's. Threads are refused: fine-tunes
    seed torch's process-wide generator."""
    from tuneset.errors import TunesetError
    from tuneset.flows.compare import compare_flow

    picks = ("compare.strategies=[random, length]", "compare.budgets=['25%']", "compare.seeds=[0]")
    one = pl.read_csv(compare_flow(tiny_recipe(*picks))["csv"])
    two = pl.read_csv(compare_flow(tiny_recipe(*picks, "compare.workers=2", "score.runner=dask", "score.workers=2",
                                               f"work_dir={tmp_path / 'dask'}"))["csv"])
    assert one.height == two.height == 2 * 4  # none, random, length, full per task
    key = ["task", "strategy"]
    assert one.sort(key).select(*key, "mean", "per_seed").equals(two.sort(key).select(*key, "mean", "per_seed"))
    with pytest.raises((TunesetError, ValueError), match="compare.workers > 1 runs arms in parallel worker processes"):
        tiny_recipe(*picks, "compare.workers=2")


def test_a_compare_budget_that_takes_every_candidate_is_an_error(tiny_recipe):
    """Every strategy would train on the same rows: an empty comparison is refused, not warned about."""
    from tuneset.errors import TunesetError
    from tuneset.flows.compare import compare_flow

    recipe = tiny_recipe("compare.strategies=[random, length]", "compare.budgets=[10, 5000]", "compare.seeds=[0]")
    with pytest.raises(TunesetError, match=r"compare.budgets: 5000 takes all \d+ candidate rows of strategy 'random'"):
        compare_flow(recipe)


def test_compare_reuses_finished_runs(tiny_recipe, monkeypatch):
    from tuneset.finetune import sft
    from tuneset.flows import compare as compare_mod

    recipe = tiny_recipe("compare.strategies=[length]", "compare.seeds=[0]", "compare.baselines=[none]")
    compare_mod.compare_flow(recipe)
    monkeypatch.setattr(sft, "train", lambda *a, **k: pytest.fail("retrained a finished run"))
    compare_mod.compare_flow(recipe)


def test_a_compare_of_other_settings_keeps_the_last_board(tiny_recipe):
    """A second compare of one recipe name replaced the first one's leaderboard; now a board the
    same recipe wrote is rewritten in place (a rerun, a resume) and another's is kept."""
    from tuneset.flows.compare import compare_flow

    first = tiny_recipe("compare.strategies=[length]", "compare.seeds=[0]", "compare.baselines=[none]")
    out = Path(compare_flow(first)["csv"]).parent
    compare_flow(first)
    past = out.parent / "compare-history"
    assert not past.exists() and json.loads((out / "recipe.json").read_text())["compare"]["seeds"] == [0]
    compare_flow(tiny_recipe("compare.strategies=[length]", "compare.seeds=[]", "compare.baselines=[none]"))
    [kept] = list(past.iterdir())
    assert kept.name.startswith("00000-") and "length" in set(pl.read_csv(kept / "leaderboard.csv")["strategy"])
    assert "length" not in set(pl.read_csv(out / "leaderboard.csv")["strategy"])  # the new board: none alone
    assert json.loads((out / "recipe.json").read_text())["compare"]["seeds"] == []


def test_compare_reads_each_task_file_once(tiny_recipe, monkeypatch):
    """Curation, every selector shard, selection and every evaluation read the tasks' rows through
    the run context: one read per file per process, however many stages and seeds need them."""
    from collections import Counter

    from tuneset.flows import context
    from tuneset.flows.compare import compare_flow

    reads: Counter[str] = Counter()
    real = context.load_rows

    def counting(path, *a, **k):
        reads[str(Path(path).resolve())] += 1
        return real(path, *a, **k)

    monkeypatch.setattr(context, "_ROWS", {})  # rows other tests read in this process do not count
    monkeypatch.setattr(importlib.import_module("tuneset.data.fingerprint"), "RACY_SECONDS", 0)  # the fixture wrote the files just now
    monkeypatch.setattr(context, "load_rows", counting)
    recipe = tiny_recipe("compare.strategies=[random, embedding_knn]", "compare.budgets=['25%']", "compare.seeds=[0, 1]",
                         "compare.baselines=[none]")
    compare_flow(recipe)
    files = {str(Path(getattr(t, s)).resolve()) for t in recipe.task_specs() for s in ("dev", "test")}
    assert dict(reads) == dict.fromkeys(files, 1)


@pytest.mark.parametrize("settled", [False, True])
def test_task_rows_never_serves_a_same_size_rewrite_whose_mtime_was_put_back(tmp_path, monkeypatch, settled):
    """A rewrite of the same size with its mtime carried over (cp -p, rsync -t) is read again: a
    settled file's memo key holds its ctime and inode, and a file changed within the last
    RACY_SECONDS is not memoised at all, since a rewrite within one timestamp tick keeps every field."""
    import os
    import time

    from tuneset.flows import context

    monkeypatch.setattr(context, "_ROWS", {})
    if settled:
        monkeypatch.setattr(importlib.import_module("tuneset.data.fingerprint"), "RACY_SECONDS", 0)
    path = tmp_path / "task.jsonl"
    path.write_text('{"instruction": "q", "response": "yes"}\n')
    mtime = path.stat().st_mtime_ns
    assert context.task_rows(path)["response"].to_list() == ["yes"]
    time.sleep(0.05)  # past a coarse clock's tick, so a settled file's ctime moves
    path.write_text('{"instruction": "q", "response": "yep"}\n')
    os.utime(path, ns=(mtime, mtime))
    assert context.task_rows(path)["response"].to_list() == ["yep"]


def test_a_settled_file_with_a_future_mtime_is_memoised(tmp_path, monkeypatch):
    """An archive's or a skewed clock's mtime in the future must not keep a file out of the memo
    for hours (local weights hashed on every call): the racy window reads ctime, which utime cannot set."""
    import os
    import time

    fp = importlib.import_module("tuneset.data.fingerprint")
    monkeypatch.setattr(fp, "RACY_SECONDS", 1)
    f = tmp_path / "weights.bin"
    f.write_bytes(b"w")
    later = time.time_ns() + 3600 * 10**9
    os.utime(f, ns=(later, later))
    time.sleep(1.1)
    assert fp.file_stamp(f) is not None


def test_pipeline_runs_every_stage(tiny_recipe):
    from tuneset.flows.common import run_context
    from tuneset.flows.pipeline import pipeline_flow
    from tuneset.flows.train_eval import evaluate_model

    recipe = tiny_recipe("score.selectors=[length, embedding_knn]", "select.weights={embedding_knn: 2, length: 1}", "select.budget=10")
    summary = pipeline_flow(recipe)
    assert summary["selected"] == 10
    assert set(summary["finetuned"]) == {"sentiment", "capitals"}
    # each task's most common answer, counted from the fine-tuned model's own test predictions
    tuned = evaluate_model(run_context(recipe), summary["model_dir"])
    for task, top in summary["finetuned_top_answer"].items():
        preds = pl.read_parquet(tuned[task])["prediction"]
        assert top["share"] == (preds == top["answer"]).sum() / preds.len() == preds.value_counts()["count"].max() / preds.len()
    table = pl.read_parquet(summary["selection_table"])
    assert table["selected"].sum() == 10 and table["reason"].str.len_chars().min() > 0



def test_auto_and_the_format_it_resolves_to_share_one_fine_tune(tiny_recipe, chat_lm_dir, monkeypatch):
    """`tuneset pipeline` (format auto) and a compare (format chat) train the same weights on an
    Instruct model: one fine-tune, not two (on the bench the second cost 6 minutes)."""
    from tuneset.flows import train_eval
    from tuneset.flows.common import load_pool
    from tuneset.flows.context import run_context

    chat = chat_lm_dir
    trained = []
    real = train_eval.train
    monkeypatch.setattr(train_eval, "train", lambda *a, **k: trained.append(a[1].prompt_format) or real(*a, **k))
    folders = set()
    for fmt in ("auto", "chat"):
        ctx = run_context(tiny_recipe(f"model.name={chat}", f"finetune.prompt_format={fmt}"))
        folders.add(train_eval.finetune_task(ctx, load_pool(ctx).rows, 0))
    assert trained == ["chat"] and len(folders) == 1
    plain = run_context(tiny_recipe(f"model.name={chat}", "finetune.prompt_format=plain"))
    assert train_eval.finetune_task(plain, load_pool(plain).rows, 0) not in folders and trained == ["chat", "plain"]

def test_a_fine_tune_is_keyed_by_what_it_trains_on_not_by_ids_or_sources(tiny_recipe, monkeypatch):
    """Re-exported ids or re-tagged sources train the same weights: one fine-tune. Other text,
    or the same rows in another order, is another fine-tune."""
    from tuneset.flows import train_eval
    from tuneset.flows.common import load_pool, save_rows
    from tuneset.flows.context import run_context

    trained = []
    real = train_eval.train
    monkeypatch.setattr(train_eval, "train", lambda *a, **k: trained.append(1) or real(*a, **k))
    ctx = run_context(tiny_recipe())
    rows = load_pool(ctx).rows.read().head(12)
    first = train_eval.finetune_task(ctx, save_rows(ctx.store, rows), 0)
    renamed = rows.with_columns(pl.lit("elsewhere").alias("source"), ("x-" + pl.col("id")).alias("id"))
    assert train_eval.finetune_task(ctx, save_rows(ctx.store, renamed), 0) == first and len(trained) == 1
    for other in (rows.reverse(), rows.with_columns(pl.col("response") + "!")):
        assert train_eval.finetune_task(ctx, save_rows(ctx.store, other), 0) != first
    assert len(trained) == 3


def test_the_pipeline_measures_its_gain_against_the_base_model_at_its_best_prompt_format(tiny_recipe, chat_lm_dir):
    """An Instruct model can do worse under its own chat template than as plain text (SmolLM2: sst2
    0.580 vs 0.800), so the no-fine-tune figure takes the format the base model does best with on
    the target dev rows, whatever format the recipe fine-tunes with."""
    from tuneset.flows.context import run_context
    from tuneset.flows.pipeline import pipeline_flow
    from tuneset.flows.sweep import best_base_format
    from tuneset.flows.train_eval import evaluate_model

    chat = chat_lm_dir
    probe = run_context(tiny_recipe(f"model.name={chat}"))
    best = best_base_format(probe, ["chat", "plain"])
    other = "plain" if best == "chat" else "chat"
    recipe = tiny_recipe(f"model.name={chat}", f"finetune.prompt_format={other}", "score.selectors=[length]",
                         "select.weights={length: 1}", "select.budget=10")
    summary = pipeline_flow(recipe)
    assert summary["no_finetune_format"] == best
    ctx = run_context(recipe)
    at_best = ctx.with_recipe(finetune=recipe.finetune.model_copy(update={"prompt_format": best}))
    assert summary["no_finetune"] == {k: float(pl.read_parquet(p)["score"].mean()) for k, p in evaluate_model(at_best, None).items()}

def test_less_through_the_flows_trains_its_warmup_once_and_explains_selected_rows(tiny_recipe, monkeypatch):
    from tuneset.flows import warmup as warmup_mod
    from tuneset.flows.common import load_pool, run_context
    from tuneset.flows.score import score_flow
    from tuneset.flows.select import select_rows
    from tuneset.recipe import PolicyConfig

    recipe = tiny_recipe("score.selectors=[{name: less, params: {dim: 256, warmup: {fraction: 0.5, epochs: 2, batch_size: 8}}}]")
    rows = load_pool(run_context(recipe)).rows
    trained = []
    real = warmup_mod.train
    monkeypatch.setattr(warmup_mod, "train", lambda *a, **k: trained.append(1) or real(*a, **k))
    scores = score_flow(recipe, rows)
    table = scores.read()
    assert {"less", "less.vs_sentiment", "less.vs_capitals", "less.top_dev"} <= set(table.columns)
    score_flow(recipe, rows, seed=1)  # another seed, cached warm-up and scores
    assert trained == [1]
    sel = select_rows(run_context(recipe), rows, scores, PolicyConfig(weights={"less": 1.0}, budget=5))
    chosen = pl.read_parquet(sel.table).filter("selected")
    assert chosen.height == 5 and chosen["less.top_dev"].str.contains(":").all()


runner = CliRunner()


def test_cli_lists_selectors():
    from tuneset.cli import app

    res = runner.invoke(app, ["selectors"])
    assert res.exit_code == 0
    for name in ("random", "length", "perplexity", "ifd", "embedding_knn"):
        assert name in res.output


def test_cli_names_the_bad_recipe_field(tmp_path):
    from tuneset.cli import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text("pool: p.jsonl\nselect:\n  budjet: 3\n")
    res = runner.invoke(app, ["curate", str(recipe)])
    assert res.exit_code == 2 and "select.budjet" in res.output


def test_cli_names_file_line_and_field_of_bad_input(tmp_path, tiny_recipe):
    from tuneset.cli import app

    pool = tmp_path / "bad.jsonl"
    pool.write_bytes(b'{"id": "a", "instruction": "x", "response": "y"}\n{"id": "b", "instruction": "\xff\xfe", "response": "y"}\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"pool: {pool}\n")
    res = runner.invoke(app, ["curate", str(recipe)])
    assert res.exit_code == 2 and "bad.jsonl:2" in res.output and "invalid UTF-8" in res.output


def test_bench_skips_cleanly_without_shared(tmp_path):
    from tuneset.cli import app

    res = runner.invoke(app, ["bench", "--shared", str(tmp_path / "nowhere")])
    assert res.exit_code == 0 and "skipped" in res.output


def test_bench_without_its_recipe_fails_rather_than_running_defaults(tmp_path, monkeypatch, demo_dir):
    """An installed copy has no recipes/ beside the package: bench says so instead of benching on
    the recipe defaults (other settings, other arms) under the bench's name."""
    import tuneset.cli as cli

    (tmp_path / "shared" / "bench").mkdir(parents=True)
    (tmp_path / "shared" / "bench" / "tasks.json").write_text((demo_dir / "tasks.json").read_text())
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "site-packages" / "tuneset" / "cli.py"))
    res = runner.invoke(cli.app, ["bench", "--shared", str(tmp_path / "shared")])
    assert res.exit_code == 2 and "the bench recipe ships with the source tree" in res.output


def test_serve_rejects_a_bad_cron_before_serving(tmp_path, demo_dir):
    from tuneset.cli import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"pool: {demo_dir / 'pool.jsonl'}\n")
    res = runner.invoke(app, ["serve", str(recipe), "--cron", "every tuesday"])
    assert res.exit_code == 2 and "bad cron expression" in res.output


def test_a_scheduled_run_checks_the_edited_recipe_before_any_work(tmp_path, demo_dir):
    """serve re-reads the recipe at every tick: an edit that cannot work fails that run with the same
    one-line error `tuneset pipeline` gives, before anything is scored."""
    from tuneset.errors import TunesetError
    from tuneset.flows.pipeline import scheduled_pipeline

    recipe = tmp_path / "served.yaml"
    recipe.write_text(f"pool: {demo_dir / 'pool.jsonl'}\ntasks: {demo_dir / 'tasks.json'}\nwork_dir: {tmp_path / 'w'}\n"
                      "score: {selectors: [length]}\nselect: {weights: {random: 1}}\n")
    with pytest.raises(TunesetError, match="select.weights: 'random' needs selector 'random', which score.selectors does not run"):
        scheduled_pipeline.fn(str(recipe))
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("runner", ["dask", "ray"])
def test_cluster_runners_name_the_extra_to_install(runner):
    import importlib.util

    from tuneset.errors import TunesetError
    from tuneset.flows.score import task_runner
    from tuneset.recipe import ScoreConfig

    cfg = ScoreConfig(runner=runner, workers=2)
    if importlib.util.find_spec(f"prefect_{runner}") is None:
        with pytest.raises(TunesetError, match=rf"tuneset\[{runner}\]"):
            task_runner(cfg)
    else:
        assert type(task_runner(cfg)).__name__.lower().startswith(runner)


def test_compare_sweeps_settings_on_dev_rows_and_runs_reference_and_composite_arms(tiny_recipe, tmp_path, monkeypatch):
    from tuneset.flows import train_eval
    from tuneset.flows.compare import compare_flow

    ref = tmp_path / "mine.jsonl"
    ref.write_text("".join(line + "\n" for line in tiny_recipe().pool.read_text().splitlines()[:10]))
    splits: list[str] = []
    real = train_eval.evaluate_task
    monkeypatch.setattr(train_eval, "evaluate_task", lambda lm, t, rows, *a: splits.append(str(rows["id"][0])) or real(lm, t, rows, *a))
    recipe = tiny_recipe(
        "compare.strategies=[random, {name: knn2, weights: {embedding_knn: 1}, targets: equal, curate: {dedup: true, filters: [{column: length, max: 400}]}}]",
        "compare.budgets=[10]", "compare.seeds=[0]", "compare.baselines=[none]",
        "compare.sweep={strategy: random, grid: {lr: [1.0e-3, 3.0e-2]}}", f"compare.references={{mine: {ref}}}",
        "score.selectors=[length, embedding_knn]")
    out = compare_flow(recipe)
    sweep_md = (recipe.work_dir / "runs" / recipe.name / "sweep" / "sweep-10.md").read_text()
    assert "scored on dev rows only" in sweep_md and sweep_md.count("| 0.001 |") == 1 and "| 0.03 |" in sweep_md
    board = pl.read_csv(out["csv"])
    assert set(board["strategy"]) == {"none", "random", "knn2", "mine (reference)"}
    assert board["dev_mean"].null_count() == 0
    md = open(out["markdown"]).read()
    assert "budget 10 and full pool: lr " in md and "no fine-tune: prompt format " in md and "n/a" in md
    # Test rows were evaluated, but never for the sweep: its evaluations are all dev rows.
    runs = pl.read_csv(out["csv"].replace("leaderboard.csv", "runs.csv"))
    test_ids = {i for p in runs["examples"] for i in pl.read_parquet(p)["id"]}
    # 2 grid points x 2 tasks, before anything else; the tiny tokenizer takes one prompt format and
    # there is no control, so the base model has nothing to be evaluated on dev rows for.
    sweep_evals = splits[:2 * 2]
    assert not set(sweep_evals) & test_ids and all("-dev-" in i for i in sweep_evals)


def test_a_sweep_scores_target_dev_rows_and_holds_controls_to_no_fine_tune(tiny_recipe, monkeypatch, caplog):
    """The control never enters the score: `dev_targets` is the target task's dev mean, and each
    point's control difference is measured against the base model, as the recommend rule does."""
    from tuneset.flows.compare import compare_flow

    recipe = tiny_recipe("controls=[capitals]", "compare.strategies=[random]", "compare.budgets=[10]",
                         "compare.seeds=[]", "compare.baselines=[]",
                         "compare.sweep={strategy: random, grid: {lr: [1.0e-3, 3.0e-2]}}", "score.selectors=[length]")
    compare_flow(recipe)
    table = pl.read_csv(recipe.work_dir / "runs" / recipe.name / "sweep" / "sweep-10.csv")
    assert table.columns == ["lr", "dev_sentiment", "dev_capitals", "dev_targets", "dev_loss", "control_vs_none", "eligible"]
    assert table["dev_targets"].to_list() == pytest.approx(table["dev_sentiment"].to_list())
    assert all(" ± " in c for c in table["control_vs_none"]) and set(table["eligible"]) <= {"yes", "no"}
    chosen = json.loads((recipe.work_dir / "runs" / recipe.name / "sweep" / "chosen.json").read_text())
    ranked = table.with_row_index("i").sort(["eligible", "dev_targets", "dev_loss"], descending=[True, True, False])
    assert chosen["budget 10"]["lr"] == pytest.approx(float(ranked["lr"][0]))
    # Where no point keeps the control, the one taken is said to break it (it was taken silently).
    from tuneset.evaluate import choose

    monkeypatch.setattr(choose.DevStanding, "eligible", property(lambda self: False))
    with caplog.at_level("WARNING", logger="tuneset.sweep"):
        compare_flow(recipe)  # every fine-tune and evaluation cached
    assert any("no point keeps the control tasks (capitals) within 2 se" in r.getMessage() for r in caplog.records)


def test_cache_keys_follow_content_not_paths_or_settings_that_do_not_matter(tiny_recipe, tmp_path, tiny_embedder_dir, monkeypatch):
    """A score table's key survives moving the store; a larger max_test_rows redoes no dev
    evaluation; an embedder folder is keyed by its files (the same folder by another path is one
    embedder, a retrained one at the same path another); a GPU's bf16 runs are keyed apart."""
    import shutil

    from tuneset.flows.context import run_context
    from tuneset.flows.score import score_flow
    from tuneset.flows.train_eval import evaluate_model
    from tuneset.models.loading import precision_tag
    from tuneset.selectors import ScoringContext

    recipe = tiny_recipe("score.selectors=[length, random]")
    first = Path(score_flow(recipe).path)
    shutil.copytree(recipe.work_dir, tmp_path / "moved")
    moved = tiny_recipe("score.selectors=[length, random]", f"work_dir={tmp_path / 'moved'}")
    assert Path(score_flow(moved).path).parent.name == first.parent.name
    dev = evaluate_model(run_context(recipe), None, "dev")
    assert evaluate_model(run_context(tiny_recipe("evaluate.max_test_rows=5")), None, "dev") == dev

    def identity(folder) -> str:
        return ScoringContext(store=run_context(recipe).store, embedder=str(folder)).embedder_identity

    copy = shutil.copytree(tiny_embedder_dir, tmp_path / "emb")
    assert identity(copy) == identity(tiny_embedder_dir) != str(copy)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert identity("~/emb") == identity(copy)  # a ~ path is the folder it names, as the loader reads it
    # A GPU's batched vectors and a CPU's one-a-forward ones are kept apart; the CPU key is as before.
    on_gpu = ScoringContext(store=run_context(recipe).store, embedder=str(copy), device="cuda").embedder_identity
    assert on_gpu == identity(copy) + "@cuda" and "@" not in identity(copy)
    # A model2vec or ONNX embedder runs on the CPU whatever the device: its vectors keep one key.
    static = tmp_path / "static"
    static.mkdir()
    (static / "config.json").write_text('{"model_type": "model2vec"}')
    assert ScoringContext(store=run_context(recipe).store, embedder=str(static), device="cuda").embedder_identity == identity(static)
    from tuneset.models.loading import model_identity

    assert model_identity(recipe.model.name, "") == model_identity(recipe.model.name)  # '' is no adapter
    weights = next(f for f in copy.rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)  # retrained in place
    assert identity(copy) != identity(tiny_embedder_dir)
    assert (precision_tag("cpu"), precision_tag("cuda")) == ("", "@cuda:bfloat16")
    # `auto` is resolved where the run starts, and a task worker rebuilding the context keeps it.
    import pickle

    import torch

    auto = run_context(tiny_recipe("model.device=auto"))
    here = "cuda" if torch.cuda.is_available() else "cpu"
    assert auto.recipe.model.device == pickle.loads(pickle.dumps(auto)).recipe.model.device == here


def test_a_model_retrained_in_place_is_loaded_again_in_the_same_process(tiny_lm_dir, tiny_embedder_dir, tmp_path):
    """A notebook that retrains a folder between two scorings: the in-process copies are held per
    content, so the second scoring reads the new weights (whose new identity keys what it stores)."""
    import shutil

    import numpy as np
    from safetensors.torch import load_file, save_file

    from tuneset.models.embed import load_embedder
    from tuneset.models.loading import cached_lm

    lm_dir, emb_dir = shutil.copytree(tiny_lm_dir, tmp_path / "lm"), shutil.copytree(tiny_embedder_dir, tmp_path / "emb")
    before_lm, before_emb = cached_lm(str(lm_dir), "cpu"), load_embedder(str(emb_dir), "cpu").encode(["a b"], 1)
    for f in [*lm_dir.rglob("*.safetensors"), *emb_dir.rglob("*.safetensors")]:
        save_file({k: v + 0.5 for k, v in load_file(f).items()}, f)
    assert cached_lm(str(lm_dir), "cpu") is not before_lm and cached_lm(str(lm_dir), "cpu").identity != before_lm.identity
    assert not np.allclose(load_embedder(str(emb_dir), "cpu").encode(["a b"], 1), before_emb)


def test_evaluation_is_keyed_by_the_weights_content_not_the_folder_name(tiny_recipe, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from tuneset.data.io import load_rows, write_rows
    from tuneset.flows.common import run_context
    from tuneset.flows.train_eval import evaluate_flow, finetune_flow

    recipe = tiny_recipe("finetune.lr=0.05", "finetune.epochs=3")
    # A file as `select --out` writes it (our names) trains under a recipe that maps the pool's names.
    mapped = tiny_recipe("finetune.lr=0.05", "finetune.epochs=3", "columns={instruction: question, response: answer}")
    model_dir = finetune_flow(mapped, str(write_rows(tmp_path / "twelve.jsonl", load_rows(recipe.pool).rows.head(12))))
    tuned = evaluate_flow(recipe, model_dir)
    copy = tmp_path / "copy" / Path(model_dir).name  # same folder name, other weights
    shutil.copytree(model_dir, copy)
    weights = copy / "adapter" / "adapter_model.safetensors"
    save_file({k: v * 0 for k, v in load_file(weights).items()}, weights)
    zeroed = evaluate_flow(recipe, str(copy))
    base = evaluate_flow(recipe, None)
    assert zeroed == base  # a zeroed LoRA is the base model, not the tuned one's cached scores
    evals = list((run_context(recipe).store.root / "eval").iterdir())
    assert len([e for e in evals if e.is_dir()]) == 3 * 2  # tuned, zeroed, base x 2 tasks
    assert tuned.keys() == base.keys()


def test_evaluation_is_keyed_by_the_batch_size_that_produced_it(tiny_recipe):
    """Padded batches move a row's logits with its batch mates, so another `max_batch_tokens` is
    evaluated afresh rather than served answers generated in other batches."""
    from tuneset.flows.common import run_context
    from tuneset.flows.train_eval import evaluate_flow

    def entries(recipe) -> int:
        return len([e for e in (run_context(recipe).store.root / "eval").iterdir() if e.is_dir()])

    first = tiny_recipe("model.max_batch_tokens=4096")
    evaluate_flow(first, None)
    n = entries(first)
    evaluate_flow(first, None)
    assert entries(first) == n
    evaluate_flow(tiny_recipe("model.max_batch_tokens=64"), None)
    assert entries(first) == 2 * n


def test_a_served_recipe_completes_its_scheduled_run(tiny_recipe, tmp_path):
    """`tuneset serve` runs the pipeline in Prefect's served subprocess, which loads the flow from its
    entrypoint afresh: the run must complete there, not only in this process."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    r = tiny_recipe("score.selectors=[length]", "select.weights={length: 1}", "select.budget=8")
    recipe = tmp_path / "served.yaml"
    recipe.write_text(yaml.safe_dump(json.loads(r.model_dump_json(exclude={"tasks"})) | {"tasks": str(tmp_path / "tasks.json")}))
    summary = r.work_dir / "runs" / r.name / "pipeline" / "summary.json"
    # A fresh Prefect home: the suite's shared one holds earlier runs' deployments and their late
    # scheduled runs, which a one-at-a-time runner would work through first.
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    env |= {"TUNESET_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "tuneset.cli", "serve", str(recipe), "--cron", "* * * * *"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not summary.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(2)
        text = (tmp_path / "serve.log").read_text()
        assert summary.exists(), text[-3000:]
        assert "PydanticUserError" not in text and "Crashed" not in text
        assert json.loads(summary.read_text())["selected"] == 8
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_quotas_by_a_field_of_the_users_own_rows(tiny_recipe, tmp_path, caplog):
    """A `domain` field the pool carries (kept as metadata) names quota groups like `source` does;
    rows without it are a group of their own, and an unknown field lists the ones there are."""
    from tuneset.errors import TunesetError
    from tuneset.flows.select import select_flow

    rows = [json.loads(x) for x in (tmp_path / "pool.jsonl").read_text().splitlines()]
    for k, r in enumerate(rows):
        if k % 10:
            r["domain"] = "retail" if k % 3 else "travel"
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tiny_recipe("score.selectors=[length]", "select.weights={length: 1}", "select.budget=12",
                         "select.quota_by=domain", "select.quotas=equal")
    sel = select_flow(recipe)
    table = pl.read_parquet(sel.table).filter("selected")
    assert table.height == 12 and table["reason"].str.contains("with quotas by domain").all()
    chosen = sel.rows.read()["metadata"].map_elements(lambda m: json.loads(m).get("domain", "(none)") if m else "(none)",
                                                      return_dtype=pl.String)
    assert sorted(chosen.value_counts()["count"].to_list()) == [4, 4, 4]  # retail, travel, (none)
    assert "have no such field; they form the group (none)" in caplog.text
    for k, r in enumerate(rows):  # relabelled: the metadata is outside the rows' fingerprint, not outside the key
        if "domain" in r:
            r["domain"] = "retail" if k % 4 else "travel"
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    again = select_flow(recipe).rows.read()["metadata"].map_elements(
        lambda m: json.loads(m).get("domain", "(none)") if m else "(none)", return_dtype=pl.String)
    assert sorted(again.value_counts()["count"].to_list()) == [4, 4, 4]
    with pytest.raises(TunesetError, match=r"select.quota_by: unknown field 'domian'; valid: domain, instruction, response, source"):
        select_flow(tiny_recipe("score.selectors=[length]", "select.weights={length: 1}", "select.quota_by=domian"))


@pytest.mark.parametrize("flow", ["select", "pipeline", "compare"])
def test_an_unknown_quota_field_fails_before_curation_and_scoring(tiny_recipe, monkeypatch, flow):
    """The field list comes from the pool's rows, so the check runs when the pool is read: a typo
    costs a second, not the minutes curation and scoring take before the policy sees it."""
    import tuneset.flows.compare as compare
    import tuneset.flows.pipeline as pipeline
    import tuneset.flows.select as select
    from tuneset.errors import TunesetError

    def never(*args, **kwargs):
        raise AssertionError("curation ran before the quota field was checked")

    for module in (select, pipeline, compare):
        monkeypatch.setattr(module, "curate_flow", never)
    if flow == "compare":
        recipe = tiny_recipe("compare.strategies=[{name: length, quota_by: domian}]", "compare.baselines=[]")
        run, where = compare.compare_flow, r"compare.strategies \(length\).quota_by"
    else:
        recipe = tiny_recipe("score.selectors=[length]", "select.weights={length: 1}", "select.quota_by=domian")
        run, where = (select.select_flow if flow == "select" else pipeline.pipeline_flow), "select.quota_by"
    with pytest.raises(TunesetError, match=where + r": unknown field 'domian'; valid: instruction, response, source"):
        run(recipe)


def test_a_policy_revision_enters_the_selection_key(tiny_recipe, monkeypatch):
    """A change in how a policy reads its columns (the direction of a component) must not be
    served a selection cached before it."""
    import tuneset.flows.select as select

    recipe = tiny_recipe("score.selectors=[length]", "select.weights={length.instruction_chars: 1}", "select.budget=5")
    before = select.select_flow(recipe).table
    assert select.select_flow(recipe).table == before  # cached
    monkeypatch.setattr(select, "POLICY_REVISION", select.POLICY_REVISION + 1)
    assert select.select_flow(recipe).table != before


@pytest.mark.parametrize("ext", ["parquet", "csv", "jsonl"])
def test_one_command_selection_without_a_recipe(tiny_recipe, tmp_path, ext):
    from tuneset.cli import app
    from tuneset.data.io import load_rows

    r = tiny_recipe()
    out = tmp_path / f"selected.{ext}"
    res = runner.invoke(app, ["select", str(r.pool), "--selector", "embedding_knn", "--selector", "length",
                              "--target", str(tmp_path / "tasks.json"), "--budget", "12", "--out", str(out),
                              "--set", f"model.name={r.model.name}", "--set", f"model.embedder={r.model.embedder}",
                              "--set", f"work_dir={r.work_dir}", "--set", "model.device=cpu"])
    assert res.exit_code == 0, res.output
    chosen = load_rows(out).rows
    assert chosen.height == 12
    decisions = pl.read_parquet(tmp_path / "selected.decisions.parquet")
    assert {"embedding_knn", "embedding_knn.vs_sentiment", "length", "rank", "selected", "reason"} <= set(decisions.columns)
    assert decisions.filter("selected")["id"].sort().to_list() == chosen["id"].sort().to_list()
    assert "selected.decisions.parquet" in res.output.replace("\n", "")


def test_a_selection_with_no_candidates_or_an_unknown_output_says_so_in_one_line(tmp_path, demo_dir):
    """A pool that is all evaluation rows leaves curation nothing to keep (decontamination): that is
    named, not a polars join error; an --out format nothing writes fails before any curating."""
    from tuneset.cli import app

    dev = demo_dir / "targets" / "capitals" / "dev.jsonl"
    base = ["select", str(dev), "--selector", "random", "--target", str(demo_dir / "tasks.json"), "--budget", "2",
            "--set", f"work_dir={tmp_path / 'w'}"]
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "o.txt")])
    assert res.exit_code == 2 and "--out" in res.output and "valid: .jsonl, .parquet, .csv" in res.output
    assert not (tmp_path / "w").exists()
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2 and "no candidate rows to select from: curation kept none" in res.output, res.output


def test_a_one_off_selection_names_what_it_ranks_by(tmp_path, demo_dir):
    """A pool without --selector is not quietly ranked at random: the command asks, naming the choices."""
    from tuneset.cli import app

    res = runner.invoke(app, ["select", str(demo_dir / "pool.jsonl"), "--target", str(demo_dir / "tasks.json"),
                              "--set", f"work_dir={tmp_path / 'w'}"])
    assert res.exit_code == 2 and "--selector: name what to rank the pool by" in res.output and "random" in res.output
    assert not (tmp_path / "w").exists()


def test_unknown_output_format_is_named(tmp_path):
    from tuneset.data.io import load_rows, write_rows
    from tuneset.demo import DEMO_DIR
    from tuneset.errors import TunesetError

    rows = load_rows(DEMO_DIR / "pool.jsonl").rows.head(3)
    with pytest.raises(TunesetError, match=r"cannot tell the format from '.txt'; valid: .jsonl, .parquet, .csv"):
        write_rows(tmp_path / "x.txt", rows)


@pytest.mark.parametrize("shape", ["trl", "chat", "alpaca"])
def test_trl_chat_and_alpaca_pools_select_and_fine_tune(tiny_recipe, tmp_path, shape):
    from tuneset.flows.pipeline import pipeline_flow

    rows = [json.loads(line) for line in tiny_recipe().pool.read_text().splitlines()[:40]]
    shaped = {
        "trl": lambda r: {"prompt": r["instruction"], "completion": r["response"]},
        "chat": lambda r: {"messages": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["response"]}]},
        "alpaca": lambda r: {"instruction": r["instruction"], "input": "", "output": r["response"]},
    }[shape]
    pool = tmp_path / f"{shape}.jsonl"
    pool.write_text("".join(json.dumps(shaped(r)) + "\n" for r in rows))
    summary = pipeline_flow(tiny_recipe(f"pool={pool}", "score.selectors=[length]", "select.weights={length: 1}", "select.budget=8"))
    assert summary["selected"] == 8 and set(summary["finetuned"]) == {"sentiment", "capitals"}


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_killed_command_leaves_no_prefect_server_behind(tiny_recipe, tmp_path, how):
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    if not sys.platform.startswith("linux"):
        pytest.skip("parent-death signals are Linux's")
    r = tiny_recipe("score.selectors=[perplexity, ifd]")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(json.loads(r.model_dump_json(exclude={"tasks"})) | {"tasks": str(tmp_path / "tasks.json")}))
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    env |= {"TUNESET_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tuneset.cli", "score", str(recipe)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    servers: list[int] = []
    while not servers and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        servers = _children(proc.pid)
    assert servers, "the command started no server"
    time.sleep(2)
    proc.send_signal(getattr(signal, how))
    proc.wait(timeout=60)
    deadline = time.monotonic() + 15
    while any(_alive(s) for s in servers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(s) for s in servers), f"orphaned server after {how}"
    if how == "SIGTERM":
        # Stopped by the signal at once (not after the shard in flight), with the shell's code for it.
        assert proc.returncode == 128 + signal.SIGTERM


def test_a_strategy_selects_the_same_rows_whatever_strategies_share_its_compare_and_in_select(tiny_recipe, monkeypatch):
    """Selectors fitted on the rows they score (GOT-D's transport plan, LESS's warm-up sample) see the
    whole pool in every compare and in `select`: adding a curating strategy must not change another
    one's rows, and selecting with a compared strategy's policy picks the rows that were measured."""
    from tuneset.flows import compare as compare_mod
    from tuneset.flows.select import select_flow

    picked: dict[str, list[str]] = {}
    real = compare_mod.finetune_task

    def spy(ctx, rows, seed, cfg=None):
        picked.setdefault(ctx.recipe.name, []).append(rows.fingerprint)
        return real(ctx, rows, seed, cfg)

    monkeypatch.setattr(compare_mod, "finetune_task", spy)
    common = ("compare.budgets=[10]", "compare.seeds=[0]", "compare.baselines=[none]",
              "score.selectors=[{name: less, params: {dim: 256, warmup: {fraction: 0.5, epochs: 2, batch_size: 8}}}]")
    compare_mod.compare_flow(tiny_recipe("name=alone", "compare.strategies=[less]", *common))
    from tuneset.flows import common as common_mod

    reads: list[str] = []
    real_load = common_mod.load_rows
    monkeypatch.setattr(common_mod, "load_rows", lambda path, **k: reads.append(str(path)) or real_load(path, **k))
    beside = tiny_recipe(
        "name=beside", *common,
        "compare.strategies=[less, {name: less_short, weights: {less: 1}, curate: {filters: [{column: length, max: 300}]}}]")
    compare_mod.compare_flow(beside)
    assert reads == [str(beside.pool)]  # read and validated once, for the compare's curation and the strategy's own
    assert len(picked["alone"]) == 1 and len(picked["beside"]) == 2
    assert picked["alone"][0] == picked["beside"][0]
    chosen = select_flow(tiny_recipe("name=select", *common, "select.weights={less: 1}", "select.budget=10"))
    assert chosen.rows.fingerprint == picked["alone"][0]



def test_a_local_server_starts_only_when_no_other_is_starting_on_its_prefect_home(tmp_path):
    """Each local server migrates the Prefect home's SQLite database as it starts: commands started
    together on a fresh home raced there, and one in two or three died ("duplicate column name").
    A command now waits on the home's start lock, held by whoever is starting a server."""
    import os
    import subprocess
    import sys
    import time

    from filelock import FileLock

    home = tmp_path / "prefect"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(home)}
    code = "from tuneset.flows.api import prefect_api\nwith prefect_api() as url: print(url)"
    with FileLock(str(home / "tuneset-server-start.lock")):
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(8)  # imports done; the old code had its server up and answering by now
        assert proc.poll() is None and not _children(proc.pid), "started a server while another was starting"
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-500:]
    assert out.strip().startswith("http://127.0.0.1:")
