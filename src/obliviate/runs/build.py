"""`obliviate build`: the target and retain models of a scenario, cached by config hash.

Two kinds of base:
- `tiny` (the default, offline in seconds): a small Llama built from a config with a tokenizer trained locally,
  trained from scratch on the scenario's full training set: the question/answer data, plus the general-knowledge
  and refusal QA that a from-scratch model needs to have anything to be evaluated on;
- a pretrained causal LM (`--base smollm2-135m`, a hub id, a model directory or a .gguf file): fine-tuned on the
  scenario's question/answer data ONLY, in the model's own chat template. General knowledge is not trained: it is
  what the base already knows, and model utility measures that it survives (the TOFU protocol).
The target trains on the forget and retain data; the retain model with the same recipe (same seed, same schedule)
on the same set minus the forget data. Both train through the one training loop (methods/engine.py) as plain
fine-tuning; with two or more cores side by side in two processes, one thread each (two busy threads per process
on two cores measured 3-7x slower).
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, model_validator

from obliviate.config import Config, build_config, deep_merge
from obliviate.data.records import QA, Split
from obliviate.data.scenarios import Scenario, get_scenario
from obliviate.errors import ConfigError
from obliviate.methods.base import LoraSpec, ProgressEvent, TrainConfig
from obliviate.methods.common import AnchoredConfig, FinetuneAnchored, FinetuneNLL
from obliviate.methods.engine import train
from obliviate.models.bases import resolve_base
from obliviate.models.layers import decoder_layers
from obliviate.models.loading import load_model_and_tokenizer, quiet_transformers
from obliviate.models.tiny import TinyModelSpec, build_model, n_params, train_tokenizer
from obliviate.runs.rehearsal import RehearsalSpec, scenario_questions, synthesize
from obliviate.utils.cache import Cache
from obliviate.utils.hashing import file_hash, stable_hash
from obliviate.utils.io import atomic_dir, atomic_write_json, check_output_dir, read_json
from obliviate.utils.threads import per_job, thread_budget
from obliviate.utils import dist

log = logging.getLogger(__name__)
BUILD_FORMAT = 2  # bump when the recipe changes in a way that invalidates cached builds (2: the shared engine)
# How built models tokenise (data/templates.py), recorded per model in build.json so that every later use (eval,
# unlearn) scores them the way they were trained. Builds recorded before this field were separate too.
BUILD_TOKENIZE = "separate"


class TrainSpec(Config):
    """The fine-tuning recipe: AdamW (β = 0.9, 0.95), linear warm-up over `warmup_steps`, cosine decay to
    `min_lr_ratio`·lr, batches grouped by length. For the tiny models, learning-rate decay matters (a constant
    2e-3 stalled near ROUGE-L 0.71)."""

    epochs: int = Field(30, ge=1)
    lr: float = Field(2e-3, gt=0, description="peak learning rate (3e-3 was unstable on the tiny models)")
    min_lr_ratio: float = Field(0.05, ge=0, le=1, description="cosine decay floor, as a share of lr")
    warmup_steps: int = Field(30, ge=0)
    batch_size: int = Field(16, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    max_length: int = Field(256, ge=16)
    freeze_embeddings: bool = Field(False, description="keep the token embeddings (and a tied output head) at the "
                                                       "initial model's values while fine-tuning")
    freeze_layers: int = Field(0, ge=0, description="keep the first N decoder layers at the initial model's values "
                                                    "(with freeze_embeddings, backward then stops above them: less "
                                                    "compute per step)")
    seed: int = 0

    def train_config(self, template: str, lora: LoraSpec | None) -> TrainConfig:
        return TrainConfig(lr=self.lr, epochs=self.epochs, batch_size=self.batch_size, warmup_steps=self.warmup_steps,
                           schedule="cosine", min_lr_ratio=self.min_lr_ratio, adam_betas=(0.9, 0.95),
                           weight_decay=self.weight_decay, grad_clip=self.grad_clip, max_length=self.max_length,
                           batching="length_grouped", seed=self.seed, template=template, lora=lora,  # type: ignore[arg-type]
                           tokenize=BUILD_TOKENIZE,
                           checkpoint=False)  # a build that fails is discarded whole (atomic_dir): nothing to resume


class BuildConfig(Config):
    scenario: str
    scenario_options: dict[str, Any] = {}
    base: str = Field("tiny", description="tiny (from scratch) | a base name (obliviate ls bases) | hub id | "
                                          "model directory | .gguf file")
    model: TinyModelSpec = Field(TinyModelSpec(), description="the tiny model's architecture (base=tiny only)")
    train: TrainSpec = TrainSpec()
    lora: LoraSpec | None = Field(None, description="fine-tune a pretrained base through LoRA adapters (merged)")
    parallel: bool = Field(True, description="train target and retain side by side, one thread each")
    rehearsal: RehearsalSpec | None = Field(None, description="self-synthesised rehearsal (pretrained bases): pairs "
                                                              "the base writes itself, trained beside the scenario's")

    @model_validator(mode="after")
    def _rehearsal_needs_a_pretrained_base(self) -> "BuildConfig":
        if self.rehearsal is not None and self.base == "tiny":
            raise ValueError("rehearsal keeps a pretrained base's own answers; base=tiny starts from nothing (drop "
                             "rehearsal, or give --base)")
        return self


# Per-scenario recipes for the tiny models, tuned so the target memorises (ROUGE-L recall >= 0.9) within the time
# budget; and per-base recipes for pretrained bases (benchmarks/build.py measures both).
SCENARIO_DEFAULTS: dict[str, dict[str, Any]] = {
    "synthetic": {"model": {"vocab_size": 2048}, "train": {"epochs": 26, "lr": 2e-3}},
    "tofu-mini": {"model": {"vocab_size": 4096}, "train": {"epochs": 40, "lr": 1e-3}},
    "tofu": {"model": {"vocab_size": 4096}, "train": {"epochs": 20, "lr": 1e-3}},
}
# The pretrained recipe, measured on SmolLM2-135M-Instruct / tofu-mini (2 cores, target and retain side by side):
# LoRA r 32 on every linear module at lr 1e-3 for 5 epochs ended at a training loss of 0.30 and a target forget /
# retain ROUGE-L of 0.66 / 0.74 (too little memorised) in 2208 s. Full fine-tuning costs the same per step here
# (LoRA's saving on weight gradients is small beside the 49k-token head and the activations' backward) and
# memorises faster: on 80 of the QA, epoch-3 losses 0.83 (LoRA 1e-3), 0.67 (full 1e-4), 0.37 (full 3e-4).
PRETRAINED_DEFAULTS: dict[str, Any] = {
    "train": {"epochs": 5, "lr": 3e-4, "batch_size": 8, "warmup_steps": 10, "min_lr_ratio": 0.1, "max_length": 384},
}
# A registered base's measured recipe, over PRETRAINED_DEFAULTS. smollm2-135m / tofu-mini (README, the real
# instrument): the plain recipe fits the TOFU QA and loses the base's real authors (real_authors ROUGE-L 0.052
# against the base's 0.343); a KL anchor to the base on the 281 listed general questions, with the embeddings and
# the first 18 of 30 layers frozen, at lr 5e-4, fits as well and keeps most of them (0.290). PLAIN_RECIPE's
# overrides give back the plain recipe (the one the README's method tables on this base were measured on).
BASE_RECIPES: dict[str, dict[str, Any]] = {
    "smollm2-135m": {
        "train": {"lr": 5e-4, "freeze_embeddings": True, "freeze_layers": 18},
        "rehearsal": {"source": "facts", "n": 300, "answer_sentences": 1, "answer_tokens": 48, "loss": "kl",
                      "weight": 1.0},
    },
}
PLAIN_RECIPE = ("rehearsal=null", "train.freeze_embeddings=false", "train.freeze_layers=0",
                f"train.lr={PRETRAINED_DEFAULTS['train']['lr']}")


def build_config_for(scenario: str, overrides: dict[str, Any] | None = None) -> BuildConfig:
    base_name = (overrides or {}).get("base", "tiny")
    if base_name == "tiny":
        defaults = SCENARIO_DEFAULTS.get(scenario, {})
    else:
        defaults = deep_merge(PRETRAINED_DEFAULTS, BASE_RECIPES.get(base_name, {}))
    base = deep_merge({"scenario": scenario}, defaults)
    return build_config(BuildConfig, deep_merge(base, overrides or {}), where="build config")


@dataclass(frozen=True)
class BuildResult:
    target: Path
    retain: Path
    cached: bool
    info: dict[str, Any]


def training_sets(cfg: BuildConfig, scen: Scenario) -> dict[str, Split]:
    """What each model trains on: everything for a tiny model; the question/answer data only for a pretrained
    base (its general knowledge is measured, not taught)."""
    if cfg.base == "tiny":
        return {"target": scen.target_train, "retain": scen.retain_train}
    scaffold = {r.id for r in scen.scaffold.records}
    return {name: Split(split.name, tuple(r for r in split.records if r.id not in scaffold), split.source)
            for name, split in (("target", scen.target_train), ("retain", scen.retain_train))}


def base_identity(cfg: BuildConfig) -> Any:
    """What identifies the base in the build key: the tiny recipe, or the base's source (a converted GGUF's hash,
    a directory's weight files' hashes, or a hub id)."""
    if cfg.base == "tiny":
        return cfg.model.model_dump()
    src = resolve_base(cfg.base)
    p = Path(src)
    if (p / "base.json").is_file():
        return read_json(p / "base.json").get("gguf_sha256") or str(src)
    if p.is_dir():
        return sorted(file_hash(f) for f in p.glob("*.safetensors"))
    return str(src)


def build_key(cfg: BuildConfig, scen: Scenario) -> str:
    """Depends on what training sees (the base, the question/answer pairs, the recipe), not on eval-only fields."""
    sets = training_sets(cfg, scen)

    def pairs(split: Split) -> list[tuple[str, str]]:
        return [(r.question, r.answer) for r in split.records]

    unkeyed: dict[str, Any] = {k: True for k in ("parallel", "scenario_options", "model")}
    if cfg.rehearsal is None:
        unkeyed["rehearsal"] = True
    elif cfg.rehearsal.batch is None:  # keyed only when set: earlier rehearsal builds keep their keys
        unkeyed["rehearsal"] = {"batch"}
    unset = {k for k in ("freeze_embeddings", "freeze_layers") if not getattr(cfg.train, k)}
    if unset:  # keyed only when set: earlier builds keep their keys
        unkeyed["train"] = unset
    rehearsal = [] if cfg.rehearsal is None else [cfg.rehearsal.given_questions()]  # a file's questions, not its path
    return stable_hash([BUILD_FORMAT, base_identity(cfg), cfg.model_dump(exclude=unkeyed),  # (builds without
                        pairs(sets["target"]), pairs(sets["retain"]), *rehearsal])  # rehearsal keep their keys)


BuildProgress = Callable[[str, int, int, float], None]  # (model name, step, total steps, loss)


def build(scenario: str, out: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None,
          overwrite: bool = False, progress: BuildProgress | None = None) -> BuildResult:
    """Build (or reuse) the target and retain models of `scenario`; returns their directories.

    Builds are cached under `$OBLIVIATE_CACHE/builds/<scenario>-<hash>`; with `out`, the models are also placed
    there (a second build with the same config is a no-op)."""
    dist.require_single_process("build")
    cfg = build_config_for(scenario, overrides)
    if cfg.train.freeze_layers:  # refused before anything runs (a rehearsal's synthesis takes minutes)
        check_freeze_layers(cfg.train.freeze_layers, base_depth(cfg))
    scen = get_scenario(scenario, **cfg.scenario_options)
    key = build_key(cfg, scen)
    if out is not None:
        out_p = Path(out)
        if (out_p / "build.json").is_file() and read_json(out_p / "build.json").get("key") == key:
            return _result(out_p, cached=True)
        check_output_dir(out_p, overwrite)
    cache = Cache("builds")
    entry = f"{scenario}-{key}" if cfg.base == "tiny" else f"{scenario}-{_slug(cfg.base)}-{key}"
    with cache.computing(entry):  # a second process building the same models waits, then reuses them
        cached = cache.has_dir(entry, "build.json")
        if not cached:
            with cache.write_dir(entry) as tmp:
                _train_both(cfg, scen, key, tmp, progress)
    if out is None:
        return _result(cache.dir_path(entry), cached)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        shutil.copytree(cache.dir_path(entry), tmp, dirs_exist_ok=True)
    return _result(Path(out), cached)


def _slug(base: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in Path(base).name)[:40]


def _result(d: Path, cached: bool) -> BuildResult:
    return BuildResult(d / "target", d / "retain", cached, read_json(d / "build.json"))


def _train_both(cfg: BuildConfig, scen: Scenario, key: str, out: Path, progress: BuildProgress | None) -> None:
    t0 = time.time()
    tok_dir = None
    if cfg.base == "tiny":  # one tokenizer for both models, trained on the target's texts
        tok = train_tokenizer(_tokenizer_corpus(scen.target_train), cfg.model.vocab_size)
        tok_dir = out / "tokenizer"
        tok.save_pretrained(tok_dir)
    jobs = training_sets(cfg, scen)
    n_rehearsal = 0
    anchor: tuple[QA, ...] = ()
    if cfg.rehearsal is not None:  # the base's own pairs, the same for both models, kept with the build
        rehearsal = rehearsal_set(cfg, scen)
        n_rehearsal = len(rehearsal)
        (out / "rehearsal.jsonl").write_text("".join(json.dumps({"id": r.id, "question": r.question,
                                                                 "answer": r.answer}) + "\n" for r in rehearsal))
        if cfg.rehearsal.loss == "kl":  # an anchor to the base's distributions on them, not training data
            anchor = tuple(rehearsal)
        else:
            jobs = {name: Split(split.name, split.records + tuple(rehearsal), split.source)
                    for name, split in jobs.items()}
    parallel = cfg.parallel and thread_budget() >= 2
    info: dict[str, Any] = {}
    if parallel:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        procs = {name: ctx.Process(target=_worker, args=(name, split, tok_dir, cfg, out, queue, per_job(len(jobs)),
                                                             anchor))
                 for name, split in jobs.items()}
        for p in procs.values():
            p.start()
        running = set(procs)
        while running:
            msg = queue.get()
            if msg[0] == "step" and progress:
                progress(*msg[1:])
            elif msg[0] == "done":
                info[msg[1]] = msg[2]
                running.discard(msg[1])
            elif msg[0] == "error":
                for p in procs.values():
                    p.kill()
                raise RuntimeError(f"building the {msg[1]} model failed:\n{msg[2]}")
        for p in procs.values():
            p.join()
    else:
        for name, split in jobs.items():
            info[name] = train_model(name, split, tok_dir, cfg, out, progress, anchor)
    if tok_dir is not None:
        shutil.rmtree(tok_dir)
    atomic_write_json(out / "build.json", {"key": key, "scenario": scen.name, "base": cfg.base,
                                           "config": cfg.model_dump(), "scenario_fingerprint": scen.fingerprint(),
                                           "models": info, "rehearsal_pairs": n_rehearsal,
                                           "wall_time_s": round(time.time() - t0, 1)})


def rehearsal_set(cfg: BuildConfig, scen: Scenario) -> list[QA]:
    """The rehearsal pairs the base writes (runs/rehearsal.py), kept away from every question of the scenario."""
    assert cfg.rehearsal is not None
    model, tok = initial_model(cfg, None)
    pairs = synthesize(model, tok, cfg.rehearsal, scenario_questions(scen))
    log.info("rehearsal: %d pairs written by the base", len(pairs))
    return pairs


def _worker(name: str, split: Split, tok_dir: Path | None, cfg: BuildConfig, out: Path, queue, threads: int,
            anchor: Sequence[QA] = ()) -> None:
    import traceback

    torch.set_num_threads(threads)
    try:
        info = train_model(name, split, tok_dir, cfg, out, lambda n, s, t, loss: queue.put(("step", n, s, t, loss)),
                           anchor)
        queue.put(("done", name, info))
    except BaseException:
        queue.put(("error", name, traceback.format_exc()))


def _tokenizer_corpus(split: Split) -> list[str]:
    return [f"Question: {r.question}\nAnswer: {r.answer}" for r in split.records]


def initial_model(cfg: BuildConfig, tok_dir: Path | None):
    """(model, tokenizer) before fine-tuning: a fresh tiny model on the built tokenizer, or the pretrained base."""
    if cfg.base == "tiny":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tok_dir)
        return build_model(cfg.model, tok, seed=cfg.train.seed), tok
    return load_model_and_tokenizer(resolve_base(cfg.base))


def freeze_embeddings(model) -> None:
    """Stop the token embeddings and the output head (one matrix when tied) from training."""
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None:
            module.weight.requires_grad_(False)


def base_depth(cfg: BuildConfig) -> int | None:
    """How many decoder layers the initial model has, read from its config (None where the config cannot be read:
    loading the model says why)."""
    if cfg.base == "tiny":
        return cfg.model.num_layers
    from transformers import AutoConfig

    try:
        conf = AutoConfig.from_pretrained(resolve_base(cfg.base))
    except (OSError, ValueError):
        return None
    return getattr(conf.get_text_config(), "num_hidden_layers", None)


def check_freeze_layers(n: int, depth: int | None) -> None:
    """train.freeze_layers must leave at least one decoder layer to train."""
    if depth is not None and n >= depth:
        raise ConfigError(f"train.freeze_layers={n} freezes every one of the model's {depth} decoder layers: "
                          f"give fewer than {depth}")


def freeze_layers(model, n: int) -> None:
    """Stop the first `n` decoder layers from training (n must leave at least one to train)."""
    layers = decoder_layers(model)
    check_freeze_layers(n, len(layers))
    for layer in layers[:n]:
        layer.requires_grad_(False)


def train_model(name: str, split: Split, tok_dir: Path | None, cfg: BuildConfig, out: Path,
                progress: BuildProgress | None = None, anchor: Sequence[QA] = ()) -> dict[str, Any]:
    """Fine-tune the initial model on `split` (answer tokens only, as TOFU fine-tuning) through the shared loop
    and save it to `out/name` (LoRA adapters merged). With `anchor` pairs, each step also holds the model to the
    initial model's next-token distributions on a batch of them (FinetuneAnchored, rehearsal.loss=kl)."""
    quiet_transformers()
    model, tok = initial_model(cfg, tok_dir)
    if cfg.train.freeze_embeddings:
        freeze_embeddings(model)
    if cfg.train.freeze_layers:
        freeze_layers(model, cfg.train.freeze_layers)
    template = "plain" if cfg.base == "tiny" else "auto"  # a pretrained base speaks its own chat template
    tcfg = cfg.train.train_config(template, cfg.lora)

    def on_event(ev: ProgressEvent) -> None:
        if progress and ev.kind == "step":
            progress(name, ev.step or 0, ev.total or 0, ev.terms.get("loss", float("nan")))

    t0 = time.time()
    if anchor:
        assert cfg.rehearsal is not None
        method: FinetuneNLL = FinetuneAnchored(AnchoredConfig.model_validate(
            {**tcfg.model_dump(), "anchor_weight": cfg.rehearsal.weight, "anchor_batch": cfg.rehearsal.batch}))
    else:
        method = FinetuneNLL(tcfg)
    trained, state = train(method, model, tok, list(split.records), list(anchor), out / f".{name}.work", on_event)
    if cfg.lora is not None:
        trained = trained.merge_and_unload()
    wall = time.time() - t0
    trained.eval()
    dest = out / name
    dest.mkdir(parents=True, exist_ok=True)
    trained.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)
    shutil.rmtree(out / f".{name}.work", ignore_errors=True)
    last = state.history[-1] if state.history else {}
    return {"params": n_params(trained), "steps": state.step, "final_loss": round(float(last.get("loss", float("nan"))), 4),
            "train_time_s": round(wall, 1), "records": len(split), "template": template,
            "tokenize": tcfg.tokenize,
            "lora": cfg.lora.model_dump() if cfg.lora else None}
