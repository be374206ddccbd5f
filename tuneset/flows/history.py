"""A recipe's run history: what each pipeline run read, scored and chose, and what changed since
the run before it (new rows, score drift, rows that entered or left the selection), written beside
the runs and published as Prefect artifacts so the UI shows it next to the flow run."""

from __future__ import annotations

import json
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from tuneset.data.io import atomic_path
from tuneset.flows.context import RunContext

log = logging.getLogger("tuneset.history")
SHOWN = 20  # rows of each selection diff listed in the Markdown report (all are in selection_diff.parquet)


def history_dir(ctx: RunContext) -> Path:
    """Where the recipe's runs are recorded; created by the first run (`run_folder`), not by reading."""
    return ctx.root / "history"


STORE_PATHS = ("scores", "selection_table", "model_dir")  # recorded relative to the store root


def past_runs(ctx: RunContext) -> list[dict[str, Any]]:
    """Every finished run's report, oldest first, its paths resolved where the work dir and store
    are now: a moved or copied work dir diffs against its own files (reading creates nothing:
    `tuneset runs` on a recipe that never ran leaves its work dir as it was)."""
    out = []
    for p in sorted(history_dir(ctx).glob("*/report.json")):
        report = json.loads(p.read_text())
        report["folder"] = str(p.parent)
        for k in STORE_PATHS:  # where the store is now, else where it was (the recipe's `store:` changed)
            if report.get(k) is not None and not Path(report[k]).is_absolute():
                here = ctx.store.root / report[k]
                report[k] = str(here if here.exists() or not report.get(f"{k}_at") else report[f"{k}_at"])
        out.append(report)
    return out


def was_finetuned(report: dict[str, Any]) -> bool:
    """Whether the run fine-tuned (reports before `model_dir` was recorded say so only in prose)."""
    return report.get("model_dir") is not None or str(report.get("finetuned", "")).startswith("Fine-tuned")


def run_report(prev: dict[str, Any] | None, audit: str, scores: str, selection: str, counts: dict[str, int],
               directions: dict[str, bool]) -> tuple[dict[str, Any], pl.DataFrame]:
    """The run's summary against `prev` and its selection diff (entered and left rows, reasons).
    `change` is the share of today's selection that is new: 1.0 on a first run."""
    pool_ids = pl.read_parquet(audit, columns=["id"])["id"]
    table = pl.read_parquet(selection)
    report: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"), "pool_rows": pool_ids.len(),
        "curation": counts, "selected": int(table["selected"].sum()),
        "pool_ids": pool_ids.to_list(), "scores": scores, "selection_table": selection,
    }
    if prev is None:
        report |= {"new_rows": pool_ids.len(), "removed_rows": 0, "entered": report["selected"], "left": 0, "drift": {},
                   "change": 1.0}
        diff = table.filter("selected").select("id", pl.lit("entered").alias("change"), "reason")
        return report, diff
    before_ids = pl.read_parquet(Path(prev["folder"]) / "pool_ids.parquet")["id"]
    report["new_rows"] = int((~pool_ids.is_in(before_ids.implode())).sum())
    report["removed_rows"] = int((~before_ids.is_in(pool_ids.implode())).sum())
    report["drift"] = score_drift(pl.read_parquet(prev["scores"]), pl.read_parquet(scores), directions)
    diff = selection_diff(pl.read_parquet(prev["selection_table"]), table)
    report["entered"] = int((diff["change"] == "entered").sum())
    report["left"] = int((diff["change"] == "left").sum())
    report["change"] = report["entered"] / max(report["selected"], 1)
    return report, diff


def new_share(before: dict[str, Any] | None, selection: str) -> float:
    """The share of today's selection that `before`'s selection did not hold (1.0 without one)."""
    if before is None:
        return 1.0
    now = pl.read_parquet(selection).filter("selected")["id"]
    was = pl.read_parquet(before["selection_table"]).filter("selected")["id"]
    return float((~now.is_in(was.implode())).sum() / max(now.len(), 1))


def score_drift(before: pl.DataFrame, now: pl.DataFrame, directions: dict[str, bool]) -> dict[str, dict[str, float]]:
    """Per selector: mean score before and now (over each run's rows), and the mean absolute change
    of rows scored in both (non-zero when a model, a parameter or a pool-wide step moved them)."""
    shared = before.join(now, on="id", suffix="__now")
    out = {}
    for name in directions:
        if name not in before.columns or name not in now.columns:
            continue
        delta = (shared[name] - shared[f"{name}__now"]).abs()
        out[name] = {"mean_before": _f(before[name].mean()), "mean_now": _f(now[name].mean()),
                     "mean_abs_change_shared": _f(delta.mean()) if shared.height else 0.0, "shared_rows": shared.height}
    return out


def selection_diff(before: pl.DataFrame, now: pl.DataFrame) -> pl.DataFrame:
    """Rows that entered or left the selection, each with today's reason (or that it left the pool)."""
    was = before.filter("selected")["id"]
    is_ = now.filter("selected")["id"]
    entered = now.filter(pl.col("selected") & ~pl.col("id").is_in(was.implode())).select(
        "id", pl.lit("entered").alias("change"), "reason")
    gone = before.filter(pl.col("selected") & ~pl.col("id").is_in(is_.implode())).select("id")
    left = gone.join(now.select("id", "reason"), on="id", how="left").with_columns(
        pl.lit("left").alias("change"), pl.col("reason").fill_null("no longer in the pool")).select("id", "change", "reason")
    return pl.concat([entered, left])


def _f(x: Any) -> float:
    return float(x) if x is not None else float("nan")


def render(recipe: str, report: dict[str, Any], diff: pl.DataFrame) -> str:
    lines = [f"# Run of `{recipe}` at {report['time']}", "",
             f"Pool: {report['pool_rows']} rows, {report['new_rows']} new and {report['removed_rows']} removed since the "
             f"last run. Curation: " + ", ".join(f"{v} {k}" for k, v in report["curation"].items()) + ".",
             f"Selection: {report['selected']} rows; {report['entered']} entered and {report['left']} left."]
    if "finetuned" in report:
        lines.append(report["finetuned"])
    if report["drift"]:
        lines += ["", "## Score drift", "", "| selector | mean before | mean now | mean abs change (rows in both runs) |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['mean_before']:.4g} | {v['mean_now']:.4g} | {v['mean_abs_change_shared']:.3g} ({v['shared_rows']}) |"
                  for k, v in report["drift"].items()]
    for change in ("entered", "left"):
        part = diff.filter(pl.col("change") == change)
        if part.height:
            lines += ["", f"## {change.capitalize()} the selection ({part.height}; first {min(SHOWN, part.height)})", "",
                      "| id | reason |", "|---|---|"]
            lines += [f"| {r['id']} | {r['reason']} |" for r in part.head(SHOWN).iter_rows(named=True)]
    return "\n".join(lines) + "\n"


def run_folder(ctx: RunContext, report: dict[str, Any]) -> Path:
    """A new run's folder. Folders without a report.json are runs killed before they finished:
    removed, so a rerun takes their place instead of listing beside them."""
    runs = history_dir(ctx)
    for d in runs.glob("*/"):
        if not (d / "report.json").exists():
            shutil.rmtree(d)
    stamp = report["time"].replace(":", "").replace("-", "")
    folder = runs / f"{len(list(runs.glob('*/report.json'))):05d}-{stamp}"
    folder.mkdir(parents=True)
    return folder


def record_run(ctx: RunContext, folder: Path, report: dict[str, Any], diff: pl.DataFrame) -> None:
    """Writes the run's files and publishes them as Prefect artifacts (Markdown + a table) when
    inside a flow run; report.json comes last, so a listed run is whole and a run killed before
    it is redone by the rerun rather than diffed against."""
    # The audit is rewritten by the next run: the pool's ids travel with the run's own folder.
    pl.DataFrame({"id": report.pop("pool_ids")}, schema={"id": pl.String}).write_parquet(folder / "pool_ids.parquet")
    markdown = render(ctx.recipe.name, report, diff)
    root = ctx.store.root.resolve()
    for k in STORE_PATHS:
        if report.get(k) is not None and (at := Path(report[k]).resolve()).is_relative_to(root):
            report[f"{k}_at"] = str(at)  # read there if the recipe's `store:` changes
            report[k] = str(at.relative_to(root))
    diff.write_parquet(folder / "selection_diff.parquet")
    (folder / "report.md").write_text(markdown)
    try:
        _publish(ctx.recipe.name, report, markdown)
    except Exception as e:  # the UI's copy only: the run's own record must not depend on the API
        log.warning("run report not published to Prefect (%s); it is in %s", e, folder)
    with atomic_path(folder / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1, default=str))


def _publish(recipe: str, report: dict[str, Any], markdown: str) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    key = "".join(c if c.isalnum() else "-" for c in recipe.lower())
    create_markdown_artifact(markdown, key=f"{key}-run-report", description=f"tuneset run of {recipe}")
    rows = [{"selector": k, **v} for k, v in report["drift"].items()]
    if rows:
        create_table_artifact(rows, key=f"{key}-score-drift", description="score drift against the previous run")
