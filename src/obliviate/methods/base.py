"""How a method is declared: a frozen config and a small class registered with one decorator.

Gradient methods supply only `loss(batch, model, ref)`; the one training loop (`engine.py`) owns optimisation,
accumulation, checkpointing, logging and progress. Methods with their own procedure (editing, iterative rounds)
implement `apply(ctx)` instead. Methods share code through functions (`losses.py`), never by subclassing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
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
    1 warm-up epoch, weight decay 0.01, effective batch 32). `batch_size` is per optimiser step; with
    `grad_accum` > 1 each step accumulates that many micro-batches of batch_size / grad_accum."""

    lr: float = Field(1e-5, gt=0, description="peak learning rate (AdamW)")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1, description="forget examples per optimiser step (effective batch)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimiser step")
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up length, then linear decay to 0")
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    max_length: int = Field(512, ge=16)
    seed: int = 0
    template: Literal["auto", "plain", "chat"] = "auto"
    lora: LoraSpec | None = None

    @model_validator(mode="after")
    def _accum_divides(self):
        if self.grad_accum > self.batch_size:
            raise ValueError(f"grad_accum={self.grad_accum} exceeds batch_size={self.batch_size}: each micro-batch "
                             f"needs at least one example")
        return self


@dataclass
class MethodInfo:
    """What the engine and the CLI need to know about a registered method."""

    name: str
    cls: type
    config_cls: type[Config]
    defaults: dict[str, Any]
    doc: str

    def make_config(self, values: dict[str, Any] | None = None) -> Config:
        from obliviate.config import build_config, deep_merge

        return build_config(self.config_cls, deep_merge(self.defaults, values or {}), where=f"method {self.name!r}")


METHODS: Registry[MethodInfo] = Registry("method")


def register_method(name: str, doc: str = "", **defaults: Any) -> Callable[[type], type]:
    """Register a method class under `name`; `defaults` override its config's defaults (one class can serve
    variants such as npo / npo_gd / npo_kl)."""

    def deco(cls: type) -> type:
        first = (doc or cls.__doc__ or "").strip().splitlines()[0]
        METHODS.add(name, MethodInfo(name, cls, cls.Config, defaults, first))
        return cls

    return deco


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


class GradientMethod:
    """Marker base holding the class attributes the engine reads; methods override them. (Shared behaviour
    lives in functions, not here.)"""

    Config: ClassVar[type[Config]] = TrainConfig
    views: ClassVar[tuple[str, ...]] = ("forget",)  # data views each batch carries: forget, retain, forget_idk
    reference: ClassVar[Literal["none", "logps", "model"]] = "none"
    ref_views: ClassVar[tuple[str, ...]] = ()  # views whose reference sequence log-probs are precomputed

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.ctx: TrainContext | None = None  # set by the engine before setup()

    def setup(self, model, ref, views) -> None:
        """Optional: prepare state before training, with the model still equal to θ₀ (e.g. RMU's control vector)."""

    def trainable(self, model) -> list[torch.nn.Parameter] | None:
        """Optional: restrict the parameters that train (None = all, or the LoRA adapters)."""
        return None

    def loss(self, batch: Batch, model, ref) -> LossOutput:
        raise NotImplementedError

    def after_epoch(self, model, epoch: int, log: dict[str, float]) -> bool:
        """Optional: called after each epoch with its mean loss terms (add to `log` to record more); return True
        to stop early."""
        return False

    def aligned_views(self, forget: list, retain: list) -> dict[str, list]:
        """Optional: extra views aligned item-by-item with the forget set (e.g. ICU's analogous samples)."""
        return {}

    def active_forget(self) -> list[int] | None:
        """Optional: the forget indices still in training (None = all), for methods that retire samples."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Optional: method state that must survive a resume (saved with every epoch checkpoint)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass
class ApplyContext:
    """What a method with its own procedure (`apply`) receives. `extras` collects what it wants saved next to
    the model (per-epoch / per-round logs as JSON-serialisable objects, written to `<name>.json`)."""

    model: Any
    tokenizer: Any
    forget: list[Any]
    retain: list[Any]
    work_dir: Any
    progress: Callable[[dict[str, Any]], None] | None = None
    scenario: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    save_model: Callable[[Any, str], None] | None = None  # save an intermediate model under a name (sequential modes)
