"""The method protocol (methods/base.py): every registered method declares what the orchestration asks, the
registry finds a method from its module alone (discovery), and progress arrives as typed events."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import obliviate
from obliviate.config import Config
from obliviate.methods import METHODS, GradientMethod, Method, ProceduralMethod, ProgressEvent, register_method


@pytest.mark.parametrize("name", METHODS.names())
def test_every_registered_method_declares_the_protocol(name):
    """Class, config, views, retain need, required fields and the two result hooks are typed declarations that
    answer without running anything (the hooks return JSON-serialisable dicts)."""
    info = METHODS.get(name)
    assert issubclass(info.cls, Method)
    assert issubclass(info.cls, GradientMethod) != issubclass(info.cls, ProceduralMethod)
    assert info.is_procedural == issubclass(info.cls, ProceduralMethod)
    assert issubclass(info.config_cls, Config)
    method = info.create()
    assert isinstance(method.views, tuple) and all(isinstance(v, str) for v in method.views)
    assert isinstance(method.needs_retain, bool) and info.needs_retain() == method.needs_retain
    assert isinstance(info.required_fields, tuple) and isinstance(info.self_generated, bool)
    for result in (method.extras(), method.run_info()):
        assert isinstance(result, dict) and json.loads(json.dumps(result)) == result
    assert info.doc


def test_seed_methods_declare_what_they_need():
    """ICU needs retain data although "retain" is not one of its views (its analogous samples come from the
    retain pool); Reveal-and-Release works from names only; GA's views follow its config."""
    assert METHODS.get("icu").needs_retain()
    rr = METHODS.get("reveal_release")
    assert rr.self_generated and rr.required_fields == ("subject",) and not rr.needs_retain()
    ga = METHODS.get("ga")
    assert not ga.needs_retain() and ga.needs_retain(ga.make_config({"retain": "gd"}))
    assert METHODS.get("graddiff").needs_retain()


def test_register_method_rejects_a_class_outside_the_protocol():
    class NotAMethod:
        Config = Config

    with pytest.raises(TypeError, match="GradientMethod or ProceduralMethod"):
        register_method("not_a_method")(NotAMethod)

    class NoConfig(ProceduralMethod):
        def apply(self, ctx):
            return ctx.model

    with pytest.raises(TypeError, match="Config"):
        register_method("no_config")(NoConfig)
    assert "not_a_method" not in METHODS and "no_config" not in METHODS


def test_the_engine_reports_typed_step_and_epoch_events(tiny_model_dir, forget_records, tmp_path):
    """GA, 2 epochs of 2 steps: four "step" events numbered 1..4 of 4 with the lr and the loss terms, then (after
    each epoch's checkpoint) one "epoch" event with the epoch's means and NLL curves."""
    events: list[ProgressEvent] = []
    obliviate.unlearn(str(tiny_model_dir), "ga", forget=forget_records, out=tmp_path / "out",
                      config={"epochs": 2, "batch_size": 4, "lr": 1e-3, "warmup_epochs": 0}, progress=events.append)
    assert all(isinstance(e, ProgressEvent) for e in events)
    assert [(e.kind, e.epoch, e.step) for e in events] == [
        ("step", 1, 1), ("step", 1, 2), ("epoch", 1, 2), ("step", 2, 3), ("step", 2, 4), ("epoch", 2, 4)]
    steps = [e for e in events if e.kind == "step"]
    assert all(e.total == 4 and e.epochs == 2 and e.lr is not None for e in steps)
    assert all({"loss", "forget_nll"} <= set(e.terms) for e in steps)
    ends = [e for e in events if e.kind == "epoch"]
    assert all({"loss", "forget_nll_eval"} <= set(e.terms) for e in ends)


# ---------------------------------------------------------------------------------------------- discovery

NEW_METHOD = '''
"""A GA variant dropped into a copy of the package: it must be found with no other change."""
from obliviate.methods.base import GradientMethod, LossOutput, register_method
from obliviate.methods.common import logits_of, tok_denom
from obliviate.methods.ga import GAConfig
from obliviate.methods.losses import ga_loss


@register_method("{name}", doc="Gradient ascent, found by discovery.")
class Probe(GradientMethod):
    Config = GAConfig

    def loss(self, batch, model, ref) -> LossOutput:
        f = batch["forget"]
        return LossOutput(ga_loss(logits_of(model, f), f["labels"], tok_denom(f)))
'''


def test_a_new_method_module_is_discovered(tmp_path):
    """Copy the installed package, drop one module with one registered method into methods/ (and one into a new
    subpackage), and a fresh interpreter lists both: by the registry and by `obliviate ls methods`. The order is
    the modules' (alphabetical), then registration within a module, whatever the caller imported first — stable
    for leaderboards and test ids."""
    pkg = Path(obliviate.__file__).parent
    root = tmp_path / "site"
    shutil.copytree(pkg, root / "obliviate", ignore=shutil.ignore_patterns("__pycache__"))
    methods = root / "obliviate" / "methods"
    (methods / "ga_probe.py").write_text(textwrap.dedent(NEW_METHOD.format(name="ga_probe")))
    (methods / "extra").mkdir()
    (methods / "extra" / "__init__.py").write_text('"""Methods in a subpackage."""\n')
    (methods / "extra" / "deep_probe.py").write_text(textwrap.dedent(NEW_METHOD.format(name="deep_probe")))

    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
    code = ("import json, obliviate, obliviate.methods.unierase, obliviate.methods.rkld; "
            "from obliviate.methods import METHODS; print(json.dumps([obliviate.__file__, METHODS.names()]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    where, names = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(where).parent == root / "obliviate"
    assert {"ga_probe", "deep_probe"} <= set(names)
    assert [n for n in names if not n.endswith("_probe")] == METHODS.names()
    assert names.index("deep_probe") < names.index("ga") and names.index("ga_probe") == names.index("ga_kl") + 1
    assert "ga_probe" not in METHODS  # the test process's own registry is untouched

    cli = subprocess.run([sys.executable, "-m", "obliviate", "ls", "methods"], env={**env, "COLUMNS": "200"},
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert "ga_probe" in cli.stdout and "found by discovery" in cli.stdout
