"""GGUF files made loadable: a `.gguf` file is checked, dequantised ONCE to float32 by transformers, and saved as
an ordinary safetensors model directory (tokenizer and chat template included) under
`cache_root()/bases/<name>-<sha256[:16] of the file>`, so every later load is a plain `from_pretrained` of a
directory (about a second) instead of a GGUF parse (about 30 s: transformers reads the header three times). The
directory records where it came from in `base.json`.

The header is scanned here rather than by the `gguf` package's reader: that one turns every tokenizer string into
numpy views (about 6 s for a 49k vocabulary), while checking the architecture and the file's length needs a scan.
This module does not import models/loading.py (which calls `convert_gguf` for a `--model x.gguf`)."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from obliviate.errors import ModelError
from obliviate.utils.cache import exclusive
from obliviate.utils.io import atomic_dir, atomic_write_json, cache_root

log = logging.getLogger(__name__)
BASE_JSON = "base.json"

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# general.architecture -> transformers' name, where llama.cpp spells it differently (transformers'
# load_gguf_checkpoint applies the same renames before looking the architecture up).
_ARCH_ALIASES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss", "minimax-m2": "minimax_m2",
                 "t5encoder": "t5"}


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    version: int
    architecture: str
    name: str | None
    n_layers: int | None  # <arch>.block_count
    file_type: str | None  # e.g. "Q4_1", from general.file_type
    n_tensors: int
    size: int  # bytes on disk
    needed: int  # bytes the header's tensors span (> size: the file is truncated)


class _Truncated(Exception):
    pass


def _read(f: BinaryIO, n: int) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise _Truncated
    return b


def _unpack(f: BinaryIO, fmt: str):
    return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]


def _string(f: BinaryIO, limit: int) -> bytes:
    n = _unpack(f, "<Q")
    if n > limit:
        raise ValueError(f"a string of {n} bytes in a {limit}-byte file")
    return _read(f, n)


def _value(f: BinaryIO, vtype: int, limit: int, keep: bool):
    """Read (or, for arrays when not `keep`, skip) one metadata value of GGUF type `vtype`."""
    if vtype in _SCALAR:
        return _unpack(f, _SCALAR[vtype])
    if vtype == _STRING:
        return _string(f, limit).decode("utf-8", "replace")
    if vtype == _ARRAY:
        etype, count = _unpack(f, "<I"), _unpack(f, "<Q")
        if count > limit:
            raise ValueError(f"an array of {count} items in a {limit}-byte file")
        if etype in _SCALAR and not keep:
            f.seek(count * struct.calcsize(_SCALAR[etype]), os.SEEK_CUR)
            return None
        items = [_value(f, etype, limit, keep) for _ in range(count)]
        return items if keep else None
    raise ValueError(f"unknown metadata value type {vtype}")


def read_gguf_info(path: str | os.PathLike[str]) -> GGUFInfo:
    """Scan a GGUF file's header: architecture, layer count, quantisation, and whether every tensor the header
    declares lies inside the file. Raises ModelError for a missing, foreign, corrupt or truncated file."""
    import gguf  # for the quantisation block sizes

    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelError(f"{path}: no such GGUF file; check the path")
    size = p.stat().st_size
    meta: dict[str, object] = {}
    try:
        with open(p, "rb", buffering=1 << 20) as f:
            magic = f.read(4)
            if magic != b"GGUF":
                raise ModelError(f"{p}: not a GGUF file (it starts with {magic!r}, not b'GGUF'); give a .gguf model "
                                 f"file, a model directory or a hub id")
            version = _unpack(f, "<I")
            if version not in (2, 3):
                raise ModelError(f"{p}: GGUF version {version} is not supported (expected 2 or 3); re-export it with "
                                 f"a current llama.cpp (convert_hf_to_gguf.py)")
            n_tensors, n_kv = _unpack(f, "<Q"), _unpack(f, "<Q")
            if n_tensors > size or n_kv > size:
                raise ValueError(f"{n_tensors} tensors and {n_kv} metadata entries in a {size}-byte file")
            for _ in range(n_kv):
                key = _string(f, size).decode("utf-8", "replace")
                vtype = _unpack(f, "<I")
                meta[key] = _value(f, vtype, size, keep=False)
            ends = []
            for _ in range(n_tensors):
                _string(f, size)
                n_dims = _unpack(f, "<I")
                dims = [_unpack(f, "<Q") for _ in range(n_dims)]
                qtype, offset = _unpack(f, "<I"), _unpack(f, "<Q")
                block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(qtype)]
                ends.append(offset + math.prod(dims) // block * nbytes)
            align = int(meta.get("general.alignment") or gguf.GGUF_DEFAULT_ALIGNMENT)
            data_start = -(-f.tell() // align) * align
    except _Truncated:
        raise ModelError(f"{p}: truncated GGUF file (it ends inside its header, at {size} bytes); download or copy "
                         f"it again") from None
    except (ValueError, KeyError, struct.error) as e:
        raise ModelError(f"{p}: corrupt GGUF header ({e}); download or copy the file again") from None
    needed = data_start + max(ends, default=0)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise ModelError(f"{p}: corrupt GGUF header (no general.architecture); download or copy the file again")
    ftype = meta.get("general.file_type")
    try:
        ftype_name = gguf.LlamaFileType(ftype).name.removeprefix("MOSTLY_") if ftype is not None else None
    except ValueError:
        ftype_name = f"file type {ftype}"
    blocks = meta.get(f"{arch}.block_count")
    name = meta.get("general.name")
    return GGUFInfo(p, version, arch, name if isinstance(name, str) else None,
                    int(blocks) if isinstance(blocks, int) else None, ftype_name, n_tensors, size, needed)


def check_gguf(path: str | os.PathLike[str]) -> GGUFInfo:
    """`read_gguf_info` plus the two checks a load needs: the file is whole, and transformers can load its
    architecture."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    info = read_gguf_info(path)
    if info.needed > info.size:
        raise ModelError(f"{info.path}: truncated GGUF file ({info.size} bytes; its {info.n_tensors} tensors need "
                         f"{info.needed}); download or copy it again")
    supported = sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))
    arch = _ARCH_ALIASES.get(info.architecture, info.architecture)
    if arch not in supported:
        raise ModelError(f"{info.path}: GGUF architecture {info.architecture!r} cannot be loaded by transformers "
                         f"(it reads {', '.join(supported)}); use the model's original weights (a hub id or a "
                         f"model directory) instead")
    return info


# ---------------------------------------------------------------------------------------------------- conversion

_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime) in this process (a 100 MB file takes ~0.3 s)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")[:48] or "gguf"


def cache_dir(gguf: Path, name: str | None) -> Path:
    return cache_root() / "bases" / f"{name or _slug(gguf.stem)}-{file_sha256(gguf)[:16]}"


def is_converted(d: Path) -> bool:
    return (d / "config.json").is_file() and (d / BASE_JSON).is_file()


def convert_gguf(path: str | os.PathLike[str], name: str | None = None) -> Path:
    """The float32 safetensors directory of a GGUF file: converted on first use, then served from the cache
    (`cache_root()/bases/<name>-<sha256[:16]>`). `name` defaults to the file's stem."""
    gguf = Path(path).expanduser()
    if not gguf.is_file():
        raise ModelError(f"{path}: no such GGUF file; check the path")
    dest = cache_dir(gguf, name)
    if is_converted(dest):
        return dest
    if name is None:  # the same file already converted under a registered base's name (a --model path to it)
        done = [d for d in sorted(dest.parent.glob(f"*-{file_sha256(gguf)[:16]}")) if is_converted(d)]
        if done:
            return done[0]
    with exclusive(dest):
        if is_converted(dest):  # another process converted it while we waited
            return dest
        info = check_gguf(gguf)
        log.warning("dequantising %s (%s, %s) to float32, once (~30-45 s on 2 cores; later loads read %s)",
                    gguf.name, info.architecture, info.file_type, dest)
        t0 = time.perf_counter()
        with atomic_dir(dest, overwrite=True) as tmp:
            meta = _dequantise(gguf, tmp)
            meta.update(name=name or gguf.stem, source=str(gguf.resolve()), gguf_sha256=file_sha256(gguf),
                        gguf_bytes=info.size, quantisation=f"dequantised from {info.file_type} to float32",
                        convert_seconds=round(time.perf_counter() - t0, 1))
            atomic_write_json(tmp / BASE_JSON, meta)
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is as readable as any other
    return dest


def _dequantise(gguf: Path, out: Path) -> dict:
    """Load a GGUF with transformers (which dequantises every tensor) and save it as a normal model directory."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelError(f"{gguf}: transformers could not load this GGUF ({type(e).__name__}: {msg}); use the "
                         f"model's original weights (a hub id or a model directory) instead") from None
    # The weights are float32 now; drop the GGUF "quantizer" so save_pretrained writes them (it refuses to
    # serialise a model it believes is still GGUF-quantised) and the saved config loads as a plain model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)
    if not getattr(tok, "chat_template", None):
        log.warning("%s carries no chat template; prompts will use the plain template", gguf.name)
    return {"architecture": model.config.model_type, "n_layers": model.config.num_hidden_layers,
            "n_params": sum(p.numel() for p in model.parameters()), "dtype": "float32",
            "transformers": transformers.__version__}
