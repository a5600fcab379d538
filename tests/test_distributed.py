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
