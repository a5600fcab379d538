"""Search spaces: every registered method's declared space resolves against its config (the contract), the YAML
space file's kinds, unknown keys with "did you mean", keys fixed on the command line, relative ranges, `when`."""

from __future__ import annotations

import pytest

from obliviate.bench.presets import preset
from obliviate.errors import ConfigError
from obliviate.methods import METHODS
from obliviate.methods.base import Space
from obliviate.runs.space import config_keys, load_space, nest, resolve_space, start_params


@pytest.mark.parametrize("name", [n for n in METHODS.names() if METHODS.get(n).cls.search_space])
def test_every_declared_space_resolves_at_both_scales(name):
    """At the papers' defaults and at the tiny presets: every key exists, every range end makes a valid config,
    and the starting config lies inside (so a sweep starts by running it)."""
    info = METHODS.get(name)
    for start in ({}, preset(name, "tofu-mini")):
        space, start_over, _ = resolve_space(info, "default", start, {})
        assert space and set(space) <= set(config_keys(info.config_cls))
        assert start_params(space, info.make_config(start_over)) is not None, (name, start)


def test_gradient_methods_inherit_lr_and_epochs_relative_to_the_start():
    info = METHODS.get("npo")
    space, _, _ = resolve_space(info, "default", {"lr": 1e-4, "epochs": 10}, {})
    assert space["lr"] == Space.log(1e-5, 1e-3) and space["epochs"] == Space.int(5, 15)
    assert space["beta"] == Space.log(0.02, 1.0)


def test_when_leaves_out_settings_that_do_not_apply():
    """One class serves ga (no retain term) and graddiff: only graddiff searches the retain weight."""
    ga, _, notes = resolve_space(METHODS.get("ga"), "default", {}, {})
    gd, _, _ = resolve_space(METHODS.get("graddiff"), "default", {}, {})
    assert "retain_weight" not in ga and "retain_weight" in gd
    assert any("retain_weight does not apply" in n for n in notes)


def test_keys_fixed_on_the_command_line_are_not_searched():
    space, start, notes = resolve_space(METHODS.get("npo"), "default", {"lr": 1e-4}, {"epochs": 1})
    assert "epochs" not in space and start["epochs"] == 1
    assert "epochs is fixed on the command line (1): not searched" in notes


def test_space_file_kinds_nesting_and_fixed_values(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text("lr: {log: [1e-5, 1e-3]}\nepochs: {int: [2, 4]}\nretain: {choice: [gd, kl]}\n"
                 "beta: {uniform: [0.5, 2], relative: true}\nbatch_size: 4\nlora: {r: {int: [4, 16]}}\n")
    spaces, fixed = load_space(f)
    assert spaces["lr"] == Space.log(1e-5, 1e-3) and spaces["retain"] == Space.choice("gd", "kl")
    assert spaces["lora.r"] == Space.int(4, 16) and fixed == {"batch_size": 4}
    space, start, _ = resolve_space(METHODS.get("npo"), f, {}, {})
    assert space["beta"] == Space.uniform(0.05, 0.2)  # relative to NPO's β = 0.1
    assert start == {"batch_size": 4}
    assert nest({"lora.r": 8, "lr": 1e-4}) == {"lora": {"r": 8}, "lr": 1e-4}


def test_unknown_key_is_an_error_with_did_you_mean(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text("lrr: {log: [1e-5, 1e-3]}\nbeta: {log: [0.05, 0.5]}\n")
    with pytest.raises(ConfigError, match=r"has no key 'lrr' \(did you mean 'lr'"):
        resolve_space(METHODS.get("npo"), f, {}, {})


@pytest.mark.parametrize(("text", "needle"), [
    ("lr: {log: [0, 1e-3]}", "needs low > 0"),
    ("lr: {log: [1e-3, 1e-5]}", "needs low <= high"),
    ("lr: {loguniform: [1e-5, 1e-3]}", "has no key 'lr.loguniform'"),
    ("lr: {log: [1e-5]}", "log needs [low, high]"),
    ("lr: {log: [1e-5, 1e-3], uniform: [1, 2]}", "exactly one of"),
    ("epochs: {int: [0, 3]}", "epochs = 0 (a range end) is not a valid setting"),
    ("retain: {choice: [gd, nope]}", "retain = 'nope' (a range end) is not a valid setting"),
])
def test_bad_ranges_fail_before_any_trial(tmp_path, text, needle):
    f = tmp_path / "space.yaml"
    f.write_text(text + "\n")
    with pytest.raises(ConfigError) as e:
        resolve_space(METHODS.get("npo"), f, {}, {})
    assert needle in str(e.value)


def test_a_method_without_a_declared_space_needs_a_file():
    with pytest.raises(ConfigError, match="nothing to search for method 'unierase'"):
        resolve_space(METHODS.get("unierase"), "default", {}, {})


def test_a_missing_space_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        resolve_space(METHODS.get("npo"), tmp_path / "nope.yaml", {}, {})
