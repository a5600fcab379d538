"""Preset files: what `sweep --export-preset` writes and `bench --presets FILE` reads (method -> config overrides,
over bench/presets.py's)."""

from __future__ import annotations

import pytest

from obliviate.bench.presets import preset
from obliviate.errors import ConfigError, RegistryError
from obliviate.runs.bench import _warn_retain_mismatch, method_config
from obliviate.runs.sweep import preset_retains, read_presets, write_preset


def test_bench_applies_the_file_over_the_scale_preset_and_the_command_line_over_both():
    file = {"npo": {"lr": 3e-4, "beta": 0.2}}
    cfg = method_config("npo", "tofu-mini", False, file, {"npo": {"beta": 0.5}})
    assert cfg == {**preset("npo", "tofu-mini"), "lr": 3e-4, "beta": 0.5}
    assert method_config("npo", "tofu-mini", True, file, None) == {"lr": 3e-4, "beta": 0.2}  # --paper-defaults
    assert method_config("ga", "tofu-mini", False, file, None) == preset("ga", "tofu-mini")  # not in the file


def test_export_adds_a_method_and_keeps_the_others_with_their_provenance(tmp_path):
    f = tmp_path / "presets.yaml"
    write_preset(f, "npo", {"lr": 3e-4, "epochs": 8, "adam_betas": (0.9, 0.999)}, "study a: trial 3 of 40")
    write_preset(f, "graddiff", {"lr": 1e-4, "retain_weight": 2.0}, "study b: trial 7 of 40")
    write_preset(f, "npo", {"lr": 2e-4}, "study c: trial 9 of 40")
    assert read_presets(f) == {"npo": {"lr": 2e-4}, "graddiff": {"lr": 1e-4, "retain_weight": 2.0}}
    text = f.read_text()
    assert "# npo: study c: trial 9 of 40" in text and "# graddiff: study b: trial 7 of 40" in text
    assert "study a" not in text


def test_bench_warns_when_a_preset_was_found_on_another_retain_set(tmp_path):
    f, r = tmp_path / "presets.yaml", tmp_path / "r.jsonl"
    write_preset(f, "npo_kl", {"lr": 1.7e-3}, "study a: trial 0 of 1, forget_quality 0.4; trained on --retain "
                                              "general: give bench the same")
    write_preset(f, "npo_gd", {"lr": 1e-3}, f"study b: trial 2 of 9; trained on --retain {r}: give bench the same")
    write_preset(f, "npo", {"lr": 1e-4}, "study c: trial 1 of 3")
    assert preset_retains(f) == {"npo_kl": "general", "npo_gd": str(r)}
    said: list[str] = []
    _warn_retain_mismatch(f, ["npo_kl", "npo_gd", "npo"], None, said.append)
    assert len(said) == 2 and "npo_kl's preset was found with --retain general" in said[0]
    assert "trains on the scenario retain set" in said[0] and "give --retain general" in said[0]
    said.clear()
    _warn_retain_mismatch(f, ["npo_kl", "npo_gd", "npo"], "general", said.append)
    assert len(said) == 1 and "npo_gd's preset" in said[0]
    said.clear()
    _warn_retain_mismatch(f, ["npo_gd", "npo"], str(r.resolve()), said.append)  # the same file: nothing to say
    assert said == []


def test_a_preset_file_names_methods_and_valid_values(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("npoo: {lr: 1e-4}\n")
    with pytest.raises(RegistryError, match="did you mean 'npo'"):
        read_presets(f)
    f.write_text("npo: {lrr: 1e-4}\n")
    with pytest.raises(ConfigError, match="unknown key 'lrr'"):
        read_presets(f, ["npo"])
    read_presets(f, ["ga"])  # only the methods a benchmark runs are checked against their config
    f.write_text("npo: 3\n")
    with pytest.raises(ConfigError, match="not a preset file"):
        read_presets(f)


def test_the_shipped_preset_files_are_valid():
    """The preset files in presets/ (found by benchmarks/sweep.py) name registered methods and valid keys, and each
    records where it came from."""
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[2] / "presets").glob("*.yaml"))
    assert files
    for f in files:
        methods = read_presets(f)
        assert methods and all(f"# {m}: study " in f.read_text() for m in methods)
        read_presets(f, list(methods))
