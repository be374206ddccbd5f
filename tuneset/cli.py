"""The `tuneset` command line: each command parses its arguments, then calls one flow."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from tuneset.runtime import configure

configure()  # before Prefect is imported anywhere

from tuneset.errors import TunesetError  # noqa: E402
from tuneset.recipe import Recipe, load_recipe  # noqa: E402

app = typer.Typer(help="Choose the data a language model is fine-tuned on, by downstream evidence.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
# Lines are never wrapped at the terminal's width: a path or an error stays one line to copy or grep.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)  # errors stay visible when stdout is redirected

RecipeArg = Annotated[Path, typer.Argument(help="YAML recipe", exists=True, dir_okay=False)]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="override a recipe field: key.path=value")]


def _recipe(path: Path | None, overrides: list[str] | None, selects: bool = False, evaluates: bool = False,
            curates: bool = False, **fields) -> Recipe:
    """The recipe with overrides, checked against everything it names before any work starts."""
    from tuneset.flows.checks import check_recipe

    extra = [f"{k}={v}" for k, v in fields.items() if v is not None]
    return check_recipe(load_recipe(path, [*extra, *(overrides or [])]), str(path or "recipe"), selects, evaluates, curates)


_signals: list[int] = []  # signals `_interrupt` turned into KeyboardInterrupt


def _interrupt(signum, frame):
    _signals.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def _stop_now(error: BaseException) -> None:
    """Exit with the shell's code for the signal once the flow has ended (or the grace period ran
    out): Python would otherwise wait for any worker thread still in its last batch."""
    signum = getattr(error, "signal", None) or (_signals[-1] if _signals else signal.SIGINT)
    err_console.print("[bold red]interrupted[/]: finished work is kept; the same command resumes from there")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)


@contextmanager
def _stop_on_signal(grace_s: float = 5.0) -> Iterator[None]:
    """On SIGTERM or SIGINT, whoever's Python handler runs (Prefect installs its own during a flow),
    set `progress.STOP` at once so worker threads stop at their next batch or module call, and
    exit after `grace_s` if the flow has not ended by then. Stopping mid-work is safe: every write is atomic
    and a rerun resumes (benchmarks/README.md, crash safety and stop latency)."""
    from tuneset.progress import STOP, check_stop

    STOP.clear()
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not the main thread: no signals here
        reader.close()
        writer.close()
        yield
        return

    def watch() -> None:
        while data := _recv(reader):
            hit = [b for b in data if b in (signal.SIGTERM, signal.SIGINT)]
            if hit:
                STOP.set()
                if "torch" in sys.modules:  # stop inside a forward too: one batch can take seconds
                    sys.modules["torch"].nn.modules.module.register_module_forward_pre_hook(lambda *_: check_stop())
                timer = threading.Timer(grace_s, os._exit, (128 + hit[0],))
                timer.daemon = True
                timer.start()
                return

    threading.Thread(target=watch, name="tuneset-stop-on-signal", daemon=True).start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        writer.close()
        reader.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(64)
    except OSError:  # closed: the command is over
        return b""


def _run(command: str, fn, recipe=None, sigterm_as_interrupt: bool = True):
    """`fn(recipe())`: the recipe is loaded and checked first (a mistake costs a second, not a
    server start), then the flow runs against a Prefect API that dies with this process, its runs
    tagged with the command and recipe (`command:select`, `recipe:bench`) so the UI can filter
    them. SIGTERM stops it like Ctrl-C."""
    from prefect import tags
    from prefect.exceptions import TerminationSignal

    from tuneset.flows.api import prefect_api

    if sigterm_as_interrupt:
        signal.signal(signal.SIGTERM, _interrupt)
    _quiet_user_errors()
    try:
        with _one_line_errors():
            r = recipe() if recipe else None
            with _stop_on_signal() if sigterm_as_interrupt else nullcontext(), prefect_api(), tags(*run_tags(command, r)):
                return fn(r)
    except (KeyboardInterrupt, TerminationSignal) as e:
        _stop_now(e)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """A TunesetError (bad input, bad config) is one `error:` line and exit status 2, no traceback."""
    try:
        yield
    except TunesetError as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}")
        raise typer.Exit(2) from None


class _NoTracebackForUserErrors(logging.Filter):
    """Prefect logs a failed run's exception with its traceback. For a TunesetError (bad input,
    bad config) the one-line `error:` the command prints says it all; 25 lines of engine frames
    above it only bury it. Other exceptions keep their traceback: they are bugs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TunesetError):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_user_errors() -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTracebackForUserErrors) for f in logger.filters):
            logger.addFilter(_NoTracebackForUserErrors())


def run_tags(command: str, recipe: Recipe | None) -> list[str]:
    """Tags for a command's Prefect runs: `tuneset`, the command, and the recipe's name."""
    return ["tuneset", f"command:{command}", *([f"recipe:{recipe.name}"] if recipe else [])]


@app.command()
def selectors() -> None:
    """List the registered selectors: direction, inputs, parameters and their whole description."""
    import textwrap

    from rich.text import Text

    from tuneset.selectors import get_selector, selector_names

    out = Console()  # the terminal's width now (COLUMNS), not the width at import
    for name in selector_names():
        cls = get_selector(name)
        head = Text.assemble((name, "bold cyan"), f"  {'higher' if cls.higher_is_better else 'lower'} is better"
                             f" · reads {', '.join(sorted(cls.uses)) or 'the row only'}")
        params = ", ".join(f"{k}={_shown(v.get_default(call_default_factory=True))}" for k, v in cls.Params.model_fields.items())
        out.print(head)
        for para in [*_paragraphs(cls.__doc__ or ""), f"params: {params or 'none'}"]:
            out.print(Text(textwrap.fill(para, out.width, initial_indent="  ", subsequent_indent="  ",
                                           break_on_hyphens=False)), soft_wrap=True)
        out.print()


def _paragraphs(doc: str) -> list[str]:
    """A docstring's paragraphs with their line breaks undone, so the terminal wraps them."""
    import inspect

    return [" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n") if p.strip()]


def _shown(value) -> str:
    from pydantic import BaseModel

    return f"{type(value).__name__}(...)" if isinstance(value, BaseModel) else str(value)


SeedOpt = Annotated[Optional[int], typer.Option(help="seed of seeded selectors and the fine-tune; default: finetune.seed, "
                                                    "as select and pipeline use")]


@app.command()
def score(recipe: RecipeArg, set_: SetOpt = None, seed: SeedOpt = None) -> None:
    """Score every pool row with the recipe's selectors (cached, resumable by shard)."""
    from tuneset.flows.score import score_flow

    ref = _run("score", lambda r: score_flow(r, seed=r.finetune.seed if seed is None else seed), lambda: _recipe(recipe, set_))
    console.print(f"scores: {Path(ref.path).resolve()}")


@app.command()
def curate(recipe: RecipeArg, set_: SetOpt = None) -> None:
    """Dedup, decontaminate and filter; writes curated.jsonl, audit and report."""
    from tuneset.flows.curate import curate_flow

    res = _run("curate", curate_flow, lambda: _recipe(recipe, set_, curates=True))
    console.print(f"counts: {res.counts}\naudit: {res.audit}\nreport: {res.report}")


@app.command()
def select(source: Annotated[Path, typer.Argument(help="a YAML recipe, or a pool file/folder for a one-off selection", exists=True)],
           out: Annotated[Path, typer.Option(help="selected rows: .jsonl, .parquet or .csv")] = Path("selected.jsonl"),
           selector: Annotated[Optional[list[str]], typer.Option(help="selector to rank by (repeat to combine, equal weights)")] = None,
           target: Annotated[Optional[list[Path]], typer.Option(help="a tasks.json, or a task's dev rows file (repeat)")] = None,
           budget: Annotated[Optional[str], typer.Option(help="rows (300) or a percent; default 10% of the pool")] = None,
           set_: SetOpt = None) -> None:
    """Curate, score and select; writes the chosen rows and, beside them, every candidate's scores,
    rank, decision and reason. With a pool instead of a recipe: `--selector got --target tasks.json`."""
    from tuneset.data.io import ROW_FORMATS
    from tuneset.flows.select import decisions_path, select_flow
    from tuneset.selectors import selector_names

    def load():
        if out.suffix not in ROW_FORMATS:  # before curating and scoring, not after
            raise TunesetError(f"--out {out}: cannot tell the format from '{out.suffix or 'no extension'}'; valid: {', '.join(ROW_FORMATS)}")
        if source.suffix in (".yaml", ".yml"):
            if selector or target:  # they make a recipe from a pool; a recipe names its own
                raise TunesetError(f"--selector and --target select from a pool; {source} is a recipe: set "
                                   "score.selectors, select.weights and tasks in it, or with --set")
            return _recipe(source, set_, selects=True, **{"select.budget": budget})
        if not selector:  # ranking by nothing in particular should be asked for, not fallen into
            raise TunesetError("--selector: name what to rank the pool by (repeat to combine), e.g. --selector got "
                               "--target tasks.json, or --selector random for a random draw; valid: "
                               + ", ".join(selector_names()))
        return _recipe(None, [*one_off_recipe(source, selector, target or [], budget or "10%"), *(set_ or [])],
                       selects=True)

    sel = _run("select", lambda r: select_flow(r, str(out)), load)
    console.print(f"{sel.rows.n} rows -> {out.resolve()}\nevery candidate's scores, rank, decision and reason: "
                  f"{decisions_path(out).resolve()}")


def one_off_recipe(pool: Path, selectors: list[str], targets: list[Path], budget: str) -> list[str]:
    """Overrides that make a recipe from command-line flags: the named selectors, equally
    weighted, with the targets as tasks (a tasks.json, or dev files named after their folder).
    The run is named after the pool and the selectors (`runs/select-pool-got/`), so one-off
    selections of other pools or by other selectors neither wait on one run lock nor replace
    each other's run files."""
    import json
    import re

    tasks: str
    if len(targets) == 1 and targets[0].suffix == ".json":
        tasks = _yaml_path(targets[0])
    else:
        tasks = json.dumps([{"name": t.parent.name if t.stem == "dev" else t.stem, "metric": "exact_match",
                             "dev": str(t.resolve())} for t in targets])
    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", f"select-{pool.stem}-{'+'.join(selectors)}")[:128]
    return [f"name={json.dumps(name)}", f"pool={_yaml_path(pool)}", f"tasks={tasks}", f"score.selectors={json.dumps(selectors)}",
            f"select.weights={json.dumps({s: 1 for s in selectors})}", f"select.budget={budget}"]


def _yaml_path(path: Path) -> str:
    """A path as a `--set` value: JSON text, which YAML reads back exactly (a ` #` or `: ` in a
    bare path would start a comment or a mapping)."""
    import json

    return json.dumps(str(path.resolve()))


@app.command()
def finetune(recipe: RecipeArg, rows: Annotated[Path, typer.Option(help="training rows (any supported format)", exists=True)],
             set_: SetOpt = None, seed: SeedOpt = None) -> None:
    """Fine-tune the recipe's model on a row file (LoRA or full)."""
    from tuneset.flows.train_eval import finetune_flow

    model = _run("finetune", lambda r: finetune_flow(r, str(rows), r.finetune.seed if seed is None else seed),
                 lambda: _recipe(recipe, set_))
    console.print(f"model: {model}")


@app.command()
def evaluate(recipe: RecipeArg, model_dir: Annotated[Optional[Path], typer.Option(help="a fine-tuned folder; default: the base model",
                                                                             exists=True, file_okay=False)] = None,
             set_: SetOpt = None) -> None:
    """Evaluate the base model or a fine-tuned folder on the recipe's tasks."""
    from tuneset.flows.train_eval import evaluate_flow

    _run("evaluate", lambda r: evaluate_flow(r, str(model_dir) if model_dir else None),
         lambda: _recipe(recipe, set_, evaluates=True))


@app.command()
def pipeline(recipe: RecipeArg, set_: SetOpt = None) -> None:
    """Curate -> score -> select -> fine-tune -> evaluate."""
    from tuneset.flows.pipeline import pipeline_flow

    _run("pipeline", pipeline_flow, lambda: _recipe(recipe, set_, selects=True, evaluates=True))


@app.command()
def runs(recipe: RecipeArg, set_: SetOpt = None) -> None:
    """Past pipeline runs of a recipe (scheduled or not): what each read and chose, and its report."""
    from rich.table import Table

    from tuneset.flows.context import run_context
    from tuneset.flows.history import past_runs, was_finetuned

    table = Table("run", "time", "pool", "new", "removed", "selected", "entered", "left", "fine-tuned", "report")
    with _one_line_errors():
        past = past_runs(run_context(load_recipe(recipe, set_ or [])))
    for r in past:
        table.add_row(Path(r["folder"]).name.split("-")[0], r["time"], *(str(r[k]) for k in
                      ("pool_rows", "new_rows", "removed_rows", "selected", "entered", "left")),
                      "yes" if was_finetuned(r) else "no", str(Path(r["folder"]) / "report.md"))
    console.print(table if table.rows else "no runs yet: `tuneset pipeline` or `tuneset serve` records them")


@app.command()
def compare(recipe: RecipeArg, set_: SetOpt = None) -> None:
    """Strategies x budgets x seeds with baselines; writes leaderboard CSV, Markdown and PNG."""
    from tuneset.flows.compare import compare_flow

    _print_paths(_run("compare", compare_flow, lambda: _recipe(recipe, set_, evaluates=True)))


@app.command()
def sweep(recipe: RecipeArg, set_: SetOpt = None) -> None:
    """Choose fine-tune settings on dev rows: the recipe's compare.sweep at each budget, nothing else."""
    from tuneset.flows.compare import compare_flow

    def load():
        r = _recipe(recipe, [*(set_ or []), "compare.seeds=[]", "compare.baselines=[]"])
        if r.compare.sweep is None:
            names = ", ".join(st.name for st in r.compare.strategies) or "none yet: add one to compare.strategies"
            raise TunesetError(f"{recipe}: compare.sweep is not set; add e.g. compare.sweep: {{strategy: <the compare "
                               f"strategy whose selection it trains on: {names}>, grid: {{lr: [2e-4, 5e-4]}}}}")
        return r

    _print_paths(_run("sweep", compare_flow, load))


@app.command()
def serve(recipe: RecipeArg, cron: Annotated[str, typer.Option(help="cron expression, e.g. '0 3 * * *'")], set_: SetOpt = None) -> None:
    """Serve the recipe's pipeline on a cron schedule (stop with SIGTERM)."""
    from tuneset.flows.serve import serve as serve_recipe

    def load() -> Recipe:
        from tuneset.flows.serve import cron_schedule

        cron_schedule(cron)  # before the recipe's server starts, not after
        return _recipe(recipe, set_, selects=True, evaluates=True)

    # The recipe is checked now, not at the first scheduled run; serve starts its own server.
    _run("serve", lambda r: serve_recipe(str(recipe), cron, set_), load,
         sigterm_as_interrupt=False)  # Prefect's runner handles SIGTERM itself


def _print_paths(out: dict[str, str]) -> None:
    """A flow's outputs as `name: absolute path` lines, as every command prints them."""
    console.print("\n".join(f"{k}: {Path(v).resolve()}" for k, v in out.items()))


@app.command()
def demo(work_dir: Annotated[Path, typer.Option(help="where caches and results go")] = Path(".tuneset"),
         set_: SetOpt = None) -> None:
    """Run the built-in demo: score, select 10%, fine-tune, evaluate, compare with random and full."""
    from tuneset.demo import demo_recipe_file
    from tuneset.flows.compare import compare_flow

    _print_paths(_run("demo", compare_flow, lambda: _recipe(demo_recipe_file(), [f"work_dir={_yaml_path(work_dir)}",
                                                                                   *(set_ or [])], evaluates=True)))


@app.command()
def bench(shared: Annotated[Path, typer.Option(help="folder holding bench/")] = Path("../shared"),
          full_pool: Annotated[bool, typer.Option("--full-pool", help="use pool.jsonl instead of pool_small.jsonl")] = False,
          set_: SetOpt = None) -> None:
    """Run the compare flow on the shared selection benchmark (skips if it is absent)."""
    from tuneset.flows.compare import compare_flow

    bench_dir = shared / "bench"
    if not (bench_dir / "tasks.json").exists():
        console.print(f"[yellow]skipped:[/] no benchmark at {bench_dir} (expects bench/pool_small.jsonl and bench/tasks.json)")
        raise typer.Exit(0)
    recipe = Path(__file__).parent.parent / "recipes" / "bench.yaml"
    overrides = [f"pool={_yaml_path(bench_dir / ('pool.jsonl' if full_pool else 'pool_small.jsonl'))}",
                 f"tasks={_yaml_path(bench_dir / 'tasks.json')}", *(set_ or [])]

    def load() -> Recipe:
        if not recipe.is_file():  # an installed (not editable) copy has no recipes/: never bench on defaults
            raise TunesetError(f"{recipe}: the bench recipe ships with the source tree, not the installed package; "
                               "run from a checkout (git clone, then pip install -e .)")
        return _recipe(recipe, overrides, evaluates=True)

    _print_paths(_run("bench", compare_flow, load))


if __name__ == "__main__":
    app()
