"""Multi-process runs with 2 CPU processes (gloo): sharded evaluation equals the single-process evaluation
within float tolerance, and unlearning runs under DDP unchanged; evaluation and training share one distributed
layer (obliviate.utils.dist over accelerate)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
        "model.vocab_size=400", "train.epochs=2", "scenario_options.n_people=10", "scenario_options.n_refusal=4"]
SCEN = ["scenario_options.n_people=10", "scenario_options.n_refusal=4"]


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "OBLIVIATE_CACHE": str(tmp / "cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def _free_port() -> int:
    """A port nothing listens on now: each launch its own, so one run's closing socket cannot block the next."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], tmp: Path, procs: int = 1) -> None:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_port",
                str(_free_port()), "-m", "obliviate"] if procs > 1 else [sys.executable, "-m", "obliviate"]
    res = subprocess.run(launcher + args, env=_env(tmp), capture_output=True, text=True, timeout=600)
    # the first failing rank's own lines come first (the launcher's summary at the end names only the exit code)
    ranks = [ln for ln in res.stderr.splitlines() if ln.startswith(("[rank", "error:", "Traceback")) or "Error" in ln]
    assert res.returncode == 0, "\n".join(ranks[:60]) + "\n...\n" + res.stderr[-2000:]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("dist")
    _run(["build", "synthetic", *TINY, "--out", str(tmp / "models")], tmp)
    return tmp


def test_single_process_is_a_no_op():
    """Without a launcher: one process of rank 0, the gather returns this process's object, the barrier returns."""
    from obliviate.utils import dist

    assert (dist.world_size(), dist.rank(), dist.is_main()) == (1, 0, True)
    assert dist.all_gather_objects({"a": [1, 2]}) == [{"a": [1, 2]}]
    assert dist.broadcast_object({"a": [1, 2]}) == {"a": [1, 2]}
    dist.barrier()
    assert dist.leave(0) is None and dist.leave(2) is None  # no process group: the process exits as Python does


@pytest.mark.slow
@pytest.mark.parametrize("code", [0, 3])
def test_a_rank_leaves_with_its_code_its_output_flushed(tmp_path, code):
    """A rank ends through dist.leave: the launcher sees each rank's exit code (0, or the command's own), and what
    a rank printed without a newline still reaches the output (the streams are flushed before the interpreter's
    teardown is skipped)."""
    script = tmp_path / "rank.py"
    script.write_text("import sys\nfrom obliviate.utils import dist\n\ndist.barrier()\n"
                      "print(f'rank {dist.rank()} done', end='')\ndist.leave(int(sys.argv[1]))\nsys.exit(99)\n")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(_free_port()), str(script), str(code)], env=_env(tmp_path), capture_output=True,
                         text=True, timeout=300)
    assert "rank 0 done" in res.stdout and "rank 1 done" in res.stdout
    if code == 0:
        assert res.returncode == 0, res.stderr[-2000:]
    else:
        assert res.returncode != 0 and f"exitcode  : {code} " in res.stderr and "exitcode  : 99" not in res.stderr


def test_the_written_fsdp_config_reads_back_as_accelerate_reads_it(monkeypatch):
    """The accelerate config `--fsdp` writes parses to FSDP2 with the settings in force: `mixed_precision: 'no'`
    stays a string (bare, YAML reads it as false and accelerate launch fails on it). FSDP is on only inside the
    run that asked for it."""
    import yaml

    from obliviate.utils import dist

    for k in dist.FSDP_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setenv("FSDP_ACTIVATION_CHECKPOINTING", "true")  # set before: kept, as the launcher's would be
    with dist.fsdp_env():
        assert dist.fsdp_requested()
        cfg = yaml.safe_load(dist.fsdp_config_yaml(2))
    assert not dist.fsdp_requested()  # the run's settings are gone after it, the launcher's stay
    assert os.environ["FSDP_ACTIVATION_CHECKPOINTING"] == "true"
    assert cfg["distributed_type"] == "FSDP" and cfg["num_processes"] == 2
    assert cfg["mixed_precision"] == "no" and cfg["use_cpu"] is True
    assert cfg["fsdp_config"]["fsdp_version"] == 2 and cfg["fsdp_config"]["fsdp_activation_checkpointing"] is True
    assert cfg["fsdp_config"]["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"


def _items(d: Path) -> dict:
    return json.loads((d / "eval.json").read_text())["items"]


@pytest.mark.slow  # subprocess runs under torch.distributed.run: make test-all, CI
def test_sharded_eval_equals_single_process(tiny_models):
    tmp = tiny_models
    common = ["eval", "--model", str(tmp / "models" / "target"), "--reference", str(tmp / "models" / "retain"),
              "--scenario", "synthetic", *SCEN, "max_new_tokens=12", "cache=false"]
    _run([*common, "--out", str(tmp / "ev1")], tmp, procs=1)
    _run([*common, "--out", str(tmp / "ev2")], tmp, procs=2)
    one, two = _items(tmp / "ev1"), _items(tmp / "ev2")
    assert one.keys() == two.keys()
    for split in one:
        assert one[split].keys() == two[split].keys()
        for item, vals in one[split].items():
            for k, v in vals.items():
                w = two[split][item][k]
                if isinstance(v, float) and not math.isnan(v):
                    assert w == pytest.approx(v, rel=1e-4, abs=1e-5), (split, item, k)
                elif not isinstance(v, float):
                    assert w == v, (split, item, k)
    s1 = json.loads((tmp / "ev1" / "summary.json").read_text())
    s2 = json.loads((tmp / "ev2" / "summary.json").read_text())
    for k, v in s1.items():
        if v is not None:
            assert s2[k] == pytest.approx(v, rel=1e-4, abs=1e-5), k


@pytest.mark.slow
def test_unlearning_runs_under_ddp(tiny_models):
    tmp = tiny_models
    _run(["unlearn", "--model", str(tmp / "models" / "target"), "--method", "graddiff", "--scenario", "synthetic",
          "--out", str(tmp / "ddp"), *SCEN, "lr=1e-3", "epochs=2", "batch_size=4"], tmp, procs=2)
    man = json.loads((tmp / "ddp" / "manifest.json").read_text())
    assert man["processes"] == 2
    hist = json.loads((tmp / "ddp" / "history.json").read_text())
    assert len(hist) == 2  # every epoch logged
    assert hist[-1]["forget_nll_eval"] > hist[0]["forget_nll_eval"]  # gradient ascent kept raising the forget NLL
    assert (tmp / "ddp" / "model.safetensors").is_file()
    assert not list(tmp.glob(".ddp.partial"))


@pytest.mark.slow
def test_two_processes_equal_one(tiny_models):
    """npo_gd in 2 processes is the 1-process run split: batch 3 with 2 micro-batches (shares of 1 + 1, and a
    1-item micro-batch that leaves rank 1 a zero-weight stand-in), global denominators, the loss scaled against
    DDP's average. The final weights agree within 1e-5 and the logged loss within 1e-5; each rank's seed is
    recorded."""
    import numpy as np
    from safetensors.numpy import load_file

    tmp = tiny_models
    common = ["unlearn", "--model", str(tmp / "models" / "target"), "--method", "npo_gd", "--scenario", "synthetic",
              *SCEN, "lr=1e-3", "epochs=2", "batch_size=3", "grad_accum=2", "warmup_epochs=0"]
    _run([*common, "--out", str(tmp / "one")], tmp, procs=1)
    _run([*common, "--out", str(tmp / "two")], tmp, procs=2)
    one, two = load_file(tmp / "one" / "model.safetensors"), load_file(tmp / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    moved = max(float(np.abs(one[k] - load_file(tmp / "models" / "target" / "model.safetensors")[k]).max())
                for k in one)
    assert moved > 1e-3  # the runs did train
    diff = max(float(np.abs(one[k] - two[k]).max()) for k in one)
    assert diff <= 1e-5, diff
    h1 = json.loads((tmp / "one" / "history.json").read_text())
    h2 = json.loads((tmp / "two" / "history.json").read_text())
    assert [r["loss"] for r in h2] == pytest.approx([r["loss"] for r in h1], abs=1e-5)
    m1 = json.loads((tmp / "one" / "manifest.json").read_text())
    m2 = json.loads((tmp / "two" / "manifest.json").read_text())
    assert m2["processes"] == 2 and m2["rank_seeds"] == [m1["rank_seeds"][0], m1["rank_seeds"][0] + 1]


STATEFUL = {  # a method that keeps its own state, or builds it in setup, and its run's options
    "icu": ["rouge_threshold=0.6", "embedder=tfidf"],  # the active set shrinks epoch by epoch (generation)
    "rkld": ["teacher=precomputed", "aug_epochs=2"],  # θ_aug trained and the teacher table computed in setup
    "rmu": [],  # the random control vector and c drawn in setup
    "altpo": [],  # the alternatives generated in setup
}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(STATEFUL))
def test_stateful_methods_two_processes_equal_one(tiny_models, method):
    """Methods with state of their own run under 2 processes as in one: the same final weights (within 1e-5) and
    the same state saved beside them (ICU's removed items, AltPO's alternatives)."""
    import numpy as np
    from safetensors.numpy import load_file

    tmp = tiny_models
    common = ["unlearn", "--model", str(tmp / "models" / "target"), "--method", method, "--scenario", "synthetic",
              *SCEN, "lr=1e-3", "epochs=2", "batch_size=4", "warmup_epochs=0", *STATEFUL[method]]
    _run([*common, "--out", str(tmp / f"{method}1")], tmp, procs=1)
    _run([*common, "--out", str(tmp / f"{method}2")], tmp, procs=2)
    one, two = (load_file(tmp / f"{method}{n}" / "model.safetensors") for n in (1, 2))
    diff = max(float(np.abs(one[k] - two[k]).max()) for k in one)
    assert diff <= 1e-5, diff
    for f in sorted((tmp / f"{method}1").glob(f"{method}*.json")):
        assert json.loads(f.read_text()) == json.loads((tmp / f"{method}2" / f.name).read_text()), f.name


# ---------------------------------------------------------------------------------------------- FSDP

NPO = ["--method", "npo_gd", "--scenario", "synthetic", *SCEN, "lr=1e-3", "batch_size=3", "grad_accum=2",
       "warmup_epochs=0"]


def _weights_diff(a: Path, b: Path) -> float:
    import numpy as np
    from safetensors.numpy import load_file

    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert x.keys() == y.keys()
    return max(float(np.abs(x[k] - y[k]).max()) for k in x)


@pytest.mark.slow
def test_fsdp_equals_one_process_and_writes_its_accelerate_config(tiny_models):
    """npo_gd with --fsdp in 2 processes (accelerate's FSDP2 on gloo: weights, gradients and AdamW state sharded)
    is the 1-process run within 1e-5, same effective batch and loss; the manifest says fsdp and records each
    rank's peak memory; the accelerate config written beside the model launches npo_kl (whose frozen reference
    is sharded too) through `accelerate launch --config_file`, again equal to one process. Gradients are clipped
    (to a norm below theirs) so the sharded norm is checked too."""
    tmp = tiny_models
    model = ["unlearn", "--model", str(tmp / "models" / "target")]
    clip = "grad_clip=0.01"  # below the gradients' norm: the sharded norm must be the global one
    _run([*model, *NPO, "epochs=2", clip, "--out", str(tmp / "f1")], tmp, procs=1)
    _run([*model, *NPO, "epochs=2", clip, "--fsdp", "--out", str(tmp / "f2")], tmp, procs=2)
    assert _weights_diff(tmp / "f1", tmp / "f2") <= 1e-5
    h1, h2 = (json.loads((tmp / d / "history.json").read_text()) for d in ("f1", "f2"))
    assert [r["loss"] for r in h2] == pytest.approx([r["loss"] for r in h1], abs=1e-5)
    man = json.loads((tmp / "f2" / "manifest.json").read_text())
    assert man["parallelism"] == "fsdp" and len(man["peak_memory_bytes_per_rank"]) == 2
    assert json.loads((tmp / "f1" / "manifest.json").read_text())["parallelism"] == "single"
    config = tmp / "f2" / "accelerate_fsdp.yaml"
    assert "distributed_type: FSDP" in config.read_text() and "fsdp_version: 2" in config.read_text()

    kl = ["--method", "npo_kl", "--scenario", "synthetic", *SCEN, "lr=1e-3", "epochs=2", "batch_size=4",
          "warmup_epochs=0"]
    _run([*model, *kl, "--out", str(tmp / "k1")], tmp, procs=1)
    res = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                          "--main_process_port", str(_free_port()), "-m", "obliviate", *model, *kl,
                          "--out", str(tmp / "k2")], env=_env(tmp), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((tmp / "k2" / "manifest.json").read_text())["parallelism"] == "fsdp"
    assert _weights_diff(tmp / "k1", tmp / "k2") <= 1e-5


@pytest.mark.slow
def test_fsdp_lora_with_activation_checkpointing_equals_one_process(tiny_models):
    """LoRA adapters under FSDP with activation checkpointing train (peft's input-grad pitfall handled) to the
    1-process weights within 1e-5, merged into one ordinary model. At the main test's lr (1e-3) the weights move by
    ~1e-2 and the two runs agree to ~3e-8; at lr 1e-2 (moved by 0.11) they were measured 1.5e-5 apart, the two
    reduction orders' fp32 rounding grown by AdamW's steps (their losses agree to 9e-7 relative), so that lr tests
    the rounding, not the sharding."""
    tmp = tiny_models
    args = ["unlearn", "--model", str(tmp / "models" / "target"), *NPO, "epochs=2", "lora.r=4"]
    _run([*args, "--out", str(tmp / "l1")], tmp, procs=1)
    _run([*args, "gradient_checkpointing=true", "--fsdp", "--out", str(tmp / "l2")], tmp, procs=2)
    assert _weights_diff(tmp / "models" / "target", tmp / "l2") > 1e-3
    assert _weights_diff(tmp / "l1", tmp / "l2") <= 1e-5


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
def test_fsdp_resumes_from_its_sharded_checkpoint(tiny_models):
    """Killed (SIGKILL to the launcher and both ranks) after a sharded checkpoint (one shard file per rank), the
    same command resumes from it and ends at the uninterrupted FSDP run's weights (within 1e-6)."""
    import signal
    import time

    tmp = tiny_models
    epochs = 6
    args = ["unlearn", "--model", str(tmp / "models" / "target"), *NPO, f"epochs={epochs}", "--fsdp"]
    _run([*args, "--out", str(tmp / "r_straight")], tmp, procs=2)
    def launcher() -> list[str]:  # a fresh port each time: the killed run's may still be held
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(_free_port()), "-m", "obliviate", *args, "--out", str(tmp / "r_killed")]

    proc = subprocess.Popen(launcher(), env=_env(tmp), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    state = tmp / ".r_killed.partial" / "checkpoint" / "train_state.json"
    t0 = time.time()
    while not state.is_file():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() - t0 < 300, "no checkpoint within 300 s"
        time.sleep(0.005)
    ranks = _children(proc.pid)  # torchrun starts each rank in a session of its own: killed one by one
    assert len(ranks) == 2
    for pid in [*ranks, proc.pid]:
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=60)
    done = json.loads(state.read_text())["epoch"]
    assert done < epochs and not (tmp / "r_killed").exists()
    shards = list((tmp / ".r_killed.partial" / "checkpoint").rglob("*.distcp"))
    assert len({s.name.split("_")[2] for s in shards if s.parent.name.startswith("pytorch_model_fsdp")}) == 2
    res = subprocess.run(launcher(), env=_env(tmp), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming after epoch {done} of {epochs}" in res.stderr
    assert _weights_diff(tmp / "r_straight", tmp / "r_killed") <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("method", ["icu", "ceu", "rkld"])
def test_fsdp_methods_with_state_or_own_denominators_equal_one_process(tiny_models, method):
    """Under FSDP, ICU's refinement generates with the sharded model every epoch, CE-U averages over its own
    token count (each answer's first token skipped) and RKLD builds its teacher in setup: each equals one process
    within 1e-5."""
    tmp = tiny_models
    common = ["unlearn", "--model", str(tmp / "models" / "target"), "--method", method, "--scenario", "synthetic",
              *SCEN, "lr=1e-3", "epochs=2", "batch_size=4", "warmup_epochs=0", *STATEFUL.get(method, [])]
    _run([*common, "--out", str(tmp / f"s_{method}1")], tmp, procs=1)
    _run([*common, "--fsdp", "--out", str(tmp / f"s_{method}2")], tmp, procs=2)
    assert _weights_diff(tmp / f"s_{method}1", tmp / f"s_{method}2") <= 1e-5


@pytest.mark.slow
def test_fsdp_is_on_only_for_the_run_that_asks(tiny_models):
    """Two runs in one pair of processes (the Python API under torchrun): the first with fsdp=True is sharded, the
    second without runs DDP, although accelerate's state is a process-wide singleton."""
    tmp = tiny_models
    script = tmp / "two_runs.py"
    script.write_text(
        "import json, sys\nimport obliviate\n"
        f"common = dict(scenario='synthetic', scenario_options={{'n_people': 10, 'n_refusal': 4}},\n"
        "              config={'lr': 1e-3, 'epochs': 1, 'batch_size': 4, 'warmup_epochs': 0})\n"
        f"a = obliviate.unlearn({str(tmp / 'models' / 'target')!r}, 'npo_gd', out={str(tmp / 'seq_a')!r}, fsdp=True,"
        " **common)\n"
        f"b = obliviate.unlearn({str(tmp / 'models' / 'target')!r}, 'npo_gd', out={str(tmp / 'seq_b')!r}, **common)\n")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(_free_port()), str(script)], env=_env(tmp), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    kinds = [json.loads((tmp / d / "manifest.json").read_text())["parallelism"] for d in ("seq_a", "seq_b")]
    assert kinds == ["fsdp", "ddp"]
    assert (tmp / "seq_a" / "accelerate_fsdp.yaml").is_file() and not (tmp / "seq_b" / "accelerate_fsdp.yaml").exists()


@pytest.mark.parametrize("args", [
    ["build", "synthetic", "--out", "{tmp}/models"],
    ["bench", "--scenario", "synthetic", "--methods", "ga", "--out", "{tmp}/bench"],
    ["attack", "--model", "{tmp}", "--attack", "quantize", "--scenario", "synthetic", "--out", "{tmp}/attack"],
    ["sweep", "--method", "ga", "--scenario", "synthetic", "--trials", "1", "--out", "{tmp}/sweep"],
], ids=lambda a: a[0])
def test_single_process_commands_refuse_a_launcher(args, cli, monkeypatch, tmp_path):
    """Under torchrun / accelerate launch (2 processes) the commands that run in one process say so in one line,
    exit 2, and write nothing (every rank would otherwise build or bench the same files)."""
    from obliviate.utils import dist

    monkeypatch.setattr(dist, "world_size", lambda: 2)
    work = tmp_path / "work"
    work.mkdir()
    code, _, err = cli(*[a.replace("{tmp}", str(work)) for a in args])
    assert code == 2, err
    assert "runs in one process, not across 2: run it without torchrun" in err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1
    assert list(work.iterdir()) == []
