"""The method protocol: what every unlearning method declares, and how the registry finds them.

A method is one module: a frozen config (pydantic) and a small class registered with `@register_method`. The class
derives from one of two bases:

- `GradientMethod`: supplies `loss(batch, model, ref)`; the one training loop (`engine.py`) owns optimisation,
  accumulation, checkpointing, logging and progress. Optional hooks (setup, trainable, after_epoch, ...) have
  do-nothing defaults here.
- `ProceduralMethod`: runs its own procedure (editing, iterative rounds) in `apply(ctx)`.

Both inherit `Method`'s declarations, which the orchestration reads instead of probing attributes: `Config`,
`self_generated`, `required_fields`, `views`, `needs_retain`, `extras()`, `run_info()`. Progress is reported as
typed `ProgressEvent`s. Methods share code through functions (`losses.py`, `common.py`), never by subclassing
another method.

Discovery: the first question to `METHODS` imports every module of the `obliviate.methods` package (subpackages
included), so a new method is one new module; helper modules simply register nothing."""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

from obliviate.config import Config
from obliviate.registry import Registry


class LoraSpec(Config):
    """LoRA adapters (peft) instead of full fine-tuning: `lora.r=8 lora.alpha=16 lora.targets=[q_proj,v_proj]`."""

    r: int = Field(8, ge=1)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    keep_adapter: bool = Field(False, description="also save the adapter (the merged model is always saved)")


class TrainConfig(Config):
    """Optimisation settings shared by every gradient method (OpenUnlearning's TOFU defaults: lr 1e-5, 10 epochs,
    1 warm-up epoch, weight decay 0.01, effective batch 32). `batch_size` is per optimiser step, the global
    effective batch (split across processes under several); with `grad_accum` > 1 each step accumulates that many
    micro-batches of batch_size / grad_accum."""

    lr: float = Field(1e-5, gt=0, description="peak learning rate (AdamW)")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1, description="forget examples per optimiser step (effective batch)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimiser step")
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up length, then the decay of `schedule`")
    warmup_steps: int | None = Field(None, ge=0, description="warm-up in optimiser steps (overrides warmup_epochs)")
    schedule: Literal["linear", "cosine"] = Field(
        "linear", description="after warm-up: linear decay to 0 (OpenUnlearning), or cosine decay to min_lr_ratio·lr")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="floor of the cosine decay, as a share of lr")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW's (β1, β2)")
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    max_length: int = Field(512, ge=16)
    batching: Literal["random", "length_grouped"] = Field(
        "random", description="forget batches drawn at random, or shuffled then grouped by length within chunks of "
                              "32 batches (less padding; for fine-tuning such as the model builder)")
    seed: int = 0
    checkpoint: bool = Field(True, description="save a resumable checkpoint after every epoch (off where a run "
                                              "cannot be resumed anyway, e.g. the model builder's)")
    template: Literal["auto", "plain", "chat"] = "auto"
    tokenize: Literal["auto", "separate", "joint"] = Field(
        "auto", description="prompt and answer tokenised separately or as one string (OpenUnlearning); auto: the "
                            "mode the input model was trained with (recorded by obliviate), else joint")
    lora: LoraSpec | None = None
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in backward (less memory, ~1/3 more compute); LoRA included")

    @model_validator(mode="after")
    def _accum_divides(self):
        if self.grad_accum > self.batch_size:
            raise ValueError(f"grad_accum={self.grad_accum} exceeds batch_size={self.batch_size}: each micro-batch "
                             f"needs at least one example")
        return self


# ---------------------------------------------------------------------------------------------- progress


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report of a running method.

    - kind="step": one optimiser step of the shared loop (`epoch`/`epochs`, `step`/`total` over the whole run,
      `lr`, `terms` = the step's loss terms); Reveal-and-Release's per-round modules also set `round`/`rounds`.
    - kind="epoch": an epoch ended (`terms` = its mean loss terms and per-epoch curves); emitted after the
      epoch's checkpoint is saved.
    - kind="round": a Reveal-and-Release round ended: `reward`, `n_revealed`, `released`, `probe_nll`, and
      `terms` with the round's relevance and diversity.
    - kind="stage": one unit of work of a named stage of a procedure (`stage`, e.g. UniErase's "token" and
      "edit"), with `step`/`total` over the whole procedure.
    - kind="resume": the run resumes from a checkpoint after `epoch` of `epochs` (sent by the run, not a method)."""

    kind: Literal["step", "epoch", "round", "stage", "resume"]
    step: int | None = None
    total: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    round: int | None = None
    rounds: int | None = None
    lr: float | None = None
    terms: Mapping[str, float] = field(default_factory=dict)
    stage: str | None = None
    reward: float | None = None
    n_revealed: int | None = None
    released: bool | None = None
    probe_nll: float | None = None


Progress = Callable[[ProgressEvent], None]


# ---------------------------------------------------------------------------------------------- search spaces


@dataclass(frozen=True)
class Space:
    """One searched setting of a method's config, for `obliviate sweep`: log-uniform, uniform, integer or one of
    a few choices. A method declares its default space next to its config (`search_space` below); a YAML file
    (`sweep --space FILE`) uses the same four kinds.

    - `relative`: `low`/`high` are multiples of the run's starting value (the scale preset, or the paper's
      default), so one declaration fits every scale: lr ×[0.1, 10] is [1e-6, 1e-4] at the papers' 1e-5 and
      [1e-5, 1e-3] at the tiny models' 1e-4. Integers are rounded (at least 1).
    - `when`: the setting is searched only for configs where it matters (a retain weight only with a retain
      term; one class serves ga / graddiff / ga_kl)."""

    kind: Literal["log", "uniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    relative: bool = False
    when: Callable[[Any], bool] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("log", "uniform", "int", "choice"):
            raise ValueError(f"unknown kind {self.kind!r} (log, uniform, int or choice)")
        if self.kind == "choice":
            if not self.choices:
                raise ValueError("choice needs at least one value")
            if self.relative:
                raise ValueError("a choice cannot be relative")
            return
        if self.low is None or self.high is None or not self.low <= self.high:
            raise ValueError(f"needs low <= high, got [{self.low}, {self.high}]")
        if (self.kind == "log" or self.relative) and self.low <= 0:
            raise ValueError(f"a {'relative' if self.relative else 'log'} range needs low > 0, got {self.low}")

    @classmethod
    def log(cls, low: float, high: float, *, relative: bool = False, when: Callable[[Any], bool] | None = None
            ) -> Space:
        return cls("log", float(low), float(high), relative=relative, when=when)

    @classmethod
    def uniform(cls, low: float, high: float, *, relative: bool = False, when: Callable[[Any], bool] | None = None
                ) -> Space:
        return cls("uniform", float(low), float(high), relative=relative, when=when)

    @classmethod
    def int(cls, low: float, high: float, *, relative: bool = False, when: Callable[[Any], bool] | None = None
            ) -> Space:
        return cls("int", low, high, relative=relative, when=when)

    @classmethod
    def choice(cls, *values: Any, when: Callable[[Any], bool] | None = None) -> Space:
        return cls("choice", choices=tuple(values), when=when)

    def resolve(self, start: Any) -> Space:
        """The absolute range around a starting value (self when not relative)."""
        if not self.relative:
            return self
        if not isinstance(start, (int, float)) or isinstance(start, bool) or start <= 0:
            raise ValueError(f"a relative range needs a positive starting value, got {start!r}")
        assert self.low is not None and self.high is not None  # checked in __post_init__
        if self.kind == "int":
            lo = max(1, round(self.low * start))
            return Space("int", lo, max(lo, round(self.high * start)))
        return Space(self.kind, self.low * start, self.high * start)

    def describe(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        name = {"log": "log-uniform", "uniform": "uniform", "int": "integer"}[self.kind]
        rng = f"[{self.low:g}, {self.high:g}]"
        return f"{name} ×{rng} of the start" if self.relative else f"{name} {rng}"


# What every gradient method searches by default: the step size over two decades around the start, and the length
# of training (TOFU's 10 epochs -> 5..15).
TRAIN_SPACE: dict[str, Space] = {"lr": Space.log(0.1, 10.0, relative=True),
                                 "epochs": Space.int(0.5, 1.5, relative=True)}


# ---------------------------------------------------------------------------------------------- the protocol


class Method(ABC):
    """What every method declares. Defaults suit an ordinary method that trains on (question, answer) forget
    records; override what differs.

    - `Config` (class): the method's frozen config; its docstring cites the paper for every default.
    - `self_generated` (class): works from target NAMES only and never trains on forget records (forgetting by
      name accepts only such methods).
    - `required_fields` (class): QA fields every forget record must have (e.g. ("subject",)).
    - `views`: the data views the method trains on (forget, retain, forget_idk, or aligned views of its own);
      may depend on the config, so set it in `__init__` when it does.
    - `needs_retain`: whether a retain set is required; True when "retain" is a view, override for methods that
      need retain data otherwise (ICU's analogous samples).
    - `extras()`: JSON-serialisable results saved beside the model as `<key>.json` (logs, per-round curves).
    - `run_info()`: facts the run resolved that the manifest must record (choices made at run time: which
      teacher objective ran, which layer was chosen for "auto").
    - `search_space` (class): what `obliviate sweep` searches by default, config key (dotted for nested configs)
      -> `Space`; gradient methods inherit lr and epochs (`TRAIN_SPACE`) and add their loss weights."""

    Config: ClassVar[type[Config]]
    self_generated: ClassVar[bool] = False
    required_fields: ClassVar[tuple[str, ...]] = ()
    views: tuple[str, ...] = ("forget",)
    search_space: ClassVar[dict[str, Space]] = {}

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    @property
    def needs_retain(self) -> bool:
        return "retain" in self.views

    def extras(self) -> dict[str, Any]:
        return {}

    def run_info(self) -> dict[str, Any]:
        return {}


Batch = dict[str, dict[str, torch.Tensor]]  # view name -> {input_ids, attention_mask, labels, index}


@dataclass
class TrainContext:
    """What the engine tells a method about the run (available from setup() on as `self.ctx`)."""

    tokenizer: Any
    formatter: Any
    forget: list[Any]
    retain: list[Any]
    scenario: Any = None
    work_dir: Any = None
    device: Any = None


@dataclass
class LossOutput:
    loss: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)


class GradientMethod(Method):
    """A method the shared training loop runs: it supplies `loss`; the hooks below are optional.

    - `reference`: what of θ₀ the loss needs: "none", "logps" (sequence log-probs of `ref_views`, computed once
      before training) or "model" (a frozen copy for on-the-fly passes).
    - `ref_views`: views whose reference log-probs are precomputed.
    - `constant_terms`: logged terms that are not sums over the batch's items (a multiplier, a coefficient): under
      several processes every other term is a share of the step's (summed across ranks), these are the same on
      every rank (averaged).

    Under several processes each rank runs its share of every (micro-)batch, with the denominators (`tok_denom`,
    `seq_denom`) of the whole step: a loss written as a sum over the batch divided by them is a share whose sum
    over the ranks is the single-process loss."""

    Config: ClassVar[type[Config]] = TrainConfig
    reference: Literal["none", "logps", "model"] = "none"
    ref_views: tuple[str, ...] = ()
    constant_terms: ClassVar[tuple[str, ...]] = ()
    search_space: ClassVar[dict[str, Space]] = TRAIN_SPACE

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.ctx: TrainContext | None = None  # set by the engine before setup()

    @abstractmethod
    def loss(self, batch: Batch, model, ref) -> LossOutput:
        """The loss of one (micro-)batch: `batch[view]` holds each view's collated tensors."""

    def setup(self, model, ref, views) -> None:
        """Optional: prepare state before training, with the model still equal to θ₀ (e.g. RMU's control vector)."""

    def trainable(self, model) -> list[torch.nn.Parameter] | None:
        """Optional: restrict the parameters that train (None = all, or the LoRA adapters)."""
        return None

    def after_epoch(self, model, epoch: int, log: dict[str, float]) -> bool:
        """Optional: called after each epoch with its mean loss terms (add to `log` to record more); return True
        to stop early."""
        return False

    def answer_tokens(self, views, view: str, indices: Sequence[int]) -> int:
        """The tokens a token-mean loss of this view averages over, for these items: the engine's per-step
        denominator (`tok_denom`). Every answer token by default; a method that skips some overrides it."""
        return views.n_answer_tokens(view, indices)

    def aligned_views(self, forget: list, retain: list) -> dict[str, list]:
        """Optional: extra views aligned item-by-item with the forget set (e.g. ICU's analogous samples)."""
        return {}

    def retain_batch(self) -> int | None:
        """Optional: retain items drawn per optimiser step (None = as many as the step's forget items)."""
        return None

    def active_forget(self) -> list[int] | None:
        """Optional: the forget indices still in training (None = all), for methods that retire samples."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Optional: method state that must survive a resume (saved with every epoch checkpoint)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Optional: restore what `state_dict` returned."""


@dataclass
class ApplyContext:
    """What a method with its own procedure (`apply`) receives."""

    model: Any
    tokenizer: Any
    forget: list[Any]
    retain: list[Any]
    work_dir: Any
    progress: Progress | None = None
    scenario: Any = None
    save_model: Callable[[Any, str], None] | None = None  # save an intermediate model under a name (sequential modes)
    tokenize: Literal["separate", "joint"] = "separate"  # the input model's tokenisation: build Formatters with it


class ProceduralMethod(Method):
    """A method with its own procedure (editing, iterative rounds): `apply(ctx)` returns the unlearned model; it
    may modify `ctx.model` in place. What it wants saved goes through `extras()`, progress through
    `ctx.progress`."""

    @abstractmethod
    def apply(self, ctx: ApplyContext) -> Any:
        """Unlearn and return the model."""


# ---------------------------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: everything the orchestration asks is answered from the class's declarations."""

    name: str
    cls: type[Method]
    defaults: Mapping[str, Any]
    doc: str

    @property
    def config_cls(self) -> type[Config]:
        return self.cls.Config

    @property
    def self_generated(self) -> bool:
        return self.cls.self_generated

    @property
    def required_fields(self) -> tuple[str, ...]:
        return self.cls.required_fields

    @property
    def is_procedural(self) -> bool:
        return issubclass(self.cls, ProceduralMethod)

    def make_config(self, values: Mapping[str, Any] | None = None) -> Config:
        from obliviate.config import build_config, deep_merge

        return build_config(self.config_cls, deep_merge(self.defaults, values or {}), where=f"method {self.name!r}")

    def create(self, cfg: Config | None = None) -> Method:
        """An instance for this config (default: the registered defaults)."""
        return self.cls(cfg if cfg is not None else self.make_config())

    def needs_retain(self, cfg: Config | None = None) -> bool:
        """Whether this method, with this config, needs a retain set."""
        return self.create(cfg).needs_retain


class MethodRegistry(Registry[MethodInfo]):
    """The method registry. The first lookup imports every module of `obliviate.methods` (recursively), so each
    method registers itself; the order is the modules' (alphabetical), then the order of registration within a
    module, whatever was imported before."""

    def __init__(self) -> None:
        super().__init__("method")
        self._discovered = False

    def discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True  # set first: a module that asks the registry while being imported must not recurse
        try:  # the modules beside this one: base.py lives in the methods package it discovers
            package = __name__.rsplit(".", 1)[0]
            modules = [m.name for m in pkgutil.walk_packages([str(Path(__file__).parent)], package + ".")]
            for name in modules:
                importlib.import_module(name)
        except BaseException:
            self._discovered = False  # a broken module is reported again on the next lookup, not hidden
            raise
        rank = {m: i for i, m in enumerate(modules)}
        seq = {n: i for i, n in enumerate(self._items)}
        self._items = dict(sorted(self._items.items(),
                                  key=lambda kv: (rank.get(kv[1].cls.__module__, len(rank)), seq[kv[0]])))

    def get(self, name: str) -> MethodInfo:
        self.discover()
        return super().get(name)

    def names(self) -> list[str]:
        self.discover()
        return super().names()

    def items(self) -> Iterator[tuple[str, MethodInfo]]:
        self.discover()
        return super().items()

    def __contains__(self, name: object) -> bool:
        self.discover()
        return super().__contains__(name)

    def __len__(self) -> int:
        self.discover()
        return super().__len__()


METHODS = MethodRegistry()


def register_method(name: str, doc: str = "", **defaults: Any) -> Callable[[type], type]:
    """Register a method class under `name`; `defaults` override its config's defaults (one class can serve
    variants such as npo / npo_gd / npo_kl)."""

    def deco(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, (GradientMethod, ProceduralMethod))):
            raise TypeError(f"method {name!r}: {cls!r} must subclass GradientMethod or ProceduralMethod "
                            f"(obliviate.methods.base)")
        config = getattr(cls, "Config", None)  # declared by the class (gradient methods inherit TrainConfig)
        if not (isinstance(config, type) and issubclass(config, Config)):
            raise TypeError(f"method {name!r}: {cls.__name__}.Config must be a Config subclass, got {config!r}")
        first = next(iter((doc or cls.__doc__ or "").strip().splitlines()), "")
        METHODS.add(name, MethodInfo(name, cls, dict(defaults), first))
        return cls

    return deco
