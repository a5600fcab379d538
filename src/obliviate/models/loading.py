"""Loading any Hugging Face causal LM (hub id or local path) with its tokenizer, and model fingerprints."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from obliviate.errors import ModelError
from obliviate.utils.threads import available_cores


def is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def load_tokenizer(name_or_path: str | os.PathLike[str]):
    from transformers import AutoTokenizer

    src = check_source(str(name_or_path))
    try:
        tok = AutoTokenizer.from_pretrained(src)
    except Exception as e:
        raise ModelError(f"{src}: could not load a tokenizer ({type(e).__name__}: {_first_line(e)})") from None
    return ensure_pad_token(tok)


def ensure_pad_token(tok):
    """A tokenizer without a pad token is handled, not an error: pad with EOS (labels mask padding anyway)."""
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise ModelError("the tokenizer has neither a pad nor an eos token; add one with tokenizer.add_special_tokens")
        tok.pad_token = tok.eos_token
    return tok


def quiet_transformers() -> None:
    """transformers' per-call 'Loading weights' bars drown the tool's own progress output."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_dtype() -> torch.dtype:
    """The dtype models load in: `OBLIVIATE_DTYPE` (float32, bfloat16 or float16), float32 when unset (on CPU
    bf16 was measured 30x slower; on a GPU bfloat16 halves the memory)."""
    name = os.environ.get("OBLIVIATE_DTYPE", "float32")
    if name not in DTYPES:
        raise ModelError(f"OBLIVIATE_DTYPE={name!r}: choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def default_device() -> str:
    """The device models load on: `OBLIVIATE_DEVICE` (cpu, cuda, cuda:1, ...) if set; else this process's GPU
    when CUDA is available (cuda:LOCAL_RANK under torchrun / accelerate launch); else cpu."""
    dev = os.environ.get("OBLIVIATE_DEVICE")
    if dev:
        try:
            torch.device(dev)
        except RuntimeError:
            raise ModelError(f"OBLIVIATE_DEVICE={dev!r} is not a torch device; use cpu, cuda or cuda:N") from None
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise ModelError(f"OBLIVIATE_DEVICE={dev!r} but torch sees no CUDA device; unset it to run on cpu")
        return dev
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"


def load_model(name_or_path: str | os.PathLike[str], dtype: torch.dtype | None = None, device: str | None = None):
    """Load a causal LM for evaluation or unlearning, in `default_dtype()` on `default_device()` unless given."""
    from transformers import AutoModelForCausalLM

    dtype = dtype or default_dtype()
    device = device or default_device()
    src = check_source(str(name_or_path))
    quiet_transformers()
    try:
        model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as e:
        raise ModelError(f"{src}: could not load a causal LM ({type(e).__name__}: {_first_line(e)})") from None
    return model.to(device).eval()


def load_model_and_tokenizer(name_or_path: str | os.PathLike[str], dtype: torch.dtype | None = None,
                             device: str | None = None):
    return load_model(name_or_path, dtype, device), load_tokenizer(name_or_path)


def check_source(src: str) -> str:
    """Validate a model argument and return what to hand `from_pretrained`: the argument itself, or for a `.gguf`
    file its float32 model directory (converted on first use, cached by the file's hash; models/gguf_convert.py)."""
    if src.lower().endswith(".gguf"):
        from obliviate.models.gguf_convert import convert_gguf

        return str(convert_gguf(src))
    p = Path(src).expanduser()
    looks_local = src.startswith((".", "/", "~")) or p.exists() or os.sep in src.rstrip("/").split("/", 1)[-1]
    if p.exists():
        if not is_model_dir(p):
            raise ModelError(f"{src} is not a model directory (no config.json); give a directory written by "
                             f"save_pretrained / `obliviate build`, a .gguf file, or a hub model id")
        return src
    if looks_local or src.count("/") > 1:
        raise ModelError(f"{src}: no such model directory; check the path, or give a hub model id like 'owner/name'")
    if os.environ.get("HF_HUB_OFFLINE") == "1" and not _in_hub_cache(src):
        raise ModelError(f"{src}: not a local directory and the hub is offline (HF_HUB_OFFLINE=1); download it "
                         f"first or give a local path")
    return src


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


def _first_line(e: Exception) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else ""


# Config fields that do not change what the weights compute: where the model was loaded from, which library
# version wrote it, which class names a save records, and flags that only shape the returned objects. The dtype is
# left out because the weights' own dtype is hashed.
_NOT_ARCHITECTURE = ("_name_or_path", "_commit_hash", "transformers_version", "architectures", "dtype", "torch_dtype",
                     "use_cache", "return_dict", "output_attentions", "output_hidden_states")


def architecture_config(model: torch.nn.Module) -> dict:
    """The model's config as a dict, less the fields that do not affect its outputs (`_NOT_ARCHITECTURE` and
    every private `_` field), plus the model's class name."""
    cfg = getattr(model, "config", None)
    d = cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else {}
    out = {k: v for k, v in d.items() if k not in _NOT_ARCHITECTURE and not k.startswith("_")}
    out["class"] = type(model).__name__
    return out


def fingerprint(model: torch.nn.Module, length: int = 16, threads: int | None = None) -> str:
    """Exact hash of the model's architecture and weights, for cache keys and manifests.

    sha256 of: the architecture config (`architecture_config`: no paths, no library versions, so the same
    weights saved in two directories fingerprint alike), then per state-dict entry in name order its name, shape,
    dtype and the sha256 of EVERY byte of its data: any change to any element changes the fingerprint. Tensors
    are hashed in parallel threads (hashlib releases the GIL), a tensor that aliases an earlier one (tied
    embeddings) once. Measured on this project's shared 2-core CPU: SmolLM2-135M in fp32 (513 MiB of distinct
    weights) in 0.51-0.54 s, random tensors of its shapes in 0.44-0.49 s (fp32) and 0.24 s (bf16); sha256 runs at
    ~1-1.6 GB/s per core, so a 7B bf16 model (14 GB) is ~10 s on one core, divided by the threads available."""
    from concurrent.futures import ThreadPoolExecutor

    sd = model.state_dict()
    names = sorted(sd)
    first: dict[tuple, str] = {}  # storage identity -> first name holding it
    alias: dict[str, str] = {}
    for n in names:
        t = sd[n]
        ident = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()),
                 t.dtype) if t.numel() else None
        if ident is not None and ident in first:
            alias[n] = first[ident]
        elif ident is not None:
            first[ident] = n
    todo = [n for n in names if n not in alias]
    workers = threads or min(8, available_cores())
    with ThreadPoolExecutor(max(1, workers)) as pool:
        digests = dict(zip(todo, pool.map(lambda n: _tensor_digest(sd[n]), todo), strict=True))
    h = hashlib.sha256(json.dumps(architecture_config(model), sort_keys=True, default=str).encode())
    for n in names:
        t = sd[n]
        h.update(f"{n}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(f"alias:{alias[n]}".encode() if n in alias else digests[n])
    return h.hexdigest()[:length]


def _tensor_digest(t: torch.Tensor) -> bytes:
    """sha256 of every byte of the tensor's data (row-major), without copying a contiguous CPU tensor."""
    flat = t.detach().reshape(-1).contiguous().cpu()
    return hashlib.sha256(flat.view(torch.uint8).numpy().data if flat.numel() else b"").digest()
