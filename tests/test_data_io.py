from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import polars as pl
import pytest

from tuneset import __version__
from tuneset.data.fingerprint import dataset_fingerprint, fingerprint
from tuneset.data.io import detect_format, load_rows, read_jsonl, write_jsonl, write_rows
from tuneset.data.schema import ROW_COLUMNS, Example
from tuneset.errors import DataError, TunesetError

GOOD = [
    {"id": "a", "source": "s1", "instruction": "What is 2+2?", "response": "4"},
    {"id": "b", "source": "s2", "instruction": "Pick one", "response": "x", "choices": ["x", "y"]},
    {"id": "c", "source": "s1", "instruction": "Say hi", "response": "hi"},
]
PLAIN = [{k: v for k, v in r.items() if k != "choices"} for r in GOOD]


def _jsonl(path: Path, lines: list[bytes | dict]) -> Path:
    raw = [ln if isinstance(ln, bytes) else json.dumps(ln).encode() for ln in lines]
    path.write_bytes(b"\n".join(raw) + b"\n")
    return path


def test_load_good_rows(tmp_path):
    res = load_rows(_jsonl(tmp_path / "pool.jsonl", GOOD))
    assert res.n_read == 3
    assert res.quarantined == []
    assert res.rows.columns == ROW_COLUMNS
    assert res.rows["id"].to_list() == ["a", "b", "c"]
    assert res.rows["choices"].to_list() == [None, ["x", "y"], None]


def test_missing_source_defaults_and_extras_travel_as_metadata(tmp_path):
    rec = {"id": "a", "instruction": "q", "response": "r", "zeta": 1, "alpha": "x"}
    rows = load_rows(_jsonl(tmp_path / "p.jsonl", [rec])).rows
    assert rows["source"][0] == "unknown"
    assert rows["metadata"][0] == '{"alpha": "x", "zeta": 1}'


def test_blank_lines_are_skipped_but_line_numbers_stay_physical(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_bytes(json.dumps(GOOD[0]).encode() + b"\n\n   \n" + b'{"id": "z", "instruction": "q"}\n')
    with pytest.raises(DataError) as e:
        load_rows(p)
    assert e.value.line == 4
    res = load_rows(p, quarantine=tmp_path / "q.jsonl")
    assert res.n_read == 2


BAD_LINES = [
    pytest.param(b'{"id": "x", "instruction": "q", "response": ', "<line>", "broken JSON", id="broken-json"),
    pytest.param({"id": "x", "instruction": "q"}, "response", "field required", id="missing-response"),
    pytest.param({"id": "x", "instruction": "q", "completion": "r"}, "response",
                 "field required; rows may be instruction/response, prompt/completion (TRL)", id="mixed-shape"),
    pytest.param({"id": "x", "instruction": "q", "response": 3}, "response", "valid string", id="response-int"),
    pytest.param(b'{"id": "x", "instruction": "q", "response": "\xff\xfe"}', "<line>", "invalid UTF-8", id="bad-utf8"),
    pytest.param({"id": "a", "instruction": "q", "response": "r"}, "id", "repeats the id of line 1", id="repeated-id"),
    pytest.param(b"[1, 2]", "<line>", "expected a JSON object, got list", id="not-object"),
    pytest.param({"id": "", "instruction": "q", "response": "r"}, "id", "must not be empty or whitespace", id="empty-id"),
    pytest.param({"id": 7, "instruction": "q", "response": "r"}, "id", "valid string", id="int-id"),
    pytest.param({"id": "x", "instruction": "  ", "response": "r"}, "instruction", "must not be empty", id="blank-instr"),
    pytest.param({"id": "x", "instruction": "q", "response": "r", "choices": ["r"]}, "choices",
                 "at least two choices", id="one-choice"),
]


@pytest.mark.parametrize(("line", "field", "reason"), BAD_LINES)
def test_bad_row_raises_data_error_naming_file_line_field(tmp_path, line, field, reason):
    p = _jsonl(tmp_path / "pool.jsonl", [GOOD[0], GOOD[2], line, GOOD[1]])
    with pytest.raises(DataError) as e:
        load_rows(p)
    err = e.value
    assert (err.file, err.line, err.field) == (str(p), 3, field)
    assert reason in err.reason
    assert str(err).startswith(f"{p}:3: field '{field}': ")


def test_quarantine_completes_and_accounts_for_every_row(tmp_path):
    lines = [
        GOOD[0],
        b'{"id": "x1", "instruction": ',
        {"id": "x2", "instruction": "q"},
        {"id": "x3", "instruction": "q", "response": 3},
        b'{"id": "x4", "instruction": "q", "response": "\xc3\x28"}',
        {"id": "a", "instruction": "again", "response": "r"},
        GOOD[1],
        GOOD[2],
    ]
    src = _jsonl(tmp_path / "pool.jsonl", lines)
    qfile = tmp_path / "out" / "quarantine.jsonl"
    res = load_rows(src, quarantine=qfile)

    assert res.rows["id"].to_list() == ["a", "b", "c"]
    assert res.n_read == 8 == res.rows.height + len(res.quarantined)
    recs = read_jsonl(qfile)
    assert recs == res.quarantined
    assert [(r["file"], r["line"], r["field"]) for r in recs] == [
        (str(src), 2, "<line>"), (str(src), 3, "response"), (str(src), 4, "response"),
        (str(src), 5, "<line>"), (str(src), 6, "id"),
    ]
    assert all(r["reason"] for r in recs)
    assert recs[4]["reason"] == "repeats the id of line 1"
    assert [r["id"] for r in recs] == [None, "x2", "x3", None, "a"]
    assert json.loads(recs[2]["raw"]) == {"id": "x3", "instruction": "q", "response": 3}
    assert recs[0]["raw"] == '{"id": "x1", "instruction": '  # a line that never parsed: its text as read
    assert recs[3]["raw"] == '{"id": "x4", "instruction": "q", "response": "\\xc3("}'  # the bad byte escaped


def test_quarantine_file_written_even_when_nothing_is_bad(tmp_path):
    qfile = tmp_path / "q.jsonl"
    res = load_rows(_jsonl(tmp_path / "p.jsonl", GOOD), quarantine=qfile)
    assert res.quarantined == []
    assert qfile.read_text() == ""


def test_broken_json_column_points_into_the_line(tmp_path):
    """A truncated line (the usual result of an interrupted write) should report the column
    where parsing stopped, not column 1 of the newline that follows it."""
    prefix = '{"id": "x", "instruction": '
    try:
        json.loads(prefix)
    except json.JSONDecodeError as e:
        expected_col = e.colno
    p = _jsonl(tmp_path / "p.jsonl", [GOOD[0], prefix.encode()])
    with pytest.raises(DataError) as e:
        load_rows(p)
    assert f"(column {expected_col})" in e.value.reason


def test_csv_line_numbers_count_the_header(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("id,source,instruction,response\na,s,q1,r1\nb,s,q2,\n")
    with pytest.raises(DataError) as e:
        load_rows(p)
    assert (e.value.line, e.value.field) == (3, "response")


def test_parquet_type_errors_are_named(tmp_path):
    p = tmp_path / "p.parquet"
    pl.DataFrame({"id": ["a", "b"], "instruction": ["q", "q"], "response": [1, 2]}).write_parquet(p)
    with pytest.raises(DataError) as e:
        load_rows(p)
    assert (e.value.file, e.value.line, e.value.field) == (str(p), 1, "response")


def test_same_rows_give_same_fingerprint_in_every_format(tmp_path):
    import datasets

    fp_jsonl = dataset_fingerprint(load_rows(_jsonl(tmp_path / "p.jsonl", GOOD)).rows)

    pl.DataFrame(GOOD).write_parquet(tmp_path / "p.parquet")
    datasets.Dataset.from_list([{**r, "choices": r.get("choices")} for r in GOOD]).save_to_disk(str(tmp_path / "hf"))
    assert detect_format(tmp_path / "hf") == "hf"
    assert dataset_fingerprint(load_rows(tmp_path / "p.parquet").rows) == fp_jsonl
    assert dataset_fingerprint(load_rows(tmp_path / "hf").rows) == fp_jsonl

    plain_jsonl = dataset_fingerprint(load_rows(_jsonl(tmp_path / "plain.jsonl", PLAIN)).rows)
    pl.DataFrame(PLAIN).write_csv(tmp_path / "plain.csv")
    assert dataset_fingerprint(load_rows(tmp_path / "plain.csv").rows) == plain_jsonl
    assert plain_jsonl != fp_jsonl


def test_fingerprint_tracks_content_and_order_not_metadata(tmp_path):
    base = dataset_fingerprint(load_rows(_jsonl(tmp_path / "a.jsonl", GOOD)).rows)
    changed = [dict(r) for r in GOOD]
    changed[2]["response"] = "hello"
    assert dataset_fingerprint(load_rows(_jsonl(tmp_path / "b.jsonl", changed)).rows) != base
    assert dataset_fingerprint(load_rows(_jsonl(tmp_path / "c.jsonl", GOOD[::-1])).rows) != base
    with_meta = [{**r, "note": "extra"} for r in GOOD]
    assert dataset_fingerprint(load_rows(_jsonl(tmp_path / "d.jsonl", with_meta)).rows) == base


def test_fingerprint_parts():
    assert fingerprint("a", {"x": 1, "y": 2}) == fingerprint("a", {"y": 2, "x": 1})
    assert fingerprint("a", 1) != fingerprint("a", 2)
    assert len(fingerprint("a")) == 24
    assert fingerprint(Path("/x/y")) == fingerprint("/x/y")
    ex = Example(id="a", instruction="q", response="r")
    assert fingerprint(ex) == fingerprint(ex.model_dump(mode="json"))
    with pytest.raises(TypeError, match="cannot fingerprint object"):
        fingerprint(object())


def test_fingerprint_changes_with_package_version(monkeypatch):
    fpmod = sys.modules["tuneset.data.fingerprint"]  # the package re-exports a function of the same name
    before = fingerprint("a")
    monkeypatch.setattr(fpmod, "__version__", __version__ + ".post1")
    assert fingerprint("a") != before


def test_write_rows_round_trips_metadata_and_choices(tmp_path):
    recs = [{**GOOD[0], "difficulty": 3}, GOOD[1]]
    first = load_rows(_jsonl(tmp_path / "in.jsonl", recs)).rows
    write_rows(tmp_path / "out.jsonl", first)
    assert read_jsonl(tmp_path / "out.jsonl") == recs
    again = load_rows(tmp_path / "out.jsonl").rows
    assert again.equals(first)


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_write_rows_with_choices_reads_back_in_every_format(tmp_path, ext):
    """`tuneset select --out x.csv` on rows with choices crashed after the selection: a list cell
    is JSON text in a CSV, and the reader turns it back into the list."""
    recs = [{**GOOD[0], "choices": [GOOD[0]["response"], "other"]}, GOOD[1]]
    first = load_rows(_jsonl(tmp_path / "in.jsonl", recs)).rows
    out = write_rows(tmp_path / f"out.{ext}", first)
    again = load_rows(out).rows
    assert again.select("id", "instruction", "response", "choices").equals(first.select("id", "instruction", "response", "choices"))


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_a_users_own_metadata_field_round_trips(tmp_path, ext):
    """A user field named `metadata` (text, or an object) beside rows with choices once read back
    as our canonical frame's JSON column and failed: "is not a JSON object"."""
    recs = [{**GOOD[0], "metadata": "reviewed"}, {**GOOD[1], "metadata": "fine"}]
    first = load_rows(_jsonl(tmp_path / "in.jsonl", recs)).rows
    again = load_rows(write_rows(tmp_path / f"out.{ext}", first)).rows
    assert again.equals(first) and json.loads(again["metadata"][0]) == {"metadata": "reviewed"}


def test_parquet_refuses_to_change_a_field_of_mixed_types(tmp_path):
    """A Parquet column holds one type: polars wrote 1 as "1" beside "two", and true as 1."""
    for values, shown in (([1, "two"], '"1"'), ([True, 1], "1"), ([{"k": 1}, {"j": 2}], '{"k": 1, "j": null}')):
        recs = [{**GOOD[0], "extra": values[0]}, {**GOOD[2], "extra": values[1]}]
        rows = load_rows(_jsonl(tmp_path / "in.jsonl", recs)).rows
        with pytest.raises(TunesetError, match=rf"field 'extra' of row 1 \(id 'a'\) would be stored as {re.escape(shown)}.*write .jsonl"):
            write_rows(tmp_path / "out.parquet", rows)
        assert not (tmp_path / "out.parquet").exists()
        assert load_rows(write_rows(tmp_path / "out.jsonl", rows)).rows.equals(rows)
    same = load_rows(_jsonl(tmp_path / "ok.jsonl", [{**GOOD[0], "extra": 1}, {**GOOD[2], "extra": 2.5}])).rows  # 1 reads as 1.0
    assert json.loads(load_rows(write_rows(tmp_path / "ok.parquet", same)).rows["metadata"][0]) == {"extra": 1.0}


def test_a_saved_dataset_dict_is_named_as_several_splits(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(PLAIN), "test": datasets.Dataset.from_list(PLAIN)}).save_to_disk(str(tmp_path / "dd"))
    for target in (tmp_path / "dd", tmp_path):  # named itself, or a folder holding it
        with pytest.raises(TunesetError, match=r"holds several splits \(train, test\); name one split's folder|dd/"):
            load_rows(target)
    assert load_rows(tmp_path / "dd" / "train").rows["id"].to_list() == ["a", "b", "c"]


def test_a_column_mapped_onto_a_field_the_row_has_is_an_error(tmp_path):
    """Mapping `response: answer` over rows that also hold their own `response` would throw that
    value away without a word."""
    rows = [{"question": "q", "answer": "a", "response": "old"}]
    with pytest.raises(DataError, match=r"field 'response': the row has its own 'response', which columns would replace with 'answer'"):
        load_rows(_jsonl(tmp_path / "p.jsonl", rows), columns={"instruction": "question", "response": "answer"})
    swap = load_rows(_jsonl(tmp_path / "s.jsonl", [{"instruction": "r", "response": "q"}]),
                     columns={"instruction": "response", "response": "instruction"}).rows  # a swap names both
    assert (swap["instruction"][0], swap["response"][0]) == ("q", "r")
    both = load_rows(_jsonl(tmp_path / "b.jsonl", [{"text": "t"}]), columns={"instruction": "text", "response": "text"}).rows
    assert (both["instruction"][0], both["response"][0]) == ("t", "t")


def test_canonical_frame_saved_as_parquet_reads_back_unchanged(tmp_path):
    """The store keeps rows as parquet in the canonical schema (with a `metadata` JSON column);
    reading that file back must not nest the metadata inside itself."""
    recs = [{**GOOD[0], "difficulty": 3}, GOOD[2]]
    first = load_rows(_jsonl(tmp_path / "in.jsonl", recs)).rows
    first.write_parquet(tmp_path / "rows.parquet")
    again = load_rows(tmp_path / "rows.parquet").rows
    assert again["metadata"].to_list() == first["metadata"].to_list() == ['{"difficulty": 3}', None]


def test_write_jsonl_leaves_old_file_when_writer_raises(tmp_path):
    target = write_jsonl(tmp_path / "x.jsonl", [{"v": 1}])

    def records():
        yield {"v": 2}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_jsonl(target, records())
    assert read_jsonl(target) == [{"v": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["x.jsonl"]


@pytest.mark.parametrize(("name", "fmt"), [("a.jsonl", "jsonl"), ("a.JSON", "jsonl"), ("a.ndjson", "jsonl"),
                                           ("a.parquet", "parquet"), ("a.csv", "csv")])
def test_detect_format(tmp_path, name, fmt):
    assert detect_format(tmp_path / name) == fmt


def test_unknown_suffix_and_plain_folder_and_missing_file(tmp_path):
    with pytest.raises(TunesetError, match=r"unknown file type '\.txt'; valid: \.jsonl"):
        detect_format(tmp_path / "rows.txt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(TunesetError, match="holds no .jsonl, .parquet or .csv file and is no saved HF dataset"):
        load_rows(tmp_path / "folder")
    with pytest.raises(TunesetError, match="nope.jsonl: no such file"):
        load_rows(tmp_path / "nope.jsonl")
    with pytest.raises(TunesetError, match=r"x\*.jsonl: the pattern matches no file"):
        load_rows(tmp_path / "x*.jsonl")


def test_a_pool_of_many_files_grows_by_new_files_and_a_resent_file_adds_nothing(tmp_path, caplog):
    """A folder or glob of JSONL/Parquet/CSV files reads as one pool, in file-name order; rows are
    identified by content, so a re-sent file (with ids or without) adds no row."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    write_jsonl(folder / "2026-01.jsonl", GOOD[:2])
    pl.DataFrame([GOOD[2]]).write_parquet(folder / "2026-02.parquet")
    (folder / "notes.txt").write_text("not rows")
    with caplog.at_level("WARNING", logger="tuneset.data"):
        res = load_rows(folder)
    assert res.rows["id"].to_list() == ["a", "b", "c"] and res.n_read == 3 and res.n_resent == 0
    assert "notes.txt" in caplog.text  # named, not silently skipped
    assert load_rows(tmp_path / "incoming" / "*.jsonl").rows["id"].to_list() == ["a", "b"]

    write_jsonl(folder / "2026-03.jsonl", GOOD[:2])  # the January file, sent again
    res = load_rows(folder)
    assert res.rows["id"].to_list() == ["a", "b", "c"] and res.n_read == 3 and res.n_resent == 2

    no_ids = [{k: v for k, v in r.items() if k != "id"} for r in GOOD]
    write_jsonl(tmp_path / "plain" / "1.jsonl", no_ids)
    write_jsonl(tmp_path / "plain" / "2.jsonl", [*no_ids, {"instruction": "new", "response": "row"}])
    res = load_rows(tmp_path / "plain")
    assert res.rows.height == 4 and res.n_resent == 3  # content ids: the same rows get the same ids


def test_an_id_reused_for_other_content_in_another_file_is_named(tmp_path):
    write_jsonl(tmp_path / "p" / "1.jsonl", GOOD)
    write_jsonl(tmp_path / "p" / "2.jsonl", [{**GOOD[0], "response": "5"}])
    with pytest.raises(DataError, match=r"2.jsonl:1: field .id.: repeats the id of .*1.jsonl line 1"):
        load_rows(tmp_path / "p")


@pytest.mark.parametrize(("row", "field", "message"), [
    ({"id": "a", "instruction": "q", "response": "   "}, "response", "must not be empty or whitespace"),
    ({"id": " ", "instruction": "q", "response": "r"}, "id", "must not be empty or whitespace"),
    ({"id": "a", "instruction": "q", "response": "r", "source": ""}, "source", "must not be empty or whitespace"),
    ({"id": "a", "instruction": "q", "response": "D", "choices": ["A", "B"]}, "choices", "does not contain the row's response 'D'"),
])
def test_blank_fields_and_a_response_outside_its_choices_are_refused(tmp_path, row, field, message):
    p = _jsonl(tmp_path / "p.jsonl", [GOOD[0], row])
    with pytest.raises(DataError, match=rf"p.jsonl:2: field '{field}': .*{message}"):
        load_rows(p)


def test_metadata_survives_a_store_that_saw_the_same_rows_without_it(tmp_path):
    from tuneset.flows.common import save_rows
    from tuneset.store import ArtifactStore

    store = ArtifactStore(tmp_path / "store")
    plain = load_rows(_jsonl(tmp_path / "a.jsonl", [GOOD[0]])).rows
    tagged = load_rows(_jsonl(tmp_path / "b.jsonl", [{**GOOD[0], "lang": "en", "tags": ["x"]}])).rows
    a, b = save_rows(store, plain), save_rows(store, tagged)
    assert a.fingerprint == b.fingerprint  # score caches are shared: no stage reads metadata
    assert a.path != b.path and json.loads(b.read()["metadata"][0]) == {"lang": "en", "tags": ["x"]}


SHAPED = {
    "trl": [{"prompt": "What is 3 plus 4?", "completion": "7"}],
    "chat": [{"messages": [{"role": "user", "content": "What is 3 plus 4?"}, {"role": "assistant", "content": "7"}]}],
    "alpaca": [{"instruction": "Add the numbers.", "input": "3 and 4", "output": "7"}],
    "mapped": [{"question": "What is 3 plus 4?", "answer": "7", "uid": "q1"}],
}


@pytest.mark.parametrize("shape", list(SHAPED))
def test_common_row_shapes_become_instruction_response(tmp_path, shape):
    columns = {"instruction": "question", "response": "answer", "id": "uid"} if shape == "mapped" else None
    rows = load_rows(_jsonl(tmp_path / "p.jsonl", SHAPED[shape]), columns=columns).rows
    r = rows.row(0, named=True)
    assert r["response"] == "7"
    assert r["instruction"] == ("Add the numbers.\n\n3 and 4" if shape == "alpaca" else "What is 3 plus 4?")
    assert r["id"] == ("q1" if shape == "mapped" else
                       __import__("hashlib").sha256(f"{r['instruction']}\0{r['response']}".encode()).hexdigest()[:16])


def test_a_mapped_column_missing_is_an_error_even_where_our_own_field_is_there(tmp_path):
    """A pool in our names under a mapping that names a column it lacks: the mapping is wrong, and
    reading `response` instead would mix fields row by row where some rows have both."""
    with pytest.raises(DataError, match=r"p.jsonl:1: field 'answer': missing \(columns maps response to it\)"):
        load_rows(_jsonl(tmp_path / "p.jsonl", [{"instruction": "q", "response": "r"}]), columns={"response": "answer"})


def test_multi_turn_chat_keeps_the_earlier_turns_in_the_instruction(tmp_path):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "3+4?"}, {"role": "assistant", "content": "7"}]
    r = load_rows(_jsonl(tmp_path / "p.jsonl", [{"id": "c", "messages": msgs}])).rows.row(0, named=True)
    assert r["instruction"] == "system: Be brief.\nuser: Hi\nassistant: Hello\nuser: 3+4?" and r["response"] == "7"


@pytest.mark.parametrize(("rec", "columns", "field", "message"), [
    ({"messages": [{"role": "user", "content": "x"}]}, None, "messages", "needs an assistant turn"),
    ({"messages": "hi"}, None, "messages", r"expected a list of \{role, content\}"),
    ({"q": "x", "a": "y"}, {"instruction": "question"}, "question", "missing \\(columns maps instruction to it\\)"),
])
def test_bad_shapes_are_named(tmp_path, rec, columns, field, message):
    with pytest.raises(DataError, match=rf"p.jsonl:1: field '{field}': {message}"):
        load_rows(_jsonl(tmp_path / "p.jsonl", [rec]), columns=columns)


def test_a_misspelt_field_is_named_beside_the_missing_one(tmp_path):
    src = _jsonl(tmp_path / "p.jsonl", [{"id": "a", "instruction": "q", "respone": "r"}])
    with pytest.raises(DataError, match=r":1: field 'response': field required; the row has 'respone': misspelt\?"):
        load_rows(src)


def test_a_file_with_several_bad_rows_names_them_all_in_one_error(tmp_path):
    """Fixing a task file took one run per bad row; now one error lists every bad row it read."""
    from tuneset.data.io import MAX_NAMED
    from tuneset.errors import BadRows

    lines = [GOOD[0], {"id": "b", "instruction": "q"}, {"id": "c", "instruction": "q", "response": ""}, GOOD[1]]
    p = _jsonl(tmp_path / "p.jsonl", lines)
    with pytest.raises(BadRows) as e:
        load_rows(p)
    assert [(x.line, x.field) for x in e.value.errors] == [(2, "response"), (3, "response")]
    assert (e.value.line, e.value.field) == (2, "response")  # a DataError of its first row
    text = str(e.value)
    assert text.startswith("2 bad rows: ") and "p.jsonl:2: field 'response'" in text and "; " in text and "p.jsonl:3: " in text
    assert "\n" not in text

    many = _jsonl(tmp_path / "many.jsonl", [{"id": f"r{i}", "instruction": "q"} for i in range(MAX_NAMED + 5)])
    with pytest.raises(BadRows, match=rf"the first {MAX_NAMED} bad rows \(reading stopped there\)") as e:
        load_rows(many)
    assert len(e.value.errors) == MAX_NAMED
    exactly = _jsonl(tmp_path / "exactly.jsonl", [{"id": f"r{i}", "instruction": "q"} for i in range(MAX_NAMED)])
    with pytest.raises(BadRows, match=rf"^{MAX_NAMED} bad rows:") as e:  # nothing was left unread
        load_rows(exactly)


def test_a_tasks_fixed_answers_are_checked_row_by_row(tmp_path):
    rows = [{"id": "a", "instruction": "q", "response": "yes"}, {"id": "b", "instruction": "q", "response": "Yes"}]
    p = _jsonl(tmp_path / "dev.jsonl", rows)
    with pytest.raises(DataError, match=r"dev.jsonl:2: field 'response': 'Yes' is not one of the task's choices \('yes', 'no'\)"):
        load_rows(p, answers=["yes", "no"])
    assert load_rows(p, answers=["yes", "no", "Yes"]).rows.height == 2
    assert load_rows(p).rows.height == 2  # a task without fixed choices reads any answer
