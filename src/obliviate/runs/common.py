"""What every run shares: resolving a model argument, a scenario, a reference, and the stamp a run leaves
(library versions, git revision)."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from obliviate.data.scenarios import Scenario, get_scenario
from obliviate.errors import ConfigError, ModelError
from obliviate.eval import openunlearning
from obliviate.eval.suite import EvalConfig, Reference, load_reference_eval, make_runner, reference_from_runner
from obliviate.models.bases import BASES, resolve_base
from obliviate.models.loading import check_source, is_model_dir, load_model_and_tokenizer
from obliviate.utils.io import read_json

log = logging.getLogger(__name__)

ModelLike = str | os.PathLike[str] | tuple[Any, Any]


def load_scenario(scenario: str | Scenario, data: str | None = None, **options: Any) -> Scenario:
    """A scenario by registry name (`synthetic`, `tofu`, `tofu-mini`) or an already-built Scenario."""
    if isinstance(scenario, Scenario):
        return scenario
    if data is not None:
        if not scenario.startswith("tofu"):
            raise ConfigError(f"--data applies to the TOFU scenarios, not {scenario!r}")
        options = {**options, "data": data}
    return get_scenario(scenario, **options)


def _source(model: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """What a model argument loads from: a base name (`obliviate ls bases`) resolved, anything else as given."""
    return resolve_base(model) if str(model) in BASES else model


def check_model(model: ModelLike) -> None:
    """Fail now, with load_model's error, on a model argument that cannot load (an in-memory pair always can)."""
    if not isinstance(model, tuple):
        check_source(str(_source(model)))


def load_model(model: ModelLike, name: str = "model") -> tuple[Any, Any, str]:
    """(model, tokenizer, label) from a base name (`obliviate ls bases`), a directory, a `.gguf` file or a hub id,
    or from an in-memory (model, tokenizer) pair."""
    if isinstance(model, tuple):
        return model[0], model[1], getattr(model[0], "name_or_path", name)
    return (*load_model_and_tokenizer(_source(model)), str(model))


def resolve_reference(reference: ModelLike | None, scen: Scenario, cfg: EvalConfig) -> Reference | None:
    """The retain model's per-item values: from a saved evaluation (a directory holding obliviate's eval.json, or
    OpenUnlearning's TOFU_EVAL.json: the file itself or a directory holding it; a saved evaluation wins over a model
    in the same directory, eval.json over TOFU_EVAL.json), or computed from a model (directory, hub id or
    (model, tokenizer) pair)."""
    if reference is None:
        return None
    if not isinstance(reference, tuple):
        p = Path(reference)
        if p.is_file() and p.name == "eval.json":  # the file itself instead of its directory
            p = p.parent
        if (p / "eval.json").is_file():
            ref = load_reference_eval(p, scen)
            _warn_other_conventions(p / "eval.json", cfg)
            return ref
        if p.is_dir() and (p / openunlearning.EVAL_FILE).is_file():
            p = p / openunlearning.EVAL_FILE
        if p.is_file() and p.suffix == ".json":
            return openunlearning.load_reference(p, scen)
        if p.is_file():
            raise ModelError(f"--reference {p} is a file; give the retain model's directory, the directory of its "
                             f"saved evaluation (holding eval.json) or OpenUnlearning's {openunlearning.EVAL_FILE} "
                             f"of it")
        if p.is_dir() and not is_model_dir(p):
            raise ModelError(f"--reference {p}: neither a model directory nor a saved evaluation (no config.json, no "
                             f"eval.json, no {openunlearning.EVAL_FILE})")
    m, tok, name = load_model(reference, "reference")
    return reference_from_runner(make_runner(m, tok, cfg, name, source=reference), scen, cfg)


def _warn_other_conventions(path: Path, cfg: EvalConfig) -> None:
    """A saved reference evaluated under another `compat` than this evaluation: its truth ratios and Min-K% AUC were
    computed under other conventions (tokenisation, OpenUnlearning's 1e-10s), so forget quality and privleak mix
    the two; said, not refused (the user may mean it)."""
    try:
        theirs = read_json(path).get("compat", "none")
    except (OSError, ValueError, AttributeError):
        return  # load_reference_eval has already read it; nothing more to say
    if theirs != cfg.compat:
        log.warning("the reference %s was evaluated with compat=%s, this evaluation uses compat=%s: forget quality "
                    "and privleak compare numbers computed under different conventions; evaluate the retain model "
                    "with the same --compat", path, theirs, cfg.compat)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    import accelerate
    import peft
    import torch
    import transformers

    return {"obliviate": version("obliviate"), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "accelerate": accelerate.__version__, "python": platform.python_version()}


def git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def save_model(model, tokenizer, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
