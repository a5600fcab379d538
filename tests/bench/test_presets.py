"""The scale presets bench applies (bench/presets.py): shared settings for the gradient methods, per-method values,
per-scenario values on top; every preset is a valid config of its method, and without presets (`bench
--paper-defaults`) the seed methods run their papers' settings."""

from obliviate.bench.presets import BY_SCENARIO, SMOLLM2, TINY, has_scale, preset
from obliviate.methods import METHODS


def test_gradient_methods_get_the_shared_and_their_own_settings():
    p = preset("npo", "synthetic")
    assert p["batch_size"] == 8 and p["epochs"] == 10 and p["lr"] == 1e-4


def test_procedural_methods_get_only_their_own_values():
    """The gradient methods' shared batch/epoch settings would be meaningless (or wrong: R&R's epochs are per
    round's module) for UniErase and Reveal-and-Release."""
    assert preset("reveal_release", "synthetic") == {"lr": 1e-3, "retain_weight": 10.0}
    assert "batch_size" not in preset("unierase", "synthetic") and "epochs" not in preset("unierase", "synthetic")


def test_scenario_values_apply_only_to_their_scenario():
    assert preset("reveal_release", "tofu-mini") == {"lr": 2e-3, "retain_weight": 10.0, "max_rounds": 8}
    assert preset("reveal_release", "synthetic")["lr"] == 1e-3


def test_methods_without_a_preset_get_nothing():
    assert preset("no_such_method", "tofu-mini") == {}


def test_every_preset_is_a_valid_config_of_a_registered_method():
    for scenario in ("synthetic", "tofu-mini", *BY_SCENARIO):
        for name in TINY:
            METHODS.get(name).make_config(preset(name, scenario))  # raises ConfigError on a wrong key or value


def test_paper_defaults_are_the_papers():
    """What `bench --paper-defaults` runs (no preset): the seed methods' papers' settings, not the tiny ones."""
    ue = METHODS.get("unierase").make_config({})
    assert ue.token_schedule == [(5, 1e-3), (3, 1e-4)] and ue.token_negatives == 0
    assert (ue.edit.v_lr, ue.edit.clamp_norm_factor, ue.edit.l2) == (0.1, 0.75, 10.0)
    rk = METHODS.get("rkld").make_config({})
    assert (rk.lr, rk.batch_size, rk.epochs, rk.alpha, rk.aug_epochs) == (1e-5, 32, 10, 8.0, 10)
    icu = METHODS.get("icu").make_config({})
    assert (icu.lr, icu.batch_size, icu.alpha, icu.beta, icu.weight_decay) == (5e-6, 8, 0.5, 1.0, 0.0)
    rr = METHODS.get("reveal_release").make_config({})
    assert rr.lr == 2e-4 and rr.retain_weight == 1.0
    rmu = METHODS.get("rmu").make_config({})
    assert rmu.layer is None and rmu.lr == 5e-5  # None = the paper's layer 7 of 32, scaled to the depth
    for name in ("ga", "npo", "simnpo", "idkdpo"):
        cfg = METHODS.get(name).make_config({})
        assert (cfg.lr, cfg.batch_size, cfg.epochs) == (1e-5, 32, 10)  # OpenUnlearning's TOFU settings


def test_the_real_instrument_has_its_own_scale():
    """`bench --base smollm2-135m` starts from the SMOLLM2 scale: LoRA adapters on every linear module for the
    gradient methods, the tiny scale's learning rates; a base without a scale gets nothing (the papers' values)."""
    p = preset("npo_gd", "tofu-mini", "smollm2-135m")
    assert p["lora"]["r"] == 32 and p["lr"] == TINY["npo_gd"]["lr"] and p["epochs"] == 5
    assert "lora" not in preset("rmu", "tofu-mini", "smollm2-135m")  # RMU picks its own modules
    assert preset("reveal_release", "tofu-mini", "smollm2-135m") == {"lr": 1e-3, "retain_weight": 10.0}
    assert has_scale("smollm2-135m") and not has_scale("meta-llama/Llama-3.2-1B")
    assert preset("npo", "tofu-mini", "meta-llama/Llama-3.2-1B") == {}


def test_every_real_scale_preset_is_a_valid_config():
    for name in SMOLLM2:
        METHODS.get(name).make_config(preset(name, "tofu-mini", "smollm2-135m"))
