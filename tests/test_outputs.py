"""Readable outputs: the curation report, its score plot, the leaderboard plot, `tuneset selectors`."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tuneset.curation import curate_rows
from tuneset.curation.report import log_scale, plot_scores, reason_table, render_report, score_panels
from tuneset.recipe import CurateConfig, FilterRule


@pytest.fixture
def demo_rows(demo_dir):
    from tuneset.data.io import load_rows

    return load_rows(demo_dir / "pool.jsonl").rows


def _curated(rows: pl.DataFrame, n: int, limit: float = 100.0):
    """Curate the first `n` rows with a perplexity filter over scores spanning 1 to 1e5, two
    planted duplicates and one eval leak; returns the audit and its counts."""
    rows = rows.head(n)
    copies = rows.head(2).with_columns(pl.format("copy-{}", "id").alias("id"))
    rows = pl.concat([rows, copies])
    scores = pl.DataFrame({"id": rows["id"], "perplexity": np.geomspace(1, 1e5, rows.height),
                           "ifd": np.linspace(0.5, 1.5, rows.height)})
    cfg = CurateConfig(filters=[FilterRule(column="perplexity", max=limit), FilterRule(column="ifd", max=1.4)])
    evals = {"t/test": rows.slice(5, 1).select("id", "instruction")}
    _, audit = curate_rows(rows, cfg, evals, scores)
    counts = {a: int((audit["action"] == a).sum()) for a in ("kept", "dropped", "corrected", "quarantined")}
    return audit, counts


def test_reasons_are_grouped_by_rule_with_the_range_of_values(demo_rows):
    audit, _ = _curated(demo_rows, 120)
    table = reason_table(audit)
    dropped = audit.filter(pl.col("action") == "dropped")
    assert table["rows"].sum() == dropped.height
    by_filter = table.filter(pl.col("reason").str.starts_with("perplexity="))
    assert by_filter.height == 1  # one line for the rule, not one per value
    over = dropped.filter(pl.col("reason").str.starts_with("perplexity="))["perplexity"]
    assert over.len() > 10 and by_filter["rows"][0] == over.len()
    assert "max 100" in by_filter["reason"][0] and "#" in by_filter["reason"][0]
    assert by_filter["values"][0] == f"perplexity {over.min():.4g} to {over.max():.4g}"
    for prefix in ("duplicate of ", "contaminated: "):  # planted: two copies, one leak
        n = dropped.filter(pl.col("reason").str.starts_with(prefix)).height
        assert n >= 1 and table.filter(pl.col("reason").str.starts_with(prefix))["rows"].to_list() == [n]
    assert "duplicate of …" in table["reason"].to_list()


def test_report_length_does_not_grow_with_the_rows_a_rule_drops(demo_rows):
    small, big = (_curated(demo_rows, n) for n in (60, 300))
    lines = [render_report("r", a.height, c, a).splitlines() for a, c in (small, big)]
    assert big[1]["dropped"] > small[1]["dropped"] + 50
    assert len(lines[0]) == len(lines[1])
    assert max(len(line) for line in lines[1]) < 300


def test_a_pipe_in_a_reason_does_not_split_its_table_row(demo_rows):
    audit = pl.DataFrame({"action": ["dropped"], "reason": ["label issue: given 'a|b' (p=0.10)"], "source": ["s"], "id": ["x"]})
    row = next(line for line in render_report("r", 1, {"dropped": 1}, audit).splitlines() if "label issue" in line)
    assert row.count(" | ") == 4  # five cells: action, reason, rows, values, example


def test_score_panels_use_log_axes_only_for_values_spanning_orders_of_magnitude(demo_rows, tmp_path):
    audit, _ = _curated(demo_rows, 120)
    filters = [FilterRule(column="perplexity", max=100.0), FilterRule(column="ifd", min=0.6, max=1.4)]
    panels = {p.column: p for p in score_panels(audit, ["perplexity"], filters)}
    assert set(panels) == {"perplexity", "ifd"}  # a filtered column is plotted even if not asked for
    assert panels["perplexity"].log and not panels["ifd"].log
    assert panels["ifd"].thresholds == [("min", 0.6), ("max", 1.4)]
    assert sum(len(v) for v in panels["perplexity"].by_action.values()) == audit.height
    assert plot_scores(audit, ["perplexity"], tmp_path / "s.png", filters) and (tmp_path / "s.png").stat().st_size > 0
    assert not log_scale(np.array([-1.0, 10.0, 1e4])) and not log_scale(np.array([]))


def test_min_and_max_thresholds_are_drawn_in_different_styles(demo_rows):
    import matplotlib.pyplot as plt

    from tuneset.curation.report import score_figure

    audit, _ = _curated(demo_rows, 120)
    (panel,) = score_panels(audit, [], [FilterRule(column="ifd", min=0.6, max=1.4)])
    fig = score_figure([panel])
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    low, high = lines["filter min 0.6"], lines["filter max 1.4"]
    assert (low.get_linestyle(), low.get_color()) != (high.get_linestyle(), high.get_color())
    assert low.get_linestyle() != high.get_linestyle() and low.get_color() != high.get_color()
    plt.close(fig)


def test_report_examples_keep_the_whole_reason_up_to_a_long_limit():
    reason = ("contaminated: matches evaluation row sentiment/test/sentiment-test-73 "
              "(shares the 6-gram 'is the sentiment of this product')")
    audit = pl.DataFrame({"action": ["dropped"], "reason": [reason], "source": ["s"], "id": ["x"]})
    assert reason_table(audit)["example"][0] == reason
    long = pl.DataFrame({"action": ["dropped"], "reason": ["x" * 1000], "source": ["s"], "id": ["x"]})
    assert len(reason_table(long)["example"][0]) < 300  # a runaway quoted text still cannot flood the table


def _results(tmp_path, arms: dict[str, float], budgets=("300",), seeds=3, n=60):
    """Evaluation results for `arms` (strategy -> accuracy around which each seed scatters)."""
    from tuneset.evaluate.leaderboard import NONE

    rng = np.random.default_rng(0)
    out = []
    for strategy, p in arms.items():
        for budget in (["-"] if strategy == NONE else budgets):
            for seed in (["-"] if strategy == NONE else range(seeds)):
                path = tmp_path / f"{strategy}-{budget}-{seed}.parquet"
                pl.DataFrame({"id": [f"r{i}" for i in range(n)],
                              "score": (rng.random(n) < p).astype(float)}).write_parquet(path)
                out.append({"strategy": strategy, "budget": budget, "n_rows": 0 if strategy == NONE else 30,
                            "seed": seed, "task": "qa", "metric": "exact_match", "examples": str(path)})
    return out


def test_leaderboard_plot_zooms_to_the_data_and_shows_paired_intervals(tmp_path):
    from tuneset.evaluate.leaderboard import build_leaderboard, plot, plot_panels

    board = build_leaderboard(_results(tmp_path, {"none": 0.55, "random": 0.6, "ppl": 0.7, "knn": 0.65}))
    (panel,) = plot_panels(board)
    arms = board.filter(pl.col("strategy") != "none")
    assert panel.labels == arms.sort("mean", descending=True)["strategy"].to_list()  # best first, one budget: no "@"
    seeds = [float(v) for s in arms["per_seed"] for v in s.split()]
    lo, hi = panel.xlim
    assert lo < min(seeds) and hi > max(seeds) and lo > 0.2  # zoomed, not from 0
    assert panel.delta_name == "random"
    for label, d in zip(panel.labels, panel.deltas):
        row = arms.filter(pl.col("strategy") == label).row(0, named=True)
        assert d == (None if label == "random" else (row["vs_random"], row["vs_random_lo"], row["vs_random_hi"]))
    assert "no fine-tune" in panel.baselines
    assert plot(board, tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_leaderboard_lists_each_arms_seeds_in_numeric_order(tmp_path):
    from tuneset.evaluate.leaderboard import build_leaderboard

    results = []
    for seed, right in ((10, 4), (2, 0)):  # as strings, "10" sorts before "2"
        path = tmp_path / f"s{seed}.parquet"
        pl.DataFrame({"id": ["a", "b", "c", "d", "e"], "score": [float(i < right) for i in range(5)]}).write_parquet(path)
        results.append({"strategy": "random", "budget": "300", "n_rows": 30, "seed": seed, "task": "qa",
                        "metric": "exact_match", "examples": str(path)})
    assert build_leaderboard(results)["per_seed"][0] == "0.000 0.800"


def test_leaderboard_legend_sits_outside_every_panel(tmp_path):
    import matplotlib.pyplot as plt

    from tuneset.evaluate.leaderboard import build_leaderboard, figure

    results = _results(tmp_path, {"none": 0.55, "random": 0.6, "ppl": 0.7, "knn": 0.65})
    full = [dict(r, strategy="full", budget="-", seed=0, examples=r["examples"]) for r in results if r["strategy"] == "ppl"][:1]
    fig = figure(build_leaderboard(results + full))
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    assert not any(legend.overlaps(ax.get_window_extent()) for ax in fig.axes)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"a seed", "mean ± sd over seeds", "no fine-tune", "full pool"} <= set(labels)
    assert "no fine-tune" in fig.axes[0].get_title(loc="left")  # baseline values move to the title
    plt.close(fig)


def test_leaderboard_plot_labels_budgets_only_when_there_are_several(tmp_path):
    from tuneset.evaluate.leaderboard import build_leaderboard, plot_panels

    (panel,) = plot_panels(build_leaderboard(_results(tmp_path, {"random": 0.5, "ppl": 0.6}, budgets=("10", "20"))))
    assert sorted(panel.labels) == ["ppl @ 10", "ppl @ 20", "random @ 10", "random @ 20"]
    assert panel.delta_name == "random" and sum(d is None for d in panel.deltas) == 2


def test_leaderboard_header_is_sentences_naming_every_arm():
    from tuneset.flows.compare import describe

    info = {"pool_rows": 1989, "budgets": {"300": 300, "10%": 199},
            "finetune": {"budget 300": {"lr": 0.001, "epochs": 3}, "budget 10%": {"lr": 0.001, "epochs": 3},
                         "full pool": {"target_modules": ["q_proj", "v_proj"]}, "no fine-tune": {"prompt_format": "plain"}}}
    text = describe(info)
    assert not any(c in text for c in "{}[]|=\n") and text.endswith(".")
    assert "1,989 rows" in text and "budget 10% selects 199 rows" in text
    assert "budget 300 and budget 10%: lr 0.001, epochs 3" in text  # trained alike, named together
    assert "q_proj/v_proj" in text and "no fine-tune: prompt format plain" in text
    assert "Control" not in text
    assert "Control tasks, evaluated but never aimed at: arc_easy. " in describe({**info, "controls": ["arc_easy"]})
    # Curation's drops are not the pool's size: both are said.
    assert describe({**info, "pool_rows": 2000, "curated_rows": 1989}).startswith("The pool has 2,000 rows, 1,989 after curation; ")


def test_the_full_pool_trains_as_the_largest_budget_whatever_the_order():
    from tuneset.flows.compare import full_pool_settings
    from tuneset.recipe import CompareConfig, FinetuneConfig

    settings = {"40": FinetuneConfig(lr=0.0111), "10": FinetuneConfig(lr=0.0222), "5%": FinetuneConfig(lr=0.0333)}
    for order in (["40", "10", "5%"], ["10", "5%", "40"]):
        cmp = CompareConfig(budgets=[int(b) if b.isdigit() else b for b in order])
        assert full_pool_settings(cmp, settings, 100, FinetuneConfig()).lr == 0.0111  # 40 rows > 10 > 5 of 100
    assert full_pool_settings(CompareConfig(budgets=[10], full_epochs=1), settings, 100, FinetuneConfig()).epochs == 1


def test_the_compute_table_has_a_line_per_budget():
    """Budgets of one arm were one line: the first budget's rows and fine-tune time, every budget's
    evaluation time summed."""
    from tuneset.evaluate.leaderboard import leaderboard_markdown

    runs = [{"strategy": "random", "budget": b, "n_rows": n, "seed": s, "task": t, "train_s": tr, "eval_s": 5.0}
            for b, n, tr in (("10", 10, 100.0), ("1000", 1000, 9000.0)) for s in (0, 1) for t in ("a", "b")]
    md = leaderboard_markdown("x", "header", "", runs, {})
    assert "| random | 10 | 10 | 2 | 100 | 10 |" in md and "| random | 1000 | 1000 | 2 | 9000 | 10 |" in md


@pytest.mark.parametrize("width", [80, 60])
def test_selectors_listing_fits_the_terminal_and_shows_whole_descriptions(width):
    import inspect

    from typer.testing import CliRunner

    from tuneset.cli import app
    from tuneset.selectors import get_selector, selector_names

    res = CliRunner(env={"COLUMNS": str(width)}).invoke(app, ["selectors"])
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.output.splitlines()) <= width
    flat = " ".join(res.output.split())
    for name in selector_names():
        doc = " ".join(inspect.cleandoc(get_selector(name).__doc__ or "").split())
        assert doc and doc in flat, name


def test_commands_print_their_outputs_as_name_and_absolute_path(tmp_path, monkeypatch, capsys):
    """compare, sweep, demo and bench print one `name: path` line per output, not a Python dict."""
    from tuneset.cli import _print_paths

    monkeypatch.chdir(tmp_path)
    _print_paths({"markdown": "runs/x/leaderboard.md", "csv": "runs/x/leaderboard.csv"})
    assert capsys.readouterr().out.splitlines() == [f"markdown: {tmp_path / 'runs/x/leaderboard.md'}",
                                                    f"csv: {tmp_path / 'runs/x/leaderboard.csv'}"]
