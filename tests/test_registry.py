"""Tests for obliviate.registry: ordered name -> component mapping that answers typos with "did you mean"."""

from __future__ import annotations

import pytest

from obliviate.errors import RegistryError
from obliviate.registry import Registry


@pytest.fixture()
def methods() -> Registry:
    """A registry with three method names."""
    reg: Registry = Registry("method")
    for name in ("grad_ascent", "npo", "simnpo"):
        reg.add(name, name.upper())
    return reg


def test_register_decorator_returns_object_and_stores_it():
    """The decorator registers the object under the name and returns it unchanged."""
    reg: Registry = Registry("metric")

    @reg.register("rouge")
    def rouge():
        return 1

    assert reg.get("rouge") is rouge
    assert rouge() == 1
    assert "rouge" in reg and "bleu" not in reg
    assert len(reg) == 1


def test_names_keep_registration_order(methods):
    """`names()` and `items()` follow registration order."""
    assert methods.names() == ["grad_ascent", "npo", "simnpo"]
    assert list(methods.items()) == [("grad_ascent", "GRAD_ASCENT"), ("npo", "NPO"), ("simnpo", "SIMNPO")]


def test_typo_gets_did_you_mean(methods):
    """A near miss suggests the close name, naming the registry kind."""
    with pytest.raises(RegistryError, match=r"unknown method 'simnp'; did you mean 'simnpo'"):
        methods.get("simnp")


def test_unknown_name_lists_known_names(methods):
    """An unknown name lists every known name, sorted, even without a close match."""
    with pytest.raises(RegistryError) as e:
        methods.get("zzzzzz")
    msg = str(e.value)
    assert "did you mean" not in msg
    assert "known: grad_ascent, npo, simnpo" in msg


def test_double_registration_is_refused(methods):
    """Registering a taken name raises and keeps the first object."""
    with pytest.raises(ValueError, match="'npo' is registered twice"):
        methods.add("npo", "OTHER")
    assert methods.get("npo") == "NPO"
