"""How many threads torch computes with: `OBLIVIATE_THREADS` when set (the whole command's budget, shared by the
processes it starts), otherwise the cores this process may run on (METHODS.md, "This CPU").

Commands that run jobs side by side (`bench --jobs N`, the build's target and retain models) give each job an
equal share of the budget, so two obliviate commands started together can be held to one core each with
`OBLIVIATE_THREADS=1` (two busy threads per core slow training 3-7x on this machine)."""

from __future__ import annotations

import os

from obliviate.errors import ConfigError

ENV = "OBLIVIATE_THREADS"


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_budget() -> int:
    """`OBLIVIATE_THREADS` (a positive integer) when set, else `available_cores()`."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return available_cores()
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{ENV}={raw!r} is not a positive whole number of threads; set it to e.g. 1 or 2, or unset "
                          f"it to use every available core ({available_cores()})")
    return n


def per_job(jobs: int) -> int:
    """Each of `jobs` side-by-side jobs' share of the budget (at least one thread)."""
    return max(1, thread_budget() // max(1, jobs))


def apply_budget() -> None:
    """Hold this process's torch to `OBLIVIATE_THREADS` when it is set (torch's own default otherwise)."""
    if os.environ.get(ENV, "").strip():
        import torch

        torch.set_num_threads(thread_budget())
