"""The tiny-model presets bench applies: shared settings, per-method values, per-scenario values on top."""

from obliviate.bench.presets import preset


def test_gradient_methods_get_the_shared_and_their_own_settings():
    p = preset("npo", "synthetic")
    assert p["batch_size"] == 8 and p["epochs"] == 10 and p["lr"] == 1e-4


def test_scenario_values_apply_only_to_their_scenario():
    assert preset("reveal_release", "synthetic") == {}
    assert preset("reveal_release", "tofu-mini") == {"max_rounds": 8, "lr": 2e-3}


def test_methods_without_a_preset_get_nothing():
    assert preset("no_such_method", "tofu-mini") == {}
