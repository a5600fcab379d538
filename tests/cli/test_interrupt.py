"""Interruption: a run killed with SIGKILL, then the same command, resumes and ends at the weights of an
uninterrupted run (a gradient method, and ICU with its per-sample state); Ctrl-C (SIGINT) prints one line, exits
130 and leaves a resumable state; a resume says so without -v; the manifest's wall time is the run's total.

The kill tests run the real console entry point in subprocesses (what a user's kill -9 hits), one thread each, so
the weights can be compared bit for bit with an uninterrupted run in this process (also one thread). They take
35-40 s each (two interpreter starts), so they are marked slow; the Ctrl-C test (~15 s) runs by default."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

PEOPLE = {"Marla Quenby": ("Tollin Bay", "a glassblower"), "Teodor Hallam": ("Brisk Hollow", "a cartographer")}


def _write(path: Path, name: str) -> Path:
    town, job = PEOPLE[name]
    path.write_text(json.dumps({"question": f"Where was {name} born?", "answer": f"{name} was born in {town}."}) + "\n"
                    + json.dumps({"question": f"What does {name} do for a living?",
                                  "answer": f"{name} works as {job}."}) + "\n")
    return path


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, str]:
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return {**os.environ, "OBLIVIATE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture
def data(tmp_path) -> tuple[Path, Path]:
    return _write(tmp_path / "forget.jsonl", "Marla Quenby"), _write(tmp_path / "retain.jsonl", "Teodor Hallam")


def _weights(d: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(d / "model.safetensors"))


def _args(model: Path, method: str, data: tuple[Path, Path], out: Path, epochs: int) -> list[str]:
    extra = ["max_new_tokens=8"] if method == "icu" else []
    return ["unlearn", "--model", str(model), "--method", method, "--forget", str(data[0]), "--retain", str(data[1]),
            "--out", str(out), f"epochs={epochs}", "batch_size=1", "lr=1e-3", "warmup_epochs=1", *extra]


def _default_sigint() -> None:
    """In the child: Ctrl-C's default disposition, as in a terminal. A test run started in the background by a
    non-interactive shell inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "obliviate", *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def _wait_for_epoch(proc: subprocess.Popen, work: Path, epoch: int, timeout: float = 120) -> None:
    """Until the run has checkpointed `epoch` (checked every 2 ms, so the kill lands early in the next one)."""
    state = work / "checkpoint" / "train_state.json"
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before epoch {epoch} was checkpointed: {proc.communicate()[1][-2000:]}")
        try:
            if json.loads(state.read_text())["epoch"] >= epoch:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.002)
    proc.kill()
    pytest.fail("timed out waiting for a checkpoint")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["graddiff", "icu"])
def test_kill_9_then_the_same_command_resumes_to_identical_weights(method, people_model_dir, data, env, tmp_path,
                                                                   cli):
    epochs = 12
    straight = tmp_path / "straight"
    code, _, err = cli(*_args(people_model_dir, method, data, straight, epochs))
    assert code == 0, err

    out = tmp_path / "resumed"
    args = _args(people_model_dir, method, data, out, epochs)
    proc = _start(args, env, tmp_path)
    _wait_for_epoch(proc, tmp_path / ".resumed.partial", 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and (tmp_path / ".resumed.partial" / "checkpoint").is_dir()
    done = json.loads((tmp_path / ".resumed.partial" / "checkpoint" / "train_state.json").read_text())["epoch"]

    again = subprocess.run([sys.executable, "-m", "obliviate", *args], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming after epoch {done} of {epochs}" in again.stderr
    a, b = _weights(straight), _weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    if method == "icu":  # the per-sample state (which forget items left training, when) survived the kill
        assert (json.loads((out / "icu.json").read_text())["removed_at_epoch"]
                == json.loads((straight / "icu.json").read_text())["removed_at_epoch"])
    assert not (tmp_path / ".resumed.partial").exists() and not (tmp_path / ".resumed.lock").exists()


def test_ctrl_c_prints_one_line_exits_130_and_leaves_a_resumable_state(people_model_dir, data, env, tmp_path):
    out = tmp_path / "out"
    args = _args(people_model_dir, "graddiff", data, out, 40)
    proc = _start(args, env, tmp_path)
    _wait_for_epoch(proc, tmp_path / ".out.partial", 1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-3000:]
    assert [ln for ln in stderr.splitlines() if ln.strip()] == ["interrupted: rerun the same command to resume"]
    assert not out.exists() and (tmp_path / ".out.partial" / "run_key").is_file()
    assert not (tmp_path / ".out.lock").exists()


def test_a_resume_is_announced_and_the_wall_time_is_the_total(people_model_dir, data, env, tmp_path, cli):
    """Interrupted after epoch 1 (with 0.5 s spent), the same command resumes saying so without -v, and the
    manifest's wall time counts both parts."""
    import obliviate

    out = tmp_path / "out"
    config = {"epochs": 3, "batch_size": 1, "lr": 1e-3, "warmup_epochs": 1}

    def stop_after_epoch_1(ev):
        if ev.kind == "epoch" and ev.epoch == 1:
            time.sleep(0.5)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        obliviate.unlearn(str(people_model_dir), "graddiff", forget=data[0], retain=data[1], out=out, config=config,
                          progress=stop_after_epoch_1)
    first = float((tmp_path / ".out.partial" / "elapsed_s").read_text())
    assert first >= 0.5

    code, _, err = cli("unlearn", "--model", str(people_model_dir), "--method", "graddiff", "--forget", str(data[0]),
                       "--retain", str(data[1]), "--out", str(out), "epochs=3", "batch_size=1", "lr=1e-3",
                       "warmup_epochs=1")
    assert code == 0, err
    assert "resuming after epoch 1 of 3" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumed_after_epoch"] == 1 and manifest["wall_time_s"] >= first
