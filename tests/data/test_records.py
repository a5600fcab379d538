"""Tests for obliviate.data.records: JSON lines and JSON array loaders, stable ids, and error messages that name
the file, the line (or array item) and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from obliviate.data.records import QA, Split, load_file, load_split, overlap_count, write_records
from obliviate.errors import DataError

ROWS = [
    {"question": "Who wrote 'Dune'?", "answer": "Frank Herbert."},
    {"question": "Where was Ada born?", "answer": "In London.", "paraphrased_answer": "London.",
     "perturbed_answer": ["In Paris.", "In Rome."]},
]


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _array(path: Path, rows: list[object]) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- formats


def test_jsonl_file_loads_records_in_order(tmp_path):
    """A JSON-lines file yields one QA per line, in file order, with optional fields filled."""
    split = load_split(_jsonl(tmp_path / "forget01.jsonl", ROWS))
    assert isinstance(split, Split)
    assert split.name == "forget01"
    assert [r.question for r in split] == [r["question"] for r in ROWS]
    assert split.records[0].perturbed_answers == ()
    assert split.records[1].paraphrased_answer == "London."
    assert split.records[1].perturbed_answers == ("In Paris.", "In Rome.")


def test_json_array_file_loads_same_records_as_jsonl(tmp_path):
    """A JSON array (TOFU's holdout*.json format) gives the same records and ids as JSON lines."""
    a = load_split(_array(tmp_path / "x.json", ROWS))
    b = load_split(_jsonl(tmp_path / "x.jsonl", ROWS))
    assert a.records == b.records
    assert [r.id for r in a] == ["x:00000", "x:00001"]


def test_blank_lines_are_skipped_and_do_not_shift_ids(tmp_path):
    """Blank lines between JSON lines are ignored; ids count records, not lines."""
    p = tmp_path / "s.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n\n   \n" + json.dumps(ROWS[1]) + "\n", encoding="utf-8")
    assert [r.id for r in load_split(p)] == ["s:00000", "s:00001"]


def test_directory_plus_split_name_finds_json_or_jsonl(tmp_path):
    """`load_split(DIR, split)` resolves DIR/<split>.json and DIR/<split>.jsonl."""
    _jsonl(tmp_path / "forget01.json", ROWS)
    _jsonl(tmp_path / "retain.jsonl", ROWS[:1])
    assert len(load_split(tmp_path, "forget01")) == 2
    assert len(load_split(str(tmp_path), "retain")) == 1
    assert load_split(tmp_path, "forget01").name == "forget01"


def test_ids_are_stable_split_colon_row(tmp_path):
    """Ids are `<split>:<row, 5 digits>` and identical across two loads."""
    _jsonl(tmp_path / "forget01.json", ROWS)
    first = [r.id for r in load_split(tmp_path, "forget01")]
    assert first == ["forget01:00000", "forget01:00001"]
    assert [r.id for r in load_split(tmp_path, "forget01")] == first
    assert [r.id for r in load_file(tmp_path / "forget01.json")] == first


def test_explicit_id_field_is_kept(tmp_path):
    """A record's own `id` field wins over the positional id."""
    split = load_split(_jsonl(tmp_path / "s.jsonl", [{**ROWS[0], "id": "person7:q3"}]))
    assert split.records[0].id == "person7:q3"


def test_single_perturbed_string_becomes_one_tuple_item(tmp_path):
    """`perturbed_answer` given as one string is read as a one-item tuple."""
    split = load_split(_jsonl(tmp_path / "s.jsonl", [{**ROWS[0], "perturbed_answer": "Isaac Asimov."}]))
    assert split.records[0].perturbed_answers == ("Isaac Asimov.",)


def test_digest_depends_on_content(tmp_path):
    """The split digest is the same for the same content and changes when an answer changes."""
    a = load_split(_jsonl(tmp_path / "a.jsonl", ROWS))
    b = load_split(_jsonl(tmp_path / "b.jsonl", ROWS))
    changed = load_split(_jsonl(tmp_path / "c.jsonl", [ROWS[0], {**ROWS[1], "answer": "In Leeds."}]))
    assert a.digest == Split("x", a.records).digest
    assert a.digest != changed.digest
    assert b.records[0].id != a.records[0].id  # ids differ (file stems), so digests differ too
    assert a.digest != b.digest


# ---------------------------------------------------------------------------------------------- errors


def test_malformed_json_line_names_file_and_line(tmp_path):
    """A broken third line is reported with the file name and `line 3`."""
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1]) + "\n{\"question\": \"q\", \n", encoding="utf-8")
    with pytest.raises(DataError, match="line 3") as e:
        load_split(p)
    assert "bad.jsonl" in str(e.value)
    assert "malformed JSON" in str(e.value)


def test_malformed_json_array_names_file_and_line(tmp_path):
    """A syntax error inside a multi-line JSON array names the line it is on."""
    p = tmp_path / "arr.json"
    p.write_text('[{"question": "q", "answer": "a"},\n{"question": "q2" "answer": "b"}]', encoding="utf-8")
    with pytest.raises(DataError, match=r"arr\.json line 2: malformed JSON"):
        load_split(p)


def test_missing_field_names_field_and_fields_seen(tmp_path):
    """A record without `answer` is reported with the line, the field and the fields it does have."""
    p = _jsonl(tmp_path / "forget.jsonl", [ROWS[0], {"question": "q", "text": "t"}])
    with pytest.raises(DataError) as e:
        load_split(p)
    msg = str(e.value)
    assert "forget.jsonl line 2" in msg
    assert "missing field 'answer'" in msg
    assert "question, text" in msg


def test_missing_field_in_array_names_item(tmp_path):
    """In a JSON array the offending record is named by its item index."""
    p = _array(tmp_path / "holdout.json", [ROWS[0], {"question": "q2"}])
    with pytest.raises(DataError, match=r"holdout\.json item 1: missing field 'answer' \(fields: question\)"):
        load_split(p)


def test_wrong_field_type_names_field_and_type(tmp_path):
    """A non-string answer is reported with the field name and the type received."""
    p = _jsonl(tmp_path / "s.jsonl", [{"question": "q", "answer": 42}])
    with pytest.raises(DataError, match=r"s\.jsonl line 1: field 'answer' must be a string, got int"):
        load_split(p)


def test_perturbed_answers_must_be_strings(tmp_path):
    """A perturbed-answer list holding a number is an error naming the field."""
    p = _jsonl(tmp_path / "s.jsonl", [{**ROWS[0], "perturbed_answer": ["ok", 3]}])
    with pytest.raises(DataError, match=r"line 1: field 'perturbed_answer'"):
        load_split(p)


def test_non_object_record_is_an_error(tmp_path):
    """A JSON line that is not an object (here a list) is refused, naming what was received."""
    p = tmp_path / "s.jsonl"
    p.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(DataError, match="expected a JSON object"):
        load_split(p)


def test_wrong_type_of_optional_field_is_an_error(tmp_path):
    """A non-string `paraphrased_question` is refused at load time, naming the field."""
    p = _jsonl(tmp_path / "s.jsonl", [{**ROWS[0], "paraphrased_question": 5}])
    with pytest.raises(DataError, match="paraphrased_question"):
        load_split(p)


@pytest.mark.parametrize("content", ["", "\n  \n", "[]"])
def test_empty_split_is_an_error(tmp_path, content):
    """An empty file (no lines, blank lines, or `[]`) is refused as an empty split naming the file."""
    p = tmp_path / "empty.json"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="empty") as e:
        load_split(p)
    assert "empty.json" in str(e.value)


def test_empty_split_in_directory_names_dir_and_split(tmp_path):
    """An empty split found in a directory names the directory and the split."""
    (tmp_path / "forget01.json").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=r"forget01: the split is empty"):
        load_split(tmp_path, "forget01")


def test_missing_file_is_an_error(tmp_path):
    """A path that does not exist is refused with the path in the message."""
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match="no such file") as e:
        load_split(missing)
    assert str(missing) in str(e.value)
    with pytest.raises(DataError, match="no such file"):
        load_file(missing)


def test_missing_directory_with_split_is_an_error(tmp_path):
    """A missing directory (absolute path) plus a split name is refused, naming the path."""
    missing = tmp_path / "no_dir"
    with pytest.raises(DataError, match="no such file or directory") as e:
        load_split(missing, "forget01")
    assert str(missing) in str(e.value)


def test_missing_relative_directory_says_it_does_not_exist(tmp_path, monkeypatch):
    """A missing relative directory `data/tofu` with a split is reported as missing locally, not only as a hub id."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="no such"):
        load_split("data/tofu", "forget01")


def test_directory_without_split_lists_files_found(tmp_path):
    """A directory lacking the split says which names it looked for and which files it found."""
    _jsonl(tmp_path / "forget01.json", ROWS)
    _jsonl(tmp_path / "retain90.json", ROWS)
    with pytest.raises(DataError) as e:
        load_split(tmp_path, "holdout01")
    msg = str(e.value)
    assert "holdout01.json" in msg and "holdout01.jsonl" in msg
    assert "found: forget01.json, retain90.json" in msg


def test_directory_without_split_name_is_an_error(tmp_path):
    """A directory given without a split name asks for the split."""
    _jsonl(tmp_path / "forget01.json", ROWS)
    with pytest.raises(DataError, match="split name"):
        load_split(tmp_path)


def test_load_file_refuses_a_directory(tmp_path):
    """`load_file` on a directory says to name a file inside it."""
    with pytest.raises(DataError, match="is a directory"):
        load_file(tmp_path)


def test_non_utf8_file_is_an_error(tmp_path):
    """A file that is not UTF-8 is refused with the byte offset."""
    p = tmp_path / "latin1.jsonl"
    p.write_bytes('{"question": "Où?", "answer": "Ici"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_split(p)


def test_hub_id_refused_offline(tmp_path, monkeypatch):
    """With HF_HUB_OFFLINE=1 a hub id is refused without touching the network, saying what to do instead."""
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda *a, **k: pytest.fail("hf_hub_download called while offline"))
    with pytest.raises(DataError) as e:
        load_split("locuslab/TOFU", "forget01")
    msg = str(e.value)
    assert "locuslab/TOFU" in msg
    assert "HF_HUB_OFFLINE=1" in msg
    assert "directory" in msg


def test_hub_id_refused_when_hub_not_allowed(tmp_path, monkeypatch):
    """`allow_hub=False` treats a hub-looking id as a missing path."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="no such file or directory"):
        load_split("locuslab/TOFU", "forget01", allow_hub=False)


# ---------------------------------------------------------------------------------------------- helpers


def test_overlap_count_matches_question_answer_pairs():
    """Only items whose (question, answer) pair, ignoring surrounding spaces, is in `b` count."""
    a = [QA("a0", "Q1", "A1"), QA("a1", " Q2 ", "A2\n"), QA("a2", "Q3", "A3"), QA("a3", "Q1", "other")]
    b = [QA("b0", "Q1", "A1"), QA("b1", "Q2", "A2"), QA("b2", "Q3", "different")]
    assert overlap_count(a, b) == 2
    assert overlap_count(a, []) == 0
    assert overlap_count([], b) == 0


def test_write_records_round_trip(tmp_path):
    """Records written with `write_records` load back equal, every optional field included."""
    recs = [
        QA("s:00000", "Who is Zoë?", "A writer — née Müller.", paraphrased_answer="A novelist.",
           perturbed_answers=("A baker.", "A pilot."), paraphrased_question="Tell me about Zoë.",
           subject="Zoë Müller", group="author001"),
        QA("s:00001", "Plain question?", "Plain answer."),
    ]
    p = tmp_path / "out.jsonl"
    write_records(p, recs)
    back = load_file(p)
    assert back == recs
    assert Split("s", tuple(back)).digest == Split("s", tuple(recs)).digest
    assert "perturbed_answer" not in p.read_text(encoding="utf-8").splitlines()[1]


# ---------------------------------------------------------------------------------------------- real TOFU


def test_tofu_forget01_perturbed_has_five_perturbed_answers(tofu_dir):
    """forget01_perturbed.json: 40 records, each with 5 perturbed and one paraphrased answer."""
    split = load_split(tofu_dir, "forget01_perturbed")
    assert len(split) == 40
    assert split.has_perturbed()
    assert all(len(r.perturbed_answers) == 5 for r in split)
    assert all(r.paraphrased_answer for r in split)
    assert split.records[0].id == "forget01_perturbed:00000"


def test_tofu_holdout01_json_array_loads_40(tofu_dir):
    """holdout01.json is a JSON array (not JSON lines) and loads 40 records."""
    assert (tofu_dir / "holdout01.json").read_text(encoding="utf-8").lstrip().startswith("[")
    split = load_split(tofu_dir, "holdout01")
    assert len(split) == 40
    assert split.records[-1].id == "holdout01:00039"


def test_tofu_full_loads_4000(tofu_dir):
    """full.json holds 200 authors x 20 questions = 4000 records with unique ids."""
    split = load_split(tofu_dir / "full.json")
    assert len(split) == 4000
    assert len({r.id for r in split}) == 4000
