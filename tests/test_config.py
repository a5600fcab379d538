"""Tests for obliviate.config: dotted overrides parsed as YAML scalars, frozen configs, unknown keys rejected,
and one ConfigError that lists every problem at once."""

from __future__ import annotations

import pydantic
import pytest
from pydantic import Field

from obliviate.config import Config, build_config, deep_merge, load_yaml, override, parse_overrides
from obliviate.errors import ConfigError


class TrainCfg(Config):
    lr: float = 1e-3
    steps: int = 10


class RunCfg(Config):
    name: str = "run"
    beta: float = Field(0.1, gt=0)
    train: TrainCfg = TrainCfg()


# ---------------------------------------------------------------------------------------------- overrides


def test_overrides_dotted_keys_nest():
    """`a.b.c=1` becomes {"a": {"b": {"c": 1}}} and siblings merge under one parent."""
    assert parse_overrides(["a.b.c=1", "a.b.d=2", "x=3"]) == {"a": {"b": {"c": 1, "d": 2}}, "x": 3}


@pytest.mark.parametrize(("raw", "expected"), [
    ("true", True), ("false", False), ("8", 8), ("0.5", 0.5), ("null", None), ("a,b", "a,b"),
    ("hello", "hello"), ("'8'", "8"), ("[1, 2]", [1, 2]), ("", ""),
])
def test_override_values_are_yaml_scalars(raw, expected):
    """Values are parsed as YAML: booleans, ints, floats, null, lists; "a,b" stays a string."""
    value = parse_overrides([f"k={raw}"])["k"]
    assert value == expected
    assert type(value) is type(expected)


def test_override_scientific_notation_is_float():
    """`train.lr=1e-5` (the documented example) gives the float 1e-05."""
    value = parse_overrides(["train.lr=1e-5"])["train"]["lr"]
    assert isinstance(value, float) and value == 1e-5


def test_override_value_may_contain_equals():
    """Only the first '=' separates key from value."""
    assert parse_overrides(["prompt=a=b"]) == {"prompt": "a=b"}


def test_override_without_equals_is_an_error():
    """`novalue` is refused with the expected form shown."""
    with pytest.raises(ConfigError, match=r"'novalue' is not of the form key=value"):
        parse_overrides(["novalue"])


def test_override_with_empty_key_is_an_error():
    """`=x` is refused as an empty key."""
    with pytest.raises(ConfigError, match="empty key"):
        parse_overrides(["=x"])


def test_override_nested_under_a_scalar_is_an_error():
    """`a=1` then `a.b=2` conflict and the message names the key."""
    with pytest.raises(ConfigError, match="conflicts.*'a'"):
        parse_overrides(["a=1", "a.b=2"])


def test_deep_merge_keeps_untouched_nested_keys():
    """Merging {"train": {"lr": 1}} keeps train.steps and leaves the inputs unchanged."""
    base = {"train": {"lr": 0.1, "steps": 5}, "name": "x"}
    merged = deep_merge(base, {"train": {"lr": 1}})
    assert merged == {"train": {"lr": 1, "steps": 5}, "name": "x"}
    assert base["train"]["lr"] == 0.1


# ---------------------------------------------------------------------------------------------- build_config


def test_build_config_applies_values_and_defaults():
    """Given values are validated into the model; the rest keep their defaults."""
    cfg = build_config(RunCfg, {"train": {"steps": 3}})
    assert cfg.train.steps == 3
    assert cfg.train.lr == 1e-3
    assert cfg.beta == 0.1


def test_build_config_accepts_parsed_overrides():
    """Overrides from the command line build a config (strings coerced by the field type)."""
    cfg = build_config(RunCfg, parse_overrides(["train.lr=1e-5", "beta=0.5", "name=a,b"]))
    assert cfg.train.lr == pytest.approx(1e-5)
    assert cfg.beta == 0.5
    assert cfg.name == "a,b"


def test_unknown_key_lists_known_keys():
    """An unknown top-level key is named along with every known key."""
    with pytest.raises(ConfigError) as e:
        build_config(RunCfg, {"bogus": 1})
    msg = str(e.value)
    assert "unknown key 'bogus'" in msg
    assert "known: beta, name, train" in msg


def test_unknown_nested_key_lists_nested_known_keys():
    """A typo inside a nested section lists that section's keys."""
    with pytest.raises(ConfigError, match=r"unknown key 'train\.lrr' \(known: lr, steps\)"):
        build_config(RunCfg, {"train": {"lrr": 1}})


def test_all_problems_reported_at_once():
    """Two bad fields give one ConfigError naming both, with the values received."""
    with pytest.raises(ConfigError) as e:
        build_config(RunCfg, {"beta": -1, "train": {"steps": "abc"}, "extra": 0})
    msg = str(e.value)
    assert "beta" in msg and "-1" in msg
    assert "train.steps" in msg and "'abc'" in msg
    assert "unknown key 'extra'" in msg


def test_error_prefix_uses_where():
    """`where=` prefixes the message, otherwise the class name does."""
    with pytest.raises(ConfigError, match=r"^scenario 'x': "):
        build_config(RunCfg, {"beta": 0}, where="scenario 'x'")
    with pytest.raises(ConfigError, match=r"^RunCfg: "):
        build_config(RunCfg, {"beta": 0})


def test_configs_are_frozen():
    """Assigning to a field of a built config raises."""
    cfg = build_config(RunCfg, {})
    with pytest.raises(pydantic.ValidationError):
        cfg.beta = 2.0  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        cfg.train.lr = 1.0  # type: ignore[misc]


def test_override_returns_revalidated_copy():
    """`override` returns a new config with the change; the original is untouched."""
    cfg = build_config(RunCfg, {})
    new = override(cfg, {"train": {"lr": 0.5}})
    assert new.train.lr == 0.5 and new.train.steps == 10
    assert cfg.train.lr == 1e-3


def test_override_revalidates():
    """`override` rejects an invalid value and an unknown key like `build_config` does."""
    cfg = build_config(RunCfg, {})
    with pytest.raises(ConfigError, match="beta"):
        override(cfg, {"beta": 0})
    with pytest.raises(ConfigError, match=r"unknown key 'train\.zzz'"):
        override(cfg, {"train": {"zzz": 1}})


# ---------------------------------------------------------------------------------------------- YAML files


def test_load_yaml_reads_mapping(tmp_path):
    """A YAML mapping file loads as a dict; an empty file as {}."""
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ntrain:\n  steps: 4\n")
    assert load_yaml(p) == {"name": "x", "train": {"steps": 4}}
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml(tmp_path / "empty.yaml") == {}


@pytest.mark.parametrize(("content", "match"), [("- a\n- b\n", "mapping"), ("a: [1,\n", "invalid YAML")])
def test_load_yaml_errors(tmp_path, content, match):
    """A non-mapping or malformed YAML file is a ConfigError naming the file."""
    p = tmp_path / "c.yaml"
    p.write_text(content)
    with pytest.raises(ConfigError, match=match) as e:
        load_yaml(p)
    assert str(p) in str(e.value)


def test_load_yaml_missing_file(tmp_path):
    """A missing config file is a ConfigError, not a FileNotFoundError."""
    with pytest.raises(ConfigError, match="no such config file"):
        load_yaml(tmp_path / "nope.yaml")
