import json
import random

import numpy as np
import polars as pl
import pytest
import torch

from tuneset.data import load_rows
from tuneset.evaluate import evaluate_task
from tuneset.finetune.sft import grouped_batches, train
from tuneset.models.loading import load_lm
from tuneset.recipe import FinetuneConfig, TaskSpec
from tuneset.store import ArtifactStore


def _rows(n: int = 8) -> pl.DataFrame:
    from tuneset.data.schema import Example, rows_frame

    return rows_frame([Example(id=f"r{i}", instruction="What is 3 plus 4? Answer:", response="7") for i in range(n)])


def test_grouped_batches_visit_every_row_once_per_epoch():
    lengths = [random.Random(1).randint(1, 50) for _ in range(103)]
    batches = grouped_batches(lengths, 8, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(103))
    assert all(len(b) <= 8 for b in batches)


@pytest.mark.parametrize(("method", "lr"), [("lora", 3e-2), ("full", 5e-3)])
def test_training_lowers_the_loss_and_saves_a_loadable_model(method, lr, tiny_lm_dir, tmp_path):
    ArtifactStore(tmp_path / "store")
    cfg = FinetuneConfig(method=method, lr=lr, epochs=6, batch_size=4, warmup_ratio=0.0, seed=0)
    res = train(_rows(), cfg, str(tiny_lm_dir), tmp_path / "run", max_length=64, device="cpu")
    losses = json.loads((tmp_path / "run" / "train.json").read_text())["losses"]
    assert res.steps == 12 and len(losses) == 12
    # A random 32-dim model's frozen head caps how low LoRA can go; any real learning clears 0.1 nats.
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1
    base = load_lm(str(tiny_lm_dir), "cpu")
    tuned = (load_lm(str(tiny_lm_dir), "cpu", adapter=str(tmp_path / "run" / "adapter")) if method == "lora"
             else load_lm(str(tmp_path / "run" / "model"), "cpu"))
    ids = base.tokenizer("What is 3 plus 4? Answer: 7", return_tensors="pt").input_ids
    with torch.no_grad():
        assert not torch.allclose(base.model(ids).logits, tuned.model(ids).logits)


def test_full_fine_tuning_in_bf16_keeps_fp32_master_weights(tiny_lm_dir, tmp_path, monkeypatch):
    """On a GPU the model loads in bf16, and AdamW on bf16 weights rounded small steps away: at
    the full-method lr no norm weight (1.0) ever moved. Forced here on the CPU, as on a GPU. The
    master weights start from the stored fp32 ones, not from bf16-rounded ones upcast."""
    from tuneset.finetune import sft
    from tuneset.models import loading

    started: dict[str, torch.Tensor] = {}
    real_load = sft.load_lm

    def spy(*a, **k):
        lm = real_load(*a, **k)
        started.update({n: p.detach().clone() for n, p in lm.model.named_parameters()})
        return lm

    monkeypatch.setattr(loading, "_dtype", lambda device: torch.bfloat16)
    monkeypatch.setattr(sft, "load_lm", spy)
    cfg = FinetuneConfig(method="full", epochs=1, batch_size=4, warmup_ratio=0.0)  # lr 4e-4, the method's default
    train(_rows(), cfg, str(tiny_lm_dir), tmp_path / "run", max_length=64, device="cpu")
    monkeypatch.undo()
    before, after = (dict(load_lm(str(d), "cpu").model.named_parameters()) for d in (tiny_lm_dir, tmp_path / "run" / "model"))
    assert all(torch.equal(started[n], before[n]) for n in before)  # the bf16 round trip moved most of them
    norms = [n for n in before if "norm" in n]
    assert norms and all(not torch.equal(before[n], after[n]) for n in norms)
    assert all(p.dtype == torch.float32 for p in after.values())


def test_same_seed_same_model(tiny_lm_dir, tmp_path):
    ArtifactStore(tmp_path / "store")
    cfg = FinetuneConfig(lr=1e-3, epochs=1, batch_size=4)
    a = train(_rows(), cfg, str(tiny_lm_dir), tmp_path / "a", 64, "cpu")
    b = train(_rows(), cfg, str(tiny_lm_dir), tmp_path / "b", 64, "cpu")
    assert a.final_loss == b.final_loss


def test_a_batch_in_pieces_gives_the_update_of_the_whole_batch(tiny_lm_dir, tmp_path):
    """micro_batch_tokens caps the tokens of one forward/backward (memory); the summed gradients of
    the pieces must be the whole batch's, so the losses and weights match (dropout off: the pieces
    draw dropout masks in another order)."""
    from safetensors.torch import load_file

    from tuneset.data.schema import Example, rows_frame

    rows = rows_frame([Example(id=f"r{i}", instruction="Add the numbers " + " ".join(["3"] * (1 + i % 5)),
                               response=" ".join(["7"] * (1 + i % 3))) for i in range(12)])
    runs = {}
    for name, cap in (("whole", 10**6), ("pieces", 1)):
        cfg = FinetuneConfig(lr=1e-2, epochs=2, batch_size=4, lora_dropout=0.0, micro_batch_tokens=cap)
        res = train(rows, cfg, str(tiny_lm_dir), tmp_path / name, 64, "cpu")
        runs[name] = (res, json.loads((tmp_path / name / "train.json").read_text())["losses"],
                      load_file(str(tmp_path / name / "adapter" / "adapter_model.safetensors")))
    (whole, whole_losses, whole_w), (pieces, piece_losses, piece_w) = runs["whole"], runs["pieces"]
    assert pieces.padded_tokens < whole.padded_tokens  # one row per piece: no padding at all
    assert pieces.padded_tokens == pieces.real_tokens == whole.real_tokens
    np.testing.assert_allclose(piece_losses, whole_losses, rtol=1e-5)
    assert whole_w.keys() == piece_w.keys()
    for k in whole_w:
        torch.testing.assert_close(piece_w[k], whole_w[k], rtol=1e-4, atol=1e-6)


def test_a_set_micro_batch_cap_keys_the_fine_tune_and_survives_a_sweep():
    """With LoRA dropout the masks are drawn per piece, so a cap moves the trained weights (half
    the update's norm, measured): a fine-tune cached under one cap served another. Unset, the cap
    resolves per device and keys stay as they were. Sweep points dropped the user's cap."""
    from tuneset.data.fingerprint import fingerprint
    from tuneset.recipe import SweepConfig

    capped = FinetuneConfig(micro_batch_tokens=64)
    assert capped.micro_batch_tokens == 64 and capped.model_copy(update={"seed": 3}).micro_batch_tokens == 64
    assert fingerprint(FinetuneConfig()) == fingerprint(*FinetuneConfig().key_parts())  # unset: the key of old
    assert fingerprint(*capped.key_parts()) != fingerprint(*FinetuneConfig().key_parts())
    assert fingerprint(*capped.key_parts()) != fingerprint(*FinetuneConfig(micro_batch_tokens=128).key_parts())
    assert fingerprint(FinetuneConfig(lr=2e-3)) != fingerprint(FinetuneConfig())
    points = SweepConfig(grid={"lr": [1e-3, 2e-3]}).points(capped)
    assert [p.micro_batch_tokens for p in points] == [64, 64]
    assert SweepConfig(grid={"micro_batch_tokens": [32]}).points(capped)[0].micro_batch_tokens == 32


@pytest.fixture(scope="module")
def lm(tiny_lm_dir, tmp_path_factory):
    return load_lm(str(tiny_lm_dir), "cpu")


def test_choice_accuracy_picks_the_most_likely_choice(lm, demo_dir):
    task = TaskSpec(name="sentiment", metric="choice_accuracy", dev=demo_dir / "x", test=demo_dir / "targets/sentiment/test.jsonl",
                    choices=["negative", "positive"])
    rows = load_rows(task.test).rows.head(10)
    out = evaluate_task(lm, task, rows, max_length=64)
    assert out.height == 10 and set(out["prediction"]) <= {"negative", "positive"}
    assert out["score"].to_list() == [float(p == g) for p, g in zip(out["prediction"], rows["response"])]
    assert (out["loss"] > 0).all()


def test_per_row_choices_are_checked(lm, tmp_path):
    bad = tmp_path / "test.jsonl"
    bad.write_text('{"id": "a", "instruction": "Q?", "response": "x", "choices": ["y", "z"]}\n')
    task = TaskSpec(name="t", metric="choice_accuracy", dev=bad, test=bad)
    from tuneset.errors import DataError

    with pytest.raises(DataError, match="test.jsonl:1: field 'choices': .*does not contain the row's response 'x'"):
        evaluate_task(lm, task, load_rows(bad).rows)  # refused when read, before any model runs


def test_exact_match_and_target_loss(lm, demo_dir):
    test = demo_dir / "targets/capitals/test.jsonl"
    rows = load_rows(test).rows.head(4)
    em = evaluate_task(lm, TaskSpec(name="c", metric="exact_match", dev=test, test=test), rows, 64, max_new_tokens=3)
    assert set(em["score"].to_list()) <= {0.0, 1.0} and em["prediction"].dtype == pl.String
    tl = evaluate_task(lm, TaskSpec(name="c", metric="target_loss", dev=test, test=test), rows, 64)
    np.testing.assert_allclose(tl["score"].to_numpy(), -tl["loss"].to_numpy())
    assert tl["prediction"].null_count() == 4  # no answer, which is not an empty answer


def test_gold_answers_longer_than_the_generation_budget_are_named(lm, demo_dir, caplog, monkeypatch):
    """Named once per task and budget in a process: a compare evaluates the task per arm and seed."""
    from tuneset.evaluate import metrics

    monkeypatch.setattr(metrics, "_SAID", set())
    test = demo_dir / "targets/capitals/test.jsonl"
    rows = load_rows(test).rows.head(4)
    # counted as trained and generated: after plain text's separating space, which changes the tokens
    longest = max(len(lm.tokenizer(" " + r, add_special_tokens=False)["input_ids"]) for r in rows["response"])
    task = TaskSpec(name="c", metric="exact_match", dev=test, test=test)
    evaluate_task(lm, task, rows, 64, max_new_tokens=longest)
    assert "cannot be generated whole" not in caplog.text
    evaluate_task(lm, task, rows, 64, max_new_tokens=longest - 1)
    assert f"longer than evaluate.max_new_tokens={longest - 1} tokens (the longest {longest})" in caplog.text
    evaluate_task(lm, task, rows, 64, max_new_tokens=longest - 1)
    assert caplog.text.count("cannot be generated whole") == 1


def test_generation_keeps_a_prompt_token_when_the_answer_budget_fills_the_window(lm):
    """max_new_tokens at or past max_length (a selector's own budget, not the recipe's checked one)
    keeps the prompt's last token rather than slicing the prompt to nothing and crashing."""
    from tuneset.models.lm import generate_greedy

    out = generate_greedy(lm.model, lm.tokenizer, ["What is the capital of France? Answer:"], max_new_tokens=40,
                          max_length=8)
    assert len(out) == 1 and isinstance(out[0], str)


def test_generation_stops_at_the_end_tokens_the_models_generation_config_names(lm):
    """An Instruct model may end its turn with a token other than the tokenizer's end token (its
    generation config lists both): an answer stops there instead of running on into the next turn."""
    from tuneset.models.lm import generate_greedy

    prompt = "What is the capital of France? Answer:"
    ids = lm.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        first = int(lm.model(ids).logits[0, -1].argmax())
    config = lm.model.generation_config
    kept = config.eos_token_id
    try:
        config.eos_token_id = [lm.tokenizer.eos_token_id, first]  # the answer's first token ends the turn
        out = generate_greedy(lm.model, lm.tokenizer, [prompt], max_new_tokens=8, max_length=64)
    finally:
        config.eos_token_id = kept
    assert out == [lm.tokenizer.decode([first], skip_special_tokens=True)]


def test_prompt_format_resolves_by_the_tokenizer(lm, chat_lm_dir, tmp_path):
    from tuneset.models.lm import format_prompts, resolve_format

    assert resolve_format(lm.tokenizer, "auto") == "plain"
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template; use 'plain'"):
        resolve_format(lm.tokenizer, "chat")
    with pytest.raises(ValueError, match="valid: auto, chat, plain"):
        resolve_format(lm.tokenizer, "markdown")
    chat = load_lm(str(chat_lm_dir), "cpu").tokenizer
    assert resolve_format(chat, "auto") == "chat" and resolve_format(chat, "plain") == "plain"
    prompts, sep = format_prompts(chat, ["Q?"], "auto")
    assert (prompts, sep) == (["<bos>user: Q?<eos><bos>assistant: "], "")
    assert format_prompts(chat, ["Q?"], "plain") == (["Q?"], " ")
    # `auto` is read per content of the model's files: a template added in place counts at once.
    import shutil

    from tuneset.models.loading import prompt_format_of

    folder = shutil.copytree(lm_dir := chat_lm_dir, tmp_path / "m")
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert prompt_format_of(str(folder), "auto") == "plain"
    shutil.copytree(lm_dir, folder, dirs_exist_ok=True)
    assert prompt_format_of(str(folder), "auto") == "chat"


def test_a_response_cut_at_max_length_is_named(tiny_lm_dir, tmp_path, caplog):
    """Training cut long responses (and their EOS) without a word; evaluation already warned."""
    import logging

    rows = _rows().with_columns(pl.when(pl.int_range(pl.len()) < 3).then(pl.lit("word " * 60)).otherwise(pl.col("response")).alias("response"))
    with caplog.at_level(logging.WARNING, logger="tuneset.finetune"):
        train(rows, FinetuneConfig(epochs=1, batch_size=4), str(tiny_lm_dir), tmp_path / "run", 64, "cpu")
    assert f"3 of {rows.height} rows are longer than model.max_length 64" in caplog.text


def test_a_prompt_cut_at_max_length_is_named(tiny_lm_dir, tmp_path, caplog):
    """A long instruction lost its first tokens (a chat template's opening with them) without a
    word: only a cut response was said."""
    import logging

    rows = _rows().with_columns(pl.when(pl.int_range(pl.len()) < 2).then(pl.lit("Context: " + "fact " * 80 + "Q?"))
                                .otherwise(pl.col("instruction")).alias("instruction"))
    with caplog.at_level(logging.WARNING, logger="tuneset.finetune"):
        train(rows, FinetuneConfig(epochs=1, batch_size=4), str(tiny_lm_dir), tmp_path / "run", 64, "cpu")
    assert f"2 of {rows.height} rows' prompts lose their first tokens to fit model.max_length 64" in caplog.text
    assert "responses are cut" not in caplog.text  # the answers themselves fit


def test_chat_format_trains_and_scores_the_response_after_the_assistant_header(chat_lm_dir, tmp_path):
    from tuneset.models.lm import encode, format_prompts

    ArtifactStore(tmp_path / "store")
    res = train(_rows(), FinetuneConfig(lr=1e-3, epochs=1, batch_size=4), str(chat_lm_dir), tmp_path / "run",
                64, "cpu")
    assert res.prompt_format == "chat"
    assert json.loads((tmp_path / "run" / "train.json").read_text())["prompt_format"] == "chat"
    tok = load_lm(str(chat_lm_dir), "cpu").tokenizer
    prompts, sep = format_prompts(tok, ["What is 3 plus 4? Answer:"], "chat")
    e = encode(tok, prompts, ["7"], 64, add_eos=True, sep=sep)[0]
    assert tok.decode(e.ids[:e.n_prompt]) == prompts[0]
    assert e.ids[e.n_prompt:] == tok("7", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_killed_fine_tune_resumes_to_the_uninterrupted_result(method, tiny_lm_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    ArtifactStore(tmp_path / "store")
    cfg = FinetuneConfig(method=method, lr=5e-3, epochs=3, batch_size=4, seed=3)  # 6 steps, LoRA dropout on
    whole = train(_rows(), cfg, str(tiny_lm_dir), tmp_path / "whole", 64, "cpu", resume_every_s=0)
    real_clip, calls = torch.nn.utils.clip_grad_norm_, []

    def dies_at_step_4(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")
        return real_clip(*a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", dies_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        train(_rows(), cfg, str(tiny_lm_dir), tmp_path / "killed", 64, "cpu", resume_every_s=0)
    assert json.loads((tmp_path / "killed" / "resume" / "state.json").read_text())["step"] == 3
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", real_clip)
    resumed = train(_rows(), cfg, str(tiny_lm_dir), tmp_path / "killed", 64, "cpu", resume_every_s=0)
    assert resumed.final_loss == whole.final_loss and resumed.steps == whole.steps == 6
    a = json.loads((tmp_path / "whole" / "train.json").read_text())["losses"]
    b = json.loads((tmp_path / "killed" / "train.json").read_text())["losses"]
    assert a == b
    name = "adapter/adapter_model.safetensors" if method == "lora" else "model/model.safetensors"
    wa, wb = load_file(tmp_path / "whole" / name), load_file(tmp_path / "killed" / name)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not (tmp_path / "killed" / "resume").exists()


@pytest.mark.parametrize("stop_at", [3, 6])
def test_a_stopped_fine_tune_keeps_every_finished_step(tiny_lm_dir, tmp_path, monkeypatch, stop_at):
    """SIGTERM or Ctrl-C sets progress.STOP: the fine-tune saves the step it finished before it
    stops, so the rerun trains only the steps left (none after the last) to the same weights,
    however long ago the last timed save was."""
    from tuneset.progress import STOP, Stopped

    cfg = FinetuneConfig(lr=5e-3, epochs=3, batch_size=4, seed=3)  # 6 steps
    whole = train(_rows(), cfg, str(tiny_lm_dir), tmp_path / "whole", 64, "cpu")
    real_clip, steps, fired = torch.nn.utils.clip_grad_norm_, [], []

    def counted(*a, **k):
        steps.append(1)
        if len(steps) == stop_at and not fired:
            fired.append(STOP.set())  # the signal handler's doing, mid-step
        return real_clip(*a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", counted)
    try:
        with pytest.raises(Stopped):
            train(_rows(), cfg, str(tiny_lm_dir), tmp_path / "stopped", 64, "cpu", resume_every_s=10**9)
    finally:
        STOP.clear()
    assert json.loads((tmp_path / "stopped" / "resume" / "state.json").read_text())["step"] == stop_at
    steps.clear()
    resumed = train(_rows(), cfg, str(tiny_lm_dir), tmp_path / "stopped", 64, "cpu", resume_every_s=10**9)
    assert len(steps) == 6 - stop_at and resumed.final_loss == whole.final_loss


def test_a_kill_while_the_resume_state_is_written_never_locks_the_fine_tune(tiny_lm_dir, tmp_path, monkeypatch):
    """state.json marks a resume state whole, so it appears whole or not at all: a kill in the
    middle of writing it leaves no half file for every rerun to fail on."""
    import pathlib

    cfg = FinetuneConfig(lr=5e-3, epochs=3, batch_size=4, seed=3)
    whole = train(_rows(), cfg, str(tiny_lm_dir), tmp_path / "whole", 64, "cpu")
    real_write = pathlib.Path.write_text

    def dies_half_way(self, text, *a, **k):
        if "state.json" in self.name:
            real_write(self, text[: len(text) // 2], *a, **k)
            raise KeyboardInterrupt("killed while writing")
        return real_write(self, text, *a, **k)

    monkeypatch.setattr(pathlib.Path, "write_text", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        train(_rows(), cfg, str(tiny_lm_dir), tmp_path / "killed", 64, "cpu", resume_every_s=0)
    monkeypatch.setattr(pathlib.Path, "write_text", real_write)
    assert train(_rows(), cfg, str(tiny_lm_dir), tmp_path / "killed", 64, "cpu").final_loss == whole.final_loss


@pytest.mark.parametrize("kill_at", [1, 3])
def test_a_fine_tune_killed_between_the_resume_saves_renames_resumes_from_the_new_state(tiny_lm_dir, tmp_path, monkeypatch,
                                                                                        kill_at):
    """The save moves the last state aside, then the new one into place: a kill between the two
    (or before the first save's only move) leaves no `resume/`, and the run goes on from the new
    state rather than from step 0; one more kill right after resuming loses nothing either."""
    import pathlib

    cfg = FinetuneConfig(lr=5e-3, epochs=3, batch_size=4, seed=3)  # 6 steps
    whole = train(_rows(), cfg, str(tiny_lm_dir), tmp_path / "whole", 64, "cpu", resume_every_s=0)
    real_rename, moves = pathlib.Path.rename, []

    def dies_at_a_move_into_place(self, target):
        if self.name == "resume.tmp":
            moves.append(1)
            if len(moves) == kill_at:  # the step-k save; from the second on, the old state is already aside
                raise KeyboardInterrupt("killed")
        return real_rename(self, target)

    monkeypatch.setattr(pathlib.Path, "rename", dies_at_a_move_into_place)
    with pytest.raises(KeyboardInterrupt):
        train(_rows(), cfg, str(tiny_lm_dir), tmp_path / "killed", 64, "cpu", resume_every_s=0)
    monkeypatch.setattr(pathlib.Path, "rename", real_rename)
    out = tmp_path / "killed"
    assert not (out / "resume").exists() and json.loads((out / "resume.tmp" / "state.json").read_text())["step"] == kill_at
    steps, real_clip = [], torch.nn.utils.clip_grad_norm_

    def killed_on_the_first_step(*a, **k):
        raise KeyboardInterrupt("killed again")

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", killed_on_the_first_step)
    with pytest.raises(KeyboardInterrupt):  # the state it resumed from is in place before any save
        train(_rows(), cfg, str(tiny_lm_dir), out, 64, "cpu", resume_every_s=0)
    assert json.loads((out / "resume" / "state.json").read_text())["step"] == kill_at
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: (steps.append(1), real_clip(*a, **k))[1])
    resumed = train(_rows(), cfg, str(tiny_lm_dir), out, 64, "cpu", resume_every_s=0)
    assert len(steps) == 6 - kill_at and resumed.final_loss == whole.final_loss  # the rest only, to the same result
    assert not any((out / name).exists() for name in ("resume", "resume.tmp", "resume.old"))


def test_long_work_logs_step_total_rate_and_eta(tiny_lm_dir, tmp_path, caplog, lm, demo_dir, monkeypatch):
    import logging

    from tuneset.progress import ProgressLog

    p = ProgressLog("work", 4, "rows", every=3600)
    p.update(1)
    assert p.line().startswith("work: 1/4 rows (25%), ") and "rows/s" in p.line() and "ETA " in p.line()
    # Resumed at 500 of 1000: the rate counts this run's work only, so the ETA is not ~0.
    import time

    monkeypatch.setattr(time, "perf_counter", lambda: 100.0)  # a still clock: 10 steps in exactly 10 s
    resumed = ProgressLog("work", 1000, "steps", every=3600, start=500)
    monkeypatch.setattr(time, "perf_counter", lambda: 110.0)
    resumed.update(510)
    line = resumed.line()
    monkeypatch.undo()
    assert ", 1.00 steps/s, elapsed 0:00:10, ETA 0:08:10" in line
    with caplog.at_level(logging.INFO, logger="tuneset.progress"):
        train(_rows(), FinetuneConfig(lr=1e-3, epochs=1, batch_size=4), str(tiny_lm_dir),
              tmp_path / "run", 64, "cpu")
        task = TaskSpec(name="capitals", metric="exact_match", dev=demo_dir / "x", test=demo_dir / "targets/capitals/test.jsonl")
        evaluate_task(lm, task, load_rows(task.test).rows.head(5), 64, 4096, 4)
    lines = [r.getMessage() for r in caplog.records if r.name == "tuneset.progress"]
    assert any(ln.startswith("fine-tune 8 rows (plain, lr 0.001, 1 epochs): 2/2 steps (100%)") for ln in lines)
    assert any(ln.startswith("evaluate capitals: generate: 5/5 generations") for ln in lines)


def test_choice_rows_passed_in_directly_are_checked_by_id():
    """Rows that did not come through a task file have no file line to name: their id is named."""
    import polars as pl

    from tuneset.data.schema import ROW_SCHEMA
    from tuneset.errors import TunesetError
    from tuneset.evaluate.metrics import _choices
    from tuneset.recipe import TaskSpec

    task = TaskSpec(name="mc", metric="choice_accuracy", dev="dev.jsonl")
    rows = pl.DataFrame({"id": ["a", "b"], "source": ["s", "s"], "instruction": ["q", "q"], "response": ["x", "y"],
                         "choices": [["x", "y"], None], "metadata": [None, None]}, schema=ROW_SCHEMA)
    with pytest.raises(TunesetError, match="task 'mc' \\(choice_accuracy\\): 1 of its rows have no choices \\(first: id 'b'\\)"):
        _choices(task, rows)
    fixed = task.model_copy(update={"choices": ["x", "z"]})
    with pytest.raises(TunesetError, match="row 'b': its answer 'y' is not one of its choices"):
        _choices(fixed, rows)
    assert _choices(fixed, rows[:1]) == [["x", "z"]]
