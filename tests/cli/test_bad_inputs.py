"""Every bad input ends in one clear line: the bad-input table over every command.

Each row runs the `obliviate` entry point in-process and asserts the exit code (2 for a user error, 3 when there is
nothing to forget), exactly one line on stderr naming the problem and the fix (with file, line and field where a
file is at fault), no traceback (that is `--debug`'s), no partial output (no OUT, `.OUT.partial`, `.OUT.tmp-*` or
`.OUT.lock`) and the inputs untouched. Rows use the tiny model of conftest.py; the whole table runs in well under a
minute (model loads are in-process and every error is found before any real work)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

Q1, A1 = "Where was Marla Quenby born?", "Marla Quenby was born in Tollin Bay."
Q2, A2 = "What does Marla Quenby do for a living?", "Marla Quenby works as a glassblower."
Q3, A3 = "Where was Teodor Hallam born?", "Teodor Hallam was born in Brisk Hollow."
FAST_FORGET = ["max_rounds=1", "warm_start=false", "pulls_per_round=6", "keep_arms=6", "n_samples=1", "epochs=1"]


def _lines(*objs: dict) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


# name -> file content, written once per test into the `data` folder (an input: checked untouched)
FILES = {
    "forget.jsonl": _lines({"question": Q1, "answer": A1}, {"question": Q2, "answer": A2}),
    "retain.jsonl": _lines({"question": Q3, "answer": A3}),
    "same_as_forget.jsonl": _lines({"question": Q1, "answer": A1}, {"question": Q2, "answer": A2}),
    "same_id.jsonl": _lines({"id": "x1", "question": Q3, "answer": A3}),
    "forget_ids.jsonl": _lines({"id": "x1", "question": Q1, "answer": A1}),
    "bad_json.jsonl": _lines({"question": Q1, "answer": A1}) + '{"question": "Where", "answer": \n',
    "empty_answer.jsonl": _lines({"question": Q1, "answer": A1}, {"question": Q2, "answer": "  "}),
    "empty_question.jsonl": _lines({"question": "", "answer": A1}),
    "dup_ids.jsonl": _lines({"id": "a", "question": Q1, "answer": A1}, {"id": "b", "question": Q2, "answer": A2},
                            {"id": "a", "question": Q3, "answer": A3}),
    "no_answer.jsonl": _lines({"question": Q1, "answer": A1}, {"question": Q2, "text": A2}),
    "empty.jsonl": "\n\n",
    "not_a_dir.txt": "a file where a directory is expected\n",
    "ref_corrupt/eval.json": '{"format": 1, "items": {"forget": \n',
    "ref_noitems/eval.json": json.dumps({"format": 1, "scenario": {"name": "synthetic"}}) + "\n",
    "ou_not_an_eval.json": json.dumps({"model_type": "llama", "hidden_size": 32}) + "\n",
    "ou_no_truth_ratio/TOFU_EVAL.json": json.dumps({"mia_min_k": {"agg_value": 0.5, "auc": 0.5}}) + "\n",
    "ou_three_items.json": json.dumps({"forget_truth_ratio": {"agg_value": 0.9, "value_by_index": {
        str(i): {"score": 0.9} for i in range(3)}}}) + "\n",
    "ou_corrupt.json": '{"forget_truth_ratio": {"agg_value": \n',
    "ledger_corrupt/ledger.jsonl": _lines({"request_id": "r1", "time": "t", "method": "ga", "input_model": "a",
                                           "output_model": "b", "salt": "s", "forget_item_hashes": [],
                                           "target_hashes": []}) + "{not json\n",
    "ledger_foreign/ledger.jsonl": _lines({"hello": "world"}),
    "not_a_model/readme.txt": "no config.json here\n",
    "existing_out/keep.txt": "an earlier result\n",
    "space_typo.yaml": "lrr: {log: [1e-5, 1e-3]}\n",
    "presets_typo.yaml": "npoo: {lr: 1e-4}\n",
}


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    needles: tuple[str, ...]
    code: int = 2
    setup: str | None = None  # "lock": another run holds OUT
    env: tuple[tuple[str, str], ...] = ()  # environment variables set for the run


def case(*args: str, needles: str | tuple[str, ...], code: int = 2, setup: str | None = None,
         env: dict[str, str] | None = None) -> Case:
    return Case(args, (needles,) if isinstance(needles, str) else needles, code, setup, tuple((env or {}).items()))


M = ("--model", "{model}")
U = ("unlearn", *M, "--method", "ga", "--out", "{out}")
UF = (*U, "--forget", "{data}/forget.jsonl")
E = ("eval", *M, "--out", "{out}")
F = ("forget", *M, "--out", "{out}")
A = ("attack", *M, "--attack", "quantize")
SW = (*M, "--forget", "{data}/forget.jsonl", "--out", "{out}")
SWG = ("sweep", "--method", "ga", *SW)

CASES: dict[str, Case] = {
    # build
    "build/unknown-scenario": case("build", "synthetix", needles="did you mean 'synthetic'"),
    "build/unknown-key": case("build", "synthetic", "train.epochz=3", needles="unknown key 'train.epochz'"),
    "build/negative-lr": case("build", "synthetic", "train.lr=-1", needles="train.lr"),
    "build/lr-inf": case("build", "synthetic", "train.lr=inf", needles=("train.lr", "finite")),
    "build/lr-nan": case("build", "synthetic", "train.lr=nan", needles=("train.lr", "finite")),
    "build/out-read-only": case("build", "synthetic", "--out", "{readonly}/models", needles="cannot write"),
    "build/out-is-a-file": case("build", "synthetic", "--out", "{data}/not_a_dir.txt", needles="is a file"),
    "build/missing-tofu-data": case("build", "tofu-mini", "--data", "{tmp}/no-such-dir", needles="does not exist"),
    "build/override-without-value": case("build", "synthetic", "epochs", needles="key=value"),
    "build/freeze-every-layer": case("build", "synthetic", "train.freeze_layers=4",
                                     needles="freezes every one of the model's 4 decoder layers"),
    # eval
    "eval/missing-model": case("eval", "--model", "{tmp}/no-such-model", "--out", "{out}",
                               needles="no such model directory"),
    "eval/out-read-only": case("eval", *M, "--out", "{readonly}/ev", needles="cannot write"),
    "eval/out-is-a-file": case("eval", *M, "--out", "{data}/not_a_dir.txt", needles="is a file"),
    "eval/out-exists": case("eval", *M, "--out", "{data}/existing_out", needles="--overwrite"),
    "eval/out-inside-model": case("eval", *M, "--out", "{model}/eval", needles="inside the input model"),
    "eval/reference-corrupt": case(*E, "--reference", "{data}/ref_corrupt",
                                   needles=("ref_corrupt/eval.json line 2", "malformed JSON")),
    "eval/reference-without-items": case(*E, "--reference", "{data}/ref_noitems", needles="field 'items'"),
    "eval/reference-a-file": case(*E, "--reference", "{data}/not_a_dir.txt", needles="is a file"),
    "eval/reference-not-a-model": case(*E, "--reference", "{data}/not_a_model", needles="neither a model"),
    "eval/reference-json-not-an-eval": case(*E, "--reference", "{data}/ou_not_an_eval.json",
                                            needles=("not an evaluation file", "TOFU_EVAL.json")),
    "eval/reference-ou-without-truth-ratios": case(*E, "--reference", "{data}/ou_no_truth_ratio",
                                                   needles=("no per-item 'forget_truth_ratio'", "found: mia_min_k")),
    "eval/reference-ou-other-item-count": case(*E, "--reference", "{data}/ou_three_items.json",
                                               needles=("'forget_truth_ratio' has 3 items", "same forget split")),
    "eval/reference-ou-corrupt": case(*E, "--reference", "{data}/ou_corrupt.json",
                                      needles=("ou_corrupt.json line 2", "malformed JSON")),
    "eval/chat-template-missing": case(*E, "template=chat", needles="no chat template"),
    "eval/compat-unknown": case(*E, "--compat", "openunlearnin", needles=("compat", "'openunlearning'")),
    "eval/compat-with-separate-tokens": case(*E, "--compat", "openunlearning", "--tokenize", "separate",
                                             needles=("tokenises prompt and answer jointly", "tokenize=separate")),
    "eval/tokenize-unknown": case(*E, "tokenize=together", needles=("tokenize", "'separate' or 'joint'")),
    "eval/unknown-metric": case(*E, "metrics=[forget_qualty]", needles="did you mean 'forget_quality'"),
    "eval/forget-missing": case(*E, "--forget", "{data}/nope.jsonl", needles="no such file"),
    "eval/forget-malformed": case(*E, "--forget", "{data}/bad_json.jsonl",
                                  needles=("bad_json.jsonl line 2", "malformed JSON")),
    "eval/forget-empty-answer": case(*E, "--forget", "{data}/empty_answer.jsonl",
                                     needles=("empty_answer.jsonl line 2", "field 'answer' is empty")),
    "eval/forget-duplicate-ids": case(*E, "--forget", "{data}/dup_ids.jsonl",
                                      needles=("dup_ids.jsonl line 3", "duplicate id 'a'", "line 1")),
    "eval/retain-without-forget": case(*E, "--retain", "{data}/retain.jsonl", needles="--forget"),
    "eval/holdout-without-forget": case(*E, "--holdout", "{data}/retain.jsonl", needles="--forget"),
    "eval/max-new-tokens-0": case(*E, "max_new_tokens=0", needles="max_new_tokens"),
    "eval/mink-nan": case(*E, "mink_k=nan", needles=("mink_k", "finite")),
    "eval/unknown-scenario": case(*E, "--scenario", "synthetc", needles="did you mean 'synthetic'"),
    # unlearn
    "unlearn/unknown-method": case("unlearn", *M, "--method", "graddif", "--out", "{out}", "--forget",
                                   "{data}/forget.jsonl", needles="did you mean 'graddiff'"),
    "unlearn/lr-inf": case(*UF, "lr=inf", needles=("lr", "finite")),
    "unlearn/lr-nan": case(*UF, "lr=.nan", needles=("lr", "finite")),
    "unlearn/lr-diverges": case(*UF, "lr=1e30", "epochs=1", "batch_size=1",
                                needles=("diverged at epoch 1 step 2", "non-finite", "lower lr (now 1e+30)")),
    "unlearn/lr-overflows": case(*UF, "lr=1e39", "epochs=1", "batch_size=2",
                                 needles=("diverged at epoch 1 step 1", "lower lr (now 1e+39)")),
    "unlearn/forget-equals-retain": case(*UF, "--retain", "{data}/same_as_forget.jsonl",
                                         needles=("2 of 2 forget records are also in the retain set",
                                                  "--allow-overlap")),
    "unlearn/overlap-by-id": case(*U, "--forget", "{data}/forget_ids.jsonl", "--retain", "{data}/same_id.jsonl",
                                  needles=("id 'x1'", "--allow-overlap")),
    "unlearn/empty-question": case(*U, "--forget", "{data}/empty_question.jsonl",
                                   needles=("empty_question.jsonl line 1", "field 'question' is empty")),
    "unlearn/duplicate-ids": case(*U, "--forget", "{data}/dup_ids.jsonl", needles="duplicate id 'a'"),
    "unlearn/empty-file": case(*U, "--forget", "{data}/empty.jsonl", needles="empty"),
    "unlearn/missing-field": case(*U, "--forget", "{data}/no_answer.jsonl",
                                  needles=("no_answer.jsonl line 2", "missing field 'answer'")),
    "unlearn/out-read-only": case("unlearn", *M, "--method", "ga", "--forget", "{data}/forget.jsonl", "--out",
                                  "{readonly}/u", needles="cannot write"),
    "unlearn/out-is-a-file": case("unlearn", *M, "--method", "ga", "--forget", "{data}/forget.jsonl", "--out",
                                  "{data}/not_a_dir.txt", needles="is a file"),
    "unlearn/out-is-the-model": case("unlearn", *M, "--method", "ga", "--forget", "{data}/forget.jsonl", "--out",
                                     "{model}", needles="inside the input model"),
    "unlearn/out-inside-model": case("unlearn", *M, "--method", "ga", "--forget", "{data}/forget.jsonl", "--out",
                                     "{model}/unlearned", needles="inside the input model"),
    "unlearn/out-holds-model": case("unlearn", *M, "--method", "ga", "--forget", "{data}/forget.jsonl", "--out",
                                    "{model_parent}", "--overwrite", needles="--overwrite would delete it"),
    "unlearn/no-forget-set": case(*U, needles="give a forget set"),
    "unlearn/retain-needed": case("unlearn", *M, "--method", "graddiff", "--out", "{out}", "--forget",
                                  "{data}/forget.jsonl", needles="needs a retain set"),
    "unlearn/unknown-key": case(*UF, "epochz=1", needles="unknown key 'epochz'"),
    "unlearn/chat-template-missing": case(*UF, "template=chat", needles="no chat template"),
    "unlearn/grad-accum-too-large": case(*UF, "batch_size=2", "grad_accum=4", needles="grad_accum=4"),
    "unlearn/tokenize-unknown": case(*UF, "tokenize=together", needles=("tokenize", "'separate' or 'joint'")),
    "unlearn/reference-corrupt": case(*UF, "--eval", "--reference", "{data}/ref_corrupt", needles="malformed JSON"),
    "unlearn/eval-config-typo": case(*UF, "--eval", "eval.max_new_tokenz=3", needles="unknown key 'max_new_tokenz'"),
    "unlearn/out-exists": case("unlearn", *M, "--method", "ga", "--forget", "{data}/forget.jsonl", "--out",
                               "{data}/existing_out", needles="--overwrite"),
    "unlearn/out-locked": case(*UF, needles=("in use by another run", "pid"), setup="lock"),
    "unlearn/unknown-option": case(*UF, "--nope", needles=("No such option", "--help")),
    "unlearn/fsdp-procedural": case("unlearn", *M, "--method", "unierase", "--out", "{out}", "--forget",
                                    "{data}/forget.jsonl", "--fsdp", needles=("unierase", "drop --fsdp")),
    # forget
    "forget/empty-target": case(*F, "--target", "", needles="non-empty target"),
    "forget/duplicate-target": case(*F, "--target", "Marla Quenby", "--target", "marla quenby",
                                    needles="repeats an earlier target"),
    "forget/forget-data-method": case(*F, "--target", "Marla Quenby", "--method", "npo",
                                      needles="trains on the forget data itself"),
    "forget/eval-without-scenario": case(*F, "--target", "Marla Quenby", "--eval", needles="--scenario"),
    "forget/lr-inf": case(*F, "--target", "Marla Quenby", "lr=inf", needles=("lr", "finite")),
    "forget/retain-missing": case(*F, "--target", "Marla Quenby", "--retain", "{tmp}/no-such-retain.jsonl",
                                  needles="no-such-retain.jsonl"),
    "forget/out-read-only": case("forget", *M, "--target", "Marla Quenby", "--out", "{readonly}/f",
                                 needles="cannot write"),
    "forget/unknown-target": case(*F, "--target", "Zorbin Quillfeather", *FAST_FORGET, code=3,
                                  needles=("nothing revealed", "no model was written", "ledger.jsonl")),
    # attack
    "attack/unknown-attack": case("attack", *M, "--attack", "quantise", needles="did you mean 'quantize'"),
    "attack/out-read-only": case(*A, "--out", "{readonly}/a", needles="cannot write"),
    "attack/out-is-a-file": case(*A, "--out", "{data}/not_a_dir.txt", needles="is a file"),
    "attack/bits-zero": case(*A, "bits=[0]", needles="bits must lie in 2..16"),
    "attack/lr-inf": case("attack", *M, "--attack", "relearn", "lr=inf", needles=("lr", "finite")),
    "attack/out-inside-model": case(*A, "--out", "{model}/attack", needles="inside the input model"),
    "attack/missing-model": case("attack", "--model", "{tmp}/no-such-model", "--attack", "quantize",
                                 needles="no such model directory"),
    "attack/missing-control": case(*A, "--control", "{tmp}/no-such-retain-model", "--out", "{out}",
                                   needles=("no-such-retain-model", "no such model directory")),
    # bench
    "bench/out-is-a-file": case("bench", "--methods", "ga", "--out", "{data}/not_a_dir.txt", needles="is a file"),
    "bench/out-read-only": case("bench", "--methods", "ga", "--out", "{readonly}/b", needles="cannot write"),
    "bench/unknown-method": case("bench", "--methods", "npoo", "--out", "{out}", needles="did you mean 'npo'"),
    "bench/unknown-attack": case("bench", "--methods", "ga", "--attacks", "relarn", "--out", "{out}",
                                 needles="did you mean 'relearn'"),
    "bench/override-without-method": case("bench", "--methods", "ga", "--out", "{out}", "lr=1e-3",
                                          needles="must name a method"),
    "bench/negative-jobs": case("bench", "--methods", "ga", "--jobs", "-1", "--out", "{out}", needles="--jobs -1"),
    "bench/zero-seeds": case("bench", "--methods", "ga", "--seeds", "0", "--out", "{out}",
                             needles=("--seeds 0", "1 or more")),
    "bench/unknown-method-key": case("bench", "--methods", "ga", "--out", "{out}", "ga.lrr=1",
                                     needles="unknown key 'lrr'"),
    "bench/override-of-unrun-method": case("bench", "--methods", "ga", "--out", "{out}", "npo.lr=1e-3",
                                           needles="does not run"),
    "bench/retain-general-on-tiny": case("bench", "--methods", "ga", "--retain", "general", "--out", "{out}",
                                         needles=("--retain general", "pretrained --base")),
    "bench/retain-missing": case("bench", "--methods", "ga", "--retain", "{tmp}/no-such-retain.jsonl", "--out", "{out}",
                                 needles=("no-such-retain.jsonl", "no such file")),
    "bench/retain-empty": case("bench", "--methods", "ga", "--retain", "{data}/empty.jsonl", "--out", "{out}",
                               needles=("empty.jsonl", "holds no QA items")),
    "bench/unknown-build-key": case("bench", "--methods", "ga", "--out", "{out}", "build.train.epochz=3",
                                    needles="epochz"),
    # sweep
    "sweep/unknown-method": case("sweep", "--method", "npoo", *SW, needles="did you mean 'npo'"),
    "sweep/unknown-metric": case(*SWG, "--objective", "max forget_qualty", needles="did you mean 'forget_quality'"),
    "sweep/unknown-constraint-metric": case(*SWG, "--objective", "max forget_quality s.t. model_utilty >= 0.9*target",
                                            needles="did you mean 'model_utility'"),
    "sweep/objective-syntax": case(*SWG, "--objective", "max forget_quality s.t. model_utility > 0.9",
                                   needles=("got '>'", "use >= or <=", "grammar")),
    "sweep/unknown-space-key": case(*SWG, "--space", "{data}/space_typo.yaml",
                                    needles=("has no key 'lrr'", "did you mean 'lr'")),
    "sweep/space-missing": case(*SWG, "--space", "{data}/nope.yaml", needles="no such file"),
    "sweep/nothing-to-search": case("sweep", "--method", "unierase", *SW, needles="nothing to search"),
    "sweep/unknown-fixed-key": case(*SWG, "epochz=1", needles=("has no key 'epochz'", "did you mean 'epochs'")),
    "sweep/storage-unreachable": case(*SWG, "--storage", "sqlite:///{tmp}/no-such-dir/s.db",
                                      needles="cannot reach the storage"),
    "sweep/storage-not-a-url": case(*SWG, "--storage", "not a url", needles="not a database URL"),
    "sweep/storage-server-down": case(*SWG, "--storage", "postgresql://u:secret@127.0.0.1:1/db",
                                      needles="--storage postgresql://u:***@127.0.0.1:1/db"),
    "sweep/retain-missing": case(*SWG, "--retain", "{tmp}/no-such-retain.jsonl",
                                 needles=("no-such-retain.jsonl", "no such file")),
    "sweep/retain-empty": case(*SWG, "--retain", "{data}/empty.jsonl", needles=("empty.jsonl", "holds no QA items")),
    "sweep/retain-general-with-model": case(*SWG, "--retain", "general", needles=("--retain general",
                                                                                   "give a retain file")),
    "sweep/trials-zero": case(*SWG, "--trials", "0", needles="--trials 0"),
    "sweep/unknown-sampler": case(*SWG, "--sampler", "tpee", needles="did you mean 'tpe'"),
    "sweep/no-data": case("sweep", "--method", "ga", "--out", "{out}", needles="give the data"),
    "sweep/export-preset-is-a-dir": case(*SWG, "--export-preset", "{data}", needles="is a directory"),
    "bench/presets-unknown-method": case("bench", "--methods", "ga", "--presets", "{data}/presets_typo.yaml", "--out",
                                         "{out}", needles="did you mean 'npo'"),
    # ledger
    "ledger/corrupt": case("ledger", "{data}/ledger_corrupt",
                           needles=("ledger_corrupt/ledger.jsonl line 2", "malformed JSON")),
    "ledger/not-a-record": case("ledger", "{data}/ledger_foreign", needles="field 'request_id' missing"),
    "ledger/missing-dir": case("ledger", "{tmp}/no-such-dir", needles="no such directory"),
    # ls
    "ls/unknown-kind": case("ls", "methodz", needles="did you mean 'methods'"),
    # the environment, read before any command runs
    "env/threads-not-a-number": case(*U, "--scenario", "synthetic", env={"OBLIVIATE_THREADS": "two"},
                                     needles=("OBLIVIATE_THREADS='two'", "positive whole number", "unset it")),
    # cache
    "cache/purge-missing-model": case("cache", "purge", "--model", "{tmp}/no-such-model",
                                      needles="no such model directory"),
    "cache/purge-not-a-model": case("cache", "purge", "--model", "{data}/not_a_model",
                                    needles="not a model directory"),
    "cache/unknown-subcommand": case("cache", "prune", needles=("No such command", "--help")),
}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def model_copy(people_model_dir, tmp_path_factory) -> Path:
    """The tiny model, inside a folder of its own (`{model_parent}`)."""
    import shutil

    dest = tmp_path_factory.mktemp("bad-inputs") / "holder" / "model"
    shutil.copytree(people_model_dir, dest)
    return dest


@pytest.fixture
def readonly(tmp_path) -> Path:
    """A folder no file can be created in. As root, permission bits do not stop writes, so then a folder of sysfs
    (where creating entries is refused to everyone) stands in."""
    if os.geteuid() != 0:
        d = tmp_path / "readonly"
        d.mkdir()
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    d = Path("/sys/kernel")
    if not d.is_dir():
        pytest.skip("running as root and no sysfs: no read-only location to test with")
    yield d


def _digest(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*")) if d.exists() else []


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_ends_in_one_clear_line(name, cli, tmp_path, model_copy, readonly, monkeypatch):
    c = CASES[name]
    for var, value in c.env:
        monkeypatch.setenv(var, value)
    data = tmp_path / "data"
    for rel, content in FILES.items():
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_text(content, encoding="utf-8")
    runs = tmp_path / "runs"
    runs.mkdir()
    out = runs / "out"
    paths = {"model": model_copy, "model_parent": model_copy.parent, "data": data, "out": out, "tmp": tmp_path,
             "readonly": readonly}
    args = [a.format(**paths) for a in c.args]
    inputs_before = {**_digest(data), **_digest(model_copy.parent)}

    if c.setup == "lock":
        from obliviate.utils.io import output_lock

        with output_lock(out):  # another run holds OUT: this one must fail at once, naming it
            code, stdout, err = cli(*args)
        listing_expected: list[str] = []
    else:
        code, stdout, err = cli(*args)
        listing_expected = ["out", "out/ledger.jsonl"] if c.code == 3 else []

    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == c.code, f"exit {code}, expected {c.code}; stderr: {err}"
    assert "Traceback" not in err + stdout, err
    assert lines, "no message on stderr"
    if c.code == 2:
        assert len(lines) == 1, f"expected one line, got {len(lines)}: {err}"
    else:  # nothing to forget: the per-round progress lines, then one line saying so
        assert all(ln.startswith("round ") for ln in lines[:-1]), err
    message = lines[-1]
    for needle in c.needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert _listing(runs) == listing_expected, "partial output left behind"
    assert {**_digest(data), **_digest(model_copy.parent)} == inputs_before, "an input was modified"


def test_debug_shows_the_traceback_instead(cli, tmp_path, model_copy):
    """The same bad input with --debug raises (a traceback for whoever debugs), instead of the one line."""
    from obliviate.errors import ConfigError

    with pytest.raises(ConfigError, match="finite"):
        cli("--debug", "unlearn", "--model", str(model_copy), "--method", "ga", "--out", str(tmp_path / "o"),
            "--scenario", "synthetic", "lr=inf")


def test_the_table_spans_every_command():
    commands = {c.args[0] for c in CASES.values()}
    assert commands >= {"build", "eval", "unlearn", "forget", "attack", "bench", "ledger", "ls", "cache", "sweep"}
    assert len(CASES) >= 40
