"""Scale presets: the settings a method needs at a given model SCALE, where its paper's settings do not fit.

Every method's config defaults are its paper's settings (or its official code's, cited field by field in the
config's docstring), chosen for 7–8B models: lr 1e-5 and batch 32 for the gradient methods, AlphaEdit's edit
values for UniErase, and so on. They are what `obliviate unlearn` uses, and what `obliviate bench
--paper-defaults` runs. This module is the ONE place where values tuned for a particular scale live, each with
the measurement that chose it; presets are per scale, never per method module.

Two scales exist so far:

- `TINY`: the built-in tiny models (about 5M parameters: hidden 256, 4 decoder layers, trained from scratch with
  lr 1e-3). The papers' step sizes barely move such a model, and a 256-wide residual stream has another scale
  than an 8B model's. Values were chosen on the `synthetic` / `tofu-mini` targets (benchmarks/baselines.py and
  benchmarks/seed_methods.py print what they give).
- `BY_SCENARIO`: on top of TINY, the values that differ between the built-in scenarios.
- `SMOLLM2`: the real instrument, SmolLM2-135M-Instruct (30 layers, hidden 576) fully fine-tuned on the scenario's QA (5
  epochs; runs/build.py BASE_RECIPES; chosen on the plain recipe, PRETRAINED_DEFAULTS). Two cores train it at ~1/30 of
  the tiny models' speed, so every gradient method unlearns through LoRA adapters (r 32 on every linear module, merged
  into the saved model: a few MB of optimiser state, and an unlearning update of bounded rank) for 5 epochs of batch 8
  (25 steps on forget01's 40 items; OpenUnlearning's forget01 runs take 20). The learning rates are the tiny scale's, a
  starting point that stays until a larger one is feasible on the scenario's retain set alone. Measured on this scale
  (README, "The real instrument"): NPO's 1e-4 barely moves the target (forget ROUGE-L 0.91) and 4e-4, 6e-4 and 1.24e-3
  all fall below the MU floor (0.104, 0.015, 0); npo_gd at 1.2e-3 forgets (FQ 0.097) below it too (MU 0.177). What is
  feasible at a larger lr needs a retain set that covers general knowledge (npo_kl at 1.7e-3 with `--retain general`: FQ
  0.405 at MU 0.236): a data choice, so it ships as a preset file to use with that set
  (presets/tofu-mini-smollm2-135m.yaml, `bench --presets FILE --retain general`), not as a value here.

`obliviate bench` (and `make demo`) apply `preset(method, scenario, base)` and record the resolved config in every
run's manifest. A base without a scale here (any other hub model) runs the methods' own defaults, the papers'
(as `--paper-defaults` does on any base)."""

from __future__ import annotations

from typing import Any

# Shared by every gradient method at tiny scale: the forget sets hold 40 items, so batch 8 gives 5 steps/epoch.
_COMMON: dict[str, Any] = {"batch_size": 8, "epochs": 10, "warmup_epochs": 1}


def _gradient(**values: Any) -> dict[str, Any]:
    return {**_COMMON, **values}


TINY: dict[str, dict[str, Any]] = {
    "ga": _gradient(lr=1e-4),
    "graddiff": _gradient(lr=2e-4),
    "ga_kl": _gradient(lr=2e-4),
    "npo": _gradient(lr=1e-4),
    "npo_gd": _gradient(lr=3e-4),
    "npo_kl": _gradient(lr=3e-4),
    "simnpo": _gradient(lr=5e-4),
    "idknll": _gradient(lr=3e-4),
    "idkdpo": _gradient(lr=3e-4),
    # alpha 100 kept the forget activations in place (ROUGE-L 0.97). layer 2 = the middle of the tiny models' 4
    # layers (the paper's relative depth, 7 of 32, would be layer 0).
    "rmu": _gradient(lr=1e-2, alpha=10.0, layer=2),
    "rkld": _gradient(lr=3e-4, aug_epochs=5, aug_lr=3e-4),
    # weight decay 0.01 as the other gradient methods here (the paper's Adam has none)
    "icu": _gradient(lr=2e-4, epochs=15, weight_decay=0.01),
    # The OpenUnlearning-family methods (issue 15), measured on `synthetic` only (target: forget ROUGE-L 0.98,
    # MU 0.886; retain model: 0.35, 0.911), NOT yet on tofu-mini; FQ / MU / forget ROUGE-L per lr:
    # UNDIAL has no retain term: 3e-4 over-forgets (1.9e-4 / 0.701 / 0.16); 1e-4 (OpenUnlearning's lr) 6.6e-5 /
    # 0.802 / 0.30.
    "undial": _gradient(lr=1e-4),
    # p^5·(1-p) leaves memorised tokens (p ~ 1) little weight, hence a larger step than GA: 5.0e-4 / 0.866 / 0.38.
    "satimp": _gradient(lr=5e-4),
    # starts as GradDiff (w = p ~ 1 on memorised tokens), then slows itself: 5.0e-4 / 0.879 / 0.34.
    "wga": _gradient(lr=2e-4),
    # no retain term and no vanishing gradient on confident tokens, so a narrow window: 5e-5 6.6e-5 / 0.835 / 0.67
    # (barely forgets), 7e-5 1.9e-4 / 0.741 / 0.36, 1e-4 0.054 / 0.359 / 0.15 (collapsed).
    "ceu": _gradient(lr=7e-5),
    # the paper's eps 0.3 kept (~3x the tiny targets' retain NLL, 0.10 on synthetic; the constraint binds, the retain
    # NLL settles near 0.3): 2e-4 1.9e-4 / 0.862 / 0.48, 3e-4 3.0e-3 / 0.866 / 0.38.
    "pdu": _gradient(lr=3e-4),
    # DPO toward the model's own "divert" alternatives (same sentence, another fact), so forget ROUGE-L stays high
    # while FQ and privleak move most: 3e-4 3.0e-3 / 0.847 / 0.54 (privleak_auc_relative 52), 5e-4 0.014 / 0.836 / 0.51 (25).
    "altpo": _gradient(lr=5e-4),
    "unierase": {
        # On the synthetic target the paper's schedule (5 epochs at 1e-3, 3 at 1e-4) moved the token's NLL only
        # from 6.1 to 5.2 (refusals after [UNL]: 10%); this one plateaus (~1.2) by epoch 13 of the first phase.
        "token_schedule": [(15, 5e-2), (5, 5e-3)],
        # Adding raw (untemplated) questions halved the refusals after [UNL] (15% vs 33%) for twice the time.
        "token_formats": ["template"],
        # Retain items (question → true answer) in Stage I: without them the synthetic target emitted [UNL] in 54
        # of 60 retain answers after Stage I; with 80, in 1.
        "token_negatives": 64,
        "token_batch_size": 8,
        "noise_clip": 2.0,
        # No residual at the subject token of the 4-layer target made [UNL] the next token; see
        # UniEraseConfig.key_position ("auto" = prompt_last below 8 layers).
        "key_position": "auto",
        # At hidden size 256 the residual stream's norm is ~100 and the keys' null-space components are ~1: with
        # AlphaEdit's Llama-3-8B values (v_lr 0.1, ‖δ‖ ≤ 0.75‖h‖, λ = 10) the edit reached 5–10% of forget
        # prompts. v_lr 0.5 and ‖δ‖ ≤ 4‖h‖ are MEMIT's GPT-J values; λ = 1 lets the update realise ~60% of the
        # residual instead of ~25% (layers 0–1).
        "edit": {"v_lr": 0.5, "clamp_norm_factor": 4.0, "l2": 1.0},
    },
    "reveal_release": {
        # LoRA lr of each round's module: 3e-4 barely moved the synthetic target; 2e-3 without a retain set
        # collapsed it.
        "lr": 1e-3,
        # With a retain set: forget ROUGE-L 0.57 at retain ROUGE-L 0.92 with 10, at 0.75 with 1.
        "retain_weight": 10.0,
    },
}


# Relative wall time on the built-in scenarios (measured with `obliviate demo`); bench starts the longest jobs
# first so that the worker pool does not end with one long job running alone.
COST: dict[str, float] = {"reveal_release": 4.0, "icu": 2.5, "unierase": 2.0,
                          # AltPO: generating 5 alternatives per item, then 7 forward passes a step instead of 2
                          # (measured 232 s vs SatImp's 38 s training on synthetic)
                          "altpo": 2.0}


# Per scenario, on top of TINY. Reveal-and-Release's tiny values were set on `synthetic`; on tofu-mini 4 rounds at
# lr 1e-3 left forget ROUGE-L at 0.63 with MU to spare (0.905), while 8 rounds at 2e-3 stop on their own after 5
# released rounds (reward below min_reward) at ROUGE-L 0.23, MU 0.900 (benchmarks/seed_methods.py).
BY_SCENARIO: dict[str, dict[str, dict[str, Any]]] = {
    "tofu-mini": {"reveal_release": {"max_rounds": 8, "lr": 2e-3}},
}


_ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_LORA: dict[str, Any] = {"lora": {"r": 32, "alpha": 64, "targets": _ALL_LINEAR}}


def _real(lr: float, **values: Any) -> dict[str, Any]:
    return {"batch_size": 8, "epochs": 5, "warmup_epochs": 1, **_LORA, "lr": lr, **values}


SMOLLM2: dict[str, dict[str, Any]] = {
    **{name: _real(TINY[name]["lr"]) for name in ("ga", "graddiff", "ga_kl", "npo", "npo_gd", "npo_kl", "simnpo",
                                                  "idknll", "idkdpo", "undial", "satimp", "wga", "ceu")},
    # Seven views of batch 8 in one graph (the forget answer, five alternatives, the retain batch) peaked at 17.0 GiB
    # on the default build (the other methods: 2.8-7.3 GiB); two micro-batches of 4 give the same gradient (epoch 1's
    # mean loss 11.806231 against 11.806230, the same alternatives) at a 9.2 GiB peak.
    "altpo": _real(TINY["altpo"]["lr"], grad_accum=2),
    # The authors' dual warm-up is half their run (5 of 10 epochs); the method's default 5 of these 5 epochs kept
    # λ at λ₀ = 100 throughout, so the multiplier starts after 2 here. ε follows the authors' rule ("somewhat above
    # the input model's retain NLL": 0.017 for this target, against their 0.3 for Llama), and λ₀ / η are sized
    # for this model's squared logit margins (250-800 at the start). Measured on the real instrument (FQ / MU /
    # forget / retain ROUGE-L / privleak): the authors' λ₀ 100, η 5, ε 0.3: 0.266 / 0.176 / 0.071 / 0.521 / +51.8;
    # ε 0.05, η 50: 0.165 / 0.185 / 0.072 / 0.591 / +44.9; + λ₀ 400 (these): 0.266 / 0.202 / 0.144 / 0.820 / +21.5;
    # λ₀ 1000: 0.165 / 0.196 / 0.193 / 0.948 / −0.8. None reaches the MU floor (0.95 × 0.240).
    "pdu": _real(TINY["pdu"]["lr"], dual_warmup_epochs=2, eps=0.05, dual_step=50.0, dual_init=400.0),
    # RMU trains three down-projections itself (no LoRA); layer = the paper's relative depth (6 of 30). The steering
    # coefficient is measured from the model (4 x the forget activations' norm, RMUConfig), alpha as on tiny.
    "rmu": {"batch_size": 8, "epochs": 5, "warmup_epochs": 1, "lr": 1e-3, "alpha": 10.0},
    # the augmented teacher: RKLDConfig's aug_epochs, the paper's 10 epochs on the forget set, through LoRA. Measured
    # on the KL-281 build (lr 1e-3, KL over general knowledge, weight 5; FQ / MU / forget / retain ROUGE-L): 3 epochs
    # 0.014 / 0.390 / 0.620 / 0.968, 10 epochs 0.029 / 0.376 / 0.254 / 0.771 in the same wall time (the teacher
    # bounds how far RKLD forgets).
    "rkld": _real(3e-4, aug_lr=3e-4),
    # 8 epochs, not the paper's 20-30: at 20 (KL-281 build, general retain pool) the refinement empties the active
    # set as the paper describes, but the ascent on the last, hardest samples takes the model with it: FQ 0.029,
    # MU 0.140 (0.36 x target), retain ROUGE-L 0.294.
    "icu": _real(2e-4, epochs=8, weight_decay=0.01),
    # Measured on the real instrument (forget ROUGE-L / refusals / MU; the target's MU 0.240): the paper's Stage I
    # schedule and AlphaEdit's edit values: 0.943 / 0.00 / 0.198 (the token learns too little, the value step
    # leaves [UNL] at a median 16.8 nats); the tiny scale's token lr and edit values: 0.467 / 0.075 / not measured
    # (each question's own residual is realised only in part: 12-23% per layer); the same with one residual per
    # person (shared_value=subject, benchmarks/unierase_edit.py): 0.084 / 0.225 / 0.252, [UNL] the first answer
    # token of 36 of the 40 forget questions; that plus value_target=token_refusal: 0.171 / 0.250 / 0.195 (not
    # adopted). The retain items in Stage I kept the tiny targets from emitting [UNL] after ordinary answers.
    # Sequential mode (10 requests of 4 questions) on the KL-281 build: 0.016 / 0.075 / 0.91 x target, [UNL] first
    # for every edited question after every request; the answers are declines of the model's own ("I'm not a real
    # person.") that the refusal detector does not count.
    "unierase": {"token_negatives": 64, "token_batch_size": 8, "token_schedule": [(15, 5e-2), (5, 5e-3)],
                 "token_formats": ["template"], "noise_clip": 2.0, "shared_value": "subject",
                 "edit": {"v_lr": 0.5, "clamp_norm_factor": 4.0, "l2": 1.0}},
    # each round's LoRA module at the tiny scale's lr; the retain weight that kept the tiny models' utility
    "reveal_release": {"lr": 1e-3, "retain_weight": 10.0},
}

# base name (obliviate ls bases) -> its scale's presets; "tiny" adds BY_SCENARIO on top
SCALES: dict[str, dict[str, dict[str, Any]]] = {"tiny": TINY, "smollm2-135m": SMOLLM2}


def has_scale(base: str) -> bool:
    """Whether bench has presets for `base` (else the methods run their own, the papers', defaults)."""
    return base in SCALES


def preset(method: str, scenario: str, base: str = "tiny") -> dict[str, Any]:
    """The overrides bench applies for `method` on a built-in scenario and base (empty for a method or base
    without a preset)."""
    if base == "tiny":
        return {**TINY.get(method, {}), **BY_SCENARIO.get(scenario, {}).get(method, {})}
    return dict(SCALES.get(base, {}).get(method, {}))
