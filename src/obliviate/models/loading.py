"""Loading any Hugging Face causal LM (hub id or local path) with its tokenizer, and model fingerprints."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from obliviate.errors import ModelError


def is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def load_tokenizer(name_or_path: str | os.PathLike[str]):
    from transformers import AutoTokenizer

    src = str(name_or_path)
    _check_source(src)
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


def load_model(name_or_path: str | os.PathLike[str], dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """Load a causal LM for evaluation or unlearning (fp32 on CPU: bf16 measured 30x slower there)."""
    from transformers import AutoModelForCausalLM

    src = str(name_or_path)
    _check_source(src)
    quiet_transformers()
    try:
        model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as e:
        raise ModelError(f"{src}: could not load a causal LM ({type(e).__name__}: {_first_line(e)})") from None
    return model.to(device).eval()


def load_model_and_tokenizer(name_or_path: str | os.PathLike[str], dtype: torch.dtype = torch.float32, device: str = "cpu"):
    return load_model(name_or_path, dtype, device), load_tokenizer(name_or_path)


def _check_source(src: str) -> None:
    p = Path(src).expanduser()
    looks_local = src.startswith((".", "/", "~")) or p.exists() or os.sep in src.rstrip("/").split("/", 1)[-1]
    if p.exists():
        if not is_model_dir(p):
            raise ModelError(f"{src} is not a model directory (no config.json); give a directory written by "
                             f"save_pretrained / `obliviate build`, or a hub model id")
        return
    if looks_local or src.count("/") > 1:
        raise ModelError(f"{src}: no such model directory; check the path, or give a hub model id like 'owner/name'")
    if os.environ.get("HF_HUB_OFFLINE") == "1" and not _in_hub_cache(src):
        raise ModelError(f"{src}: not a local directory and the hub is offline (HF_HUB_OFFLINE=1); download it "
                         f"first or give a local path")


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


def _first_line(e: Exception) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else ""


def fingerprint(model: torch.nn.Module, length: int = 16) -> str:
    """Hash of the model's architecture and weights, for cache keys and manifests.

    Small models (< 512 MiB of parameters) are hashed completely; larger ones by shapes plus a strided sample
    of every tensor, which still changes with any real training update but keeps hashing a 7B model to seconds.
    """
    h = hashlib.sha256()
    cfg = getattr(model, "config", None)
    if cfg is not None:
        h.update(cfg.to_json_string(use_diff=False).encode())
    total = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    sample = total > (512 << 20)
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        flat = t.detach().reshape(-1)
        if sample and flat.numel() > 4096:
            flat = flat[:: max(1, flat.numel() // 4096)]
        h.update(flat.contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:length]
