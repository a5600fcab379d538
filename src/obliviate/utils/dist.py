"""Multi-process helpers, a thin layer over accelerate: the one distributed layer, shared with training.

`accelerate.PartialState` is a process-wide singleton that the training engine's `Accelerator` reuses, so
evaluation and training see the same process group. Under `torchrun` / `accelerate launch` (WORLD_SIZE > 1) it
starts the group on first use (gloo on CPU, nccl on GPU); in a plain single process everything here is a no-op."""

from __future__ import annotations

import atexit
import contextlib
import os
from typing import Any


def _state():
    import torch
    from accelerate import PartialState

    # cpu=True where there is no GPU, as the engine's Accelerator asks: accelerate only starts a multi-process
    # CPU (gloo) group when told cpu=True, and the first call fixes the process-wide state for both.
    state = PartialState(cpu=not torch.cuda.is_available())
    global _teardown_registered
    if state.num_processes > 1 and not _teardown_registered:
        # the group is closed before the interpreter unwinds: left to C++ destructors at exit, gloo's worker
        # threads can be destroyed while joinable and abort the rank ("terminate called without an active
        # exception"), failing a run that had finished and written its output
        atexit.register(_close_group)
        _teardown_registered = True
    return state


_teardown_registered = False


def _close_group() -> None:
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def leave(code: int | str | None) -> None:
    """End this process with exit `code` once its command is done, when it is one rank of several; return (doing
    nothing) in a process without a group of two or more, which exits as Python does.

    A rank that succeeded waits for the others (a barrier), every rank closes the group, flushes its output and
    exits at once. With only the group closed at exit (the `atexit` handler above, which stays for API users), a
    rank of a resumed FSDP run aborted after its work was done ("terminate called without an active exception",
    SIGABRT after its last epoch: once in CI; not reproduced here in 40 plain and 21 resumed FSDP runs) and the
    launcher reported the run as failed. The message is the one gloo's threads give when they are destroyed still
    running (pytorch/pytorch#190489); a rank that exits at once runs neither Python's finalisation nor the C++
    destructors after it. Everything obliviate writes is complete and renamed into place before this, and the
    streams are flushed."""
    import logging
    import sys

    import torch.distributed as tdist

    if not (tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1):
        return
    if isinstance(code, str):  # sys.exit("message"): printed, exit 1, as Python does
        print(code, file=sys.stderr)
    status = code if isinstance(code, int) else 0 if code is None else 1
    if status == 0:
        with contextlib.suppress(Exception):  # a peer that failed has left: its failure is the launcher's to report
            barrier()
    with contextlib.suppress(Exception):
        _close_group()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def world_size() -> int:
    return _state().num_processes


def rank() -> int:
    return _state().process_index


def is_main() -> bool:
    return _state().is_main_process


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj` (any picklable object), in rank order; a one-element list in a single process."""
    from accelerate.utils import gather_object

    # gather_object concatenates the ranks' lists, so each rank sends a one-element list
    return list(gather_object([obj]))


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` (any picklable object) on every rank; `obj` itself in a single process."""
    if world_size() == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj], from_process=src)[0]


def barrier() -> None:
    _state().wait_for_everyone()


def require_single_process(command: str) -> None:
    """Refuse, before any work, a command that runs in one process when it was started under torchrun /
    accelerate launch (every rank would do all of it and write the same files)."""
    n = world_size()
    if n > 1:
        from obliviate.errors import ConfigError

        raise ConfigError(f"{command} runs in one process, not across {n}: run it without torchrun / accelerate "
                          f"launch (unlearn and eval are the commands that run under several processes)")


# ---------------------------------------------------------------------------------------------- FSDP

FSDP_ENV = {  # what `accelerate launch` sets from an FSDP config file (accelerate's own names): FSDP2, one unit per
    # decoder layer (the model's `_no_split_modules`), sharded checkpoints, parameters freed after each forward
    "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT", "FSDP_RESHARD_AFTER_FORWARD": "true",
    "FSDP_CPU_RAM_EFFICIENT_LOADING": "false", "FSDP_ACTIVATION_CHECKPOINTING": "false",
}


def fsdp_requested() -> bool:
    """Whether this process was asked to shard its training with FSDP (`accelerate launch` with an FSDP config,
    or `--fsdp`, which sets the same environment)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


@contextlib.contextmanager
def fsdp_env(on: bool = True):
    """FSDP on for the enclosed run, as an FSDP config file given to `accelerate launch` would (settings the
    environment already holds are kept; those set here are removed again on exit, so a later run in the same
    process is not sharded unless asked). The training engine's Accelerator must be built inside."""
    added = [k for k in FSDP_ENV if on and k not in os.environ]
    for k in added:
        os.environ[k] = FSDP_ENV[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def fsdp_config_yaml(processes: int) -> str:
    """The accelerate config file equivalent to this process's FSDP settings, for `accelerate launch
    --config_file`."""
    import torch

    keys = {"FSDP_VERSION": "fsdp_version", "FSDP_AUTO_WRAP_POLICY": "fsdp_auto_wrap_policy",
            "FSDP_STATE_DICT_TYPE": "fsdp_state_dict_type", "FSDP_RESHARD_AFTER_FORWARD": "fsdp_reshard_after_forward",
            "FSDP_CPU_RAM_EFFICIENT_LOADING": "fsdp_cpu_ram_efficient_loading",
            "FSDP_ACTIVATION_CHECKPOINTING": "fsdp_activation_checkpointing"}
    gpu = torch.cuda.is_available()
    lines = ["compute_environment: LOCAL_MACHINE", "distributed_type: FSDP", f"num_processes: {processes}",
             "num_machines: 1", "machine_rank: 0", f"use_cpu: {'false' if gpu else 'true'}",
             f"mixed_precision: '{os.environ.get('ACCELERATE_MIXED_PRECISION', 'bf16' if gpu else 'no')}'",  # YAML: no = false
             "fsdp_config:"]
    lines += [f"  {name}: {os.environ.get(env, FSDP_ENV[env])}" for env, name in keys.items()]
    return "\n".join(lines) + "\n"


_cpu_fsdp = False  # this process's accelerate state was switched to FSDP on CPU by `accelerator()`


def accelerator():
    """The training engine's Accelerator. Under FSDP on CPU processes (gloo) it runs accelerate's own FSDP2 path:
    accelerate 1.16 turns FSDP on only for accelerator devices and runs DDP on CPU, so the plugin accelerate would
    build from the environment is installed into its state here; the sharding, the sharded checkpoints and the
    state-dict gathering stay accelerate's and torch's (`fully_shard`), as on GPU."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    global _cpu_fsdp

    def switch(kind: DistributedType, plugin: FullyShardedDataParallelPlugin | None) -> None:
        acc.state.distributed_type = kind
        PartialState._shared_state["distributed_type"] = kind
        acc.state.fsdp_plugin = plugin

    _state()  # the process group, with its teardown at exit, before the Accelerator that shares it
    acc = Accelerator(cpu=not torch.cuda.is_available())
    if _cpu_fsdp and not fsdp_requested():  # accelerate's state outlives a run: an earlier run's FSDP is undone
        switch(DistributedType.MULTI_CPU, None)
        _cpu_fsdp = False
    if fsdp_requested() and acc.distributed_type == DistributedType.MULTI_CPU:
        plugin = FullyShardedDataParallelPlugin()  # its settings from the FSDP_* environment, as accelerate reads them
        if plugin.fsdp_version != 2:
            from obliviate.errors import ConfigError

            raise ConfigError(f"FSDP version {plugin.fsdp_version} on CPU: obliviate's CPU path runs FSDP2 only; set "
                              f"fsdp_version: 2 in the accelerate config (or FSDP_VERSION=2)")
        switch(DistributedType.FSDP, plugin)
        _cpu_fsdp = True
        return_large_blocks()
    return acc


def return_large_blocks(threshold: int = 128 * 1024) -> None:
    """Have glibc hand blocks above `threshold` back to the system when freed. FSDP gathers every layer's weights
    and gradients and frees them again, step after step; glibc's default raises its mmap threshold after such
    frees and keeps later blocks in its heap, where they stay resident: measured on SmolLM2-135M, 2 CPU processes
    peaked at 5.5 GB each this way, 2.8 GB with the threshold fixed (benchmarks/memory.py). The same as starting
    the process with MALLOC_MMAP_THRESHOLD_; a no-op where the C library has no mallopt."""
    import ctypes
    import ctypes.util

    M_MMAP_THRESHOLD = -3  # glibc's malloc.h
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c")).mallopt(M_MMAP_THRESHOLD, threshold)


def is_fsdp(acc) -> bool:
    from accelerate.utils import DistributedType

    return acc.distributed_type == DistributedType.FSDP
