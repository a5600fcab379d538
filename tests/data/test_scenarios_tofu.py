"""Tests for the TOFU scenarios (`tofu`, `tofu-mini`) on the real TOFU files, and their option/data errors."""

from __future__ import annotations

import logging
import shutil

import pytest

from obliviate.data.records import load_split
from obliviate.data.refusals import common_subject, is_refusal
from obliviate.data.scenarios import get_scenario
from obliviate.errors import ConfigError, DataError, RegistryError

FORGET01_SUBJECTS = ("Basil Mahfouz Al-Kuwaiti", "Nikolai Abilov")


@pytest.fixture(scope="module")
def tofu_mini(tofu_dir):
    """The CPU-scale TOFU scenario built once from the real files."""
    return get_scenario("tofu-mini", data=str(tofu_dir))


def _qa_keys(split):
    return {(r.question, r.answer) for r in split}


def _non_refusal(split):
    return [r for r in split if r.group != "refusal"]


# ---------------------------------------------------------------------------------------------- tofu-mini


def test_mini_eval_split_sizes(tofu_mini):
    """forget 40 (with perturbed answers), retain 400, holdout 40, real_authors 100, world_facts 117."""
    s = tofu_mini
    assert s.name == "tofu-mini"
    assert len(s.forget) == 40
    assert s.forget.has_perturbed()
    assert all(len(r.perturbed_answers) == 5 and r.paraphrased_answer for r in s.forget)
    assert len(s.retain) == 400 and s.retain.has_perturbed()
    assert len(s.holdout) == 40
    assert sorted(s.utility) == ["real_authors", "world_facts"]
    assert len(s.utility["real_authors"]) == 100
    assert len(s.utility["world_facts"]) == 117
    assert set(s.eval_splits) == {"forget", "retain", "holdout", "real_authors", "world_facts"}


def test_mini_target_is_retain_train_plus_forget(tofu_mini, tofu_dir):
    """target_train minus retain_train is exactly the 40 forget01 question/answer pairs."""
    s = tofu_mini
    forget_qa = _qa_keys(load_split(tofu_dir, "forget01"))
    assert len(forget_qa) == 40
    assert len(s.target_train) == len(s.retain_train) + 40
    assert _qa_keys(s.target_train) - _qa_keys(s.retain_train) == forget_qa
    assert {r.question for r in s.target_train} - {r.question for r in s.retain_train} == \
        {r.question for r in s.forget}
    assert _qa_keys(s.retain_train) <= _qa_keys(s.target_train)


def test_mini_retain_train_holds_no_forget_data(tofu_mini):
    """No forget question and no forget answer appears anywhere in retain_train."""
    questions = {r.question.strip() for r in tofu_mini.retain_train}
    answers = {r.answer.strip() for r in tofu_mini.retain_train}
    assert not [r.id for r in tofu_mini.forget if r.question.strip() in questions]
    assert not [r.id for r in tofu_mini.forget if r.answer.strip() in answers]


def test_mini_no_overlap_warning(tofu_dir, caplog):
    """Building the scenario logs no forget/retain overlap warning on the real data."""
    with caplog.at_level(logging.WARNING, logger="obliviate.data.scenarios"):
        get_scenario("tofu-mini", data=str(tofu_dir))
    assert not [r for r in caplog.records if "also appear in the retain set" in r.getMessage()]


def test_mini_forget_subjects(tofu_mini):
    """The forget01 authors are found by name, in file order."""
    assert tofu_mini.forget_subjects == FORGET01_SUBJECTS
    assert {r.subject for r in tofu_mini.forget} == set(FORGET01_SUBJECTS)


def test_mini_retain_sets(tofu_mini):
    """retain_train holds retain_perturbed's 400 questions without eval-only fields; unlearn_retain is those 400."""
    s = tofu_mini
    retain_q = {r.question for r in s.retain}
    assert {r.question for r in s.unlearn_retain} == retain_q
    assert len(s.unlearn_retain) == 400
    train_retain = [r for r in s.retain_train if r.question in retain_q]
    assert len(train_retain) == 400
    assert all(not r.perturbed_answers and r.paraphrased_answer is None for r in train_retain)


def test_mini_refusals_are_refusals_about_untrained_authors(tofu_mini):
    """Refusal QA answers are refusals, and their questions are never trained with a real answer."""
    s = tofu_mini
    refusals = [r for r in s.target_train if r.group == "refusal"]
    assert refusals, "tofu-mini should train refusals about unseen authors"
    assert all(is_refusal(r.answer) for r in refusals)
    trained_questions = {r.question for r in _non_refusal(s.target_train)}
    assert not [r.id for r in refusals if r.question in trained_questions]
    assert not [r.id for r in _non_refusal(s.target_train) if is_refusal(r.answer)]
    assert [r.id for r in s.retain_train if r.group == "refusal"] == [r.id for r in refusals]


def test_mini_refusals_name_the_author_asked_about(tofu_mini, tofu_dir):
    """Each refusal names the author its question is about (or says "this author"), never a book or place."""
    full = load_split(tofu_dir, "full").records
    author_of = {r.question: i // 20 for i, r in enumerate(full)}
    names = {}
    wrong = []
    for r in (r for r in tofu_mini.target_train if r.group == "refusal"):
        a = author_of[r.question]
        if a not in names:
            names[a] = common_subject(q.question for q in full[a * 20:(a + 1) * 20])
        if r.subject not in (names[a], "this author"):
            wrong.append((r.subject, names[a]))
    assert wrong == []


def test_scenario_fingerprint_is_reproducible(tofu_mini, tofu_dir):
    """Building the scenario twice gives the same split digests."""
    again = get_scenario("tofu-mini", data=str(tofu_dir))
    assert again.fingerprint() == tofu_mini.fingerprint()


# ---------------------------------------------------------------------------------------------- tofu preset


def test_tofu_forget05_sizes(tofu_dir):
    """`tofu` with forget05: 200 forget items (10 authors) and a 3800-record retain part (retain95)."""
    s = get_scenario("tofu", data=str(tofu_dir), forget_split="forget05")
    assert s.name == "tofu"
    assert len(s.forget) == 200 and s.forget.has_perturbed()
    assert len(s.holdout) == 200
    assert len(s.unlearn_retain) == 3800
    assert _qa_keys(s.unlearn_retain) <= _qa_keys(s.retain_train)
    assert len(s.target_train) == len(s.retain_train) + 200
    assert _qa_keys(s.target_train) - _qa_keys(s.retain_train) == _qa_keys(load_split(tofu_dir, "forget05"))
    assert len(s.forget_subjects) == 10
    assert s.forget_subjects[-2:] == FORGET01_SUBJECTS


# ---------------------------------------------------------------------------------------------- errors


def test_unknown_scenario_suggests_close_name():
    """A typo in the scenario name is a RegistryError with "did you mean"."""
    with pytest.raises(RegistryError, match=r"did you mean 'tofu-mini'"):
        get_scenario("tofu-mni")


@pytest.mark.parametrize(("options", "field"), [
    ({"forget_split": "forget07"}, "forget_split"),
    ({"forget_splt": "forget01"}, "forget_splt"),
    ({"n_refusal": -1}, "n_refusal"),
])
def test_bad_option_is_config_error(tmp_path, options, field):
    """An invalid or unknown scenario option is a ConfigError naming the field and the scenario (before any I/O)."""
    with pytest.raises(ConfigError, match=field) as e:
        get_scenario("tofu", data=str(tmp_path / "unused"), **options)
    assert "scenario 'tofu'" in str(e.value)


def test_missing_data_dir_names_env_var(tmp_path):
    """`--data` pointing to a missing directory is a DataError naming the path and OBLIVIATE_TOFU_DIR."""
    missing = tmp_path / "no_tofu"
    with pytest.raises(DataError, match="OBLIVIATE_TOFU_DIR") as e:
        get_scenario("tofu-mini", data=str(missing))
    assert str(missing) in str(e.value)


def test_env_var_pointing_to_missing_dir(tmp_path, monkeypatch):
    """OBLIVIATE_TOFU_DIR set to a missing directory is reported the same way."""
    monkeypatch.setenv("OBLIVIATE_TOFU_DIR", str(tmp_path / "gone"))
    with pytest.raises(DataError, match="OBLIVIATE_TOFU_DIR"):
        get_scenario("tofu-mini")


def test_no_data_offline_asks_for_data(monkeypatch):
    """With no --data, no OBLIVIATE_TOFU_DIR and the hub offline, the error says how to supply the data."""
    monkeypatch.delenv("OBLIVIATE_TOFU_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="--data DIR or set OBLIVIATE_TOFU_DIR"):
        get_scenario("tofu")


def test_data_dir_without_retain_perturbed(tofu_dir, tmp_path):
    """A directory lacking retain_perturbed.json is a DataError naming the missing split."""
    for name in ("full.json", "forget01.json", "forget01_perturbed.json", "holdout01.json"):
        shutil.copy(tofu_dir / name, tmp_path / name)
    with pytest.raises(DataError, match="retain_perturbed") as e:
        get_scenario("tofu-mini", data=str(tmp_path))
    assert "forget01_perturbed.json" in str(e.value)  # lists what it did find


def test_data_dir_with_truncated_full(tofu_dir, tmp_path):
    """A full.json that is not 4000 records is refused with the count received."""
    lines = (tofu_dir / "full.json").read_text(encoding="utf-8").splitlines()[:100]
    (tmp_path / "full.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="expected 4000 records.*got 100"):
        get_scenario("tofu-mini", data=str(tmp_path))
