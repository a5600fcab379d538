"""Peak memory of a run: resident set size on CPU (Linux VmHWM, reset at the start), allocator peak on CUDA."""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path

import torch


def reset_peak() -> None:
    """Reset the process's peak-RSS counter where the kernel allows it (writing 5 to clear_refs)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_bytes() -> int:
    """Peak memory since the last reset: the CUDA allocator's peak when on GPU, else peak RSS."""
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return int(torch.cuda.max_memory_allocated())
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
