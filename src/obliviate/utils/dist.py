"""Multi-process helpers, a thin layer over accelerate: the one distributed layer, shared with training.

`accelerate.PartialState` is a process-wide singleton that the training engine's `Accelerator` reuses, so
evaluation and training see the same process group. Under `torchrun` / `accelerate launch` (WORLD_SIZE > 1) it
starts the group on first use (gloo on CPU, nccl on GPU); in a plain single process everything here is a no-op."""

from __future__ import annotations

from typing import Any


def _state():
    import torch
    from accelerate import PartialState

    # cpu=True where there is no GPU, as the engine's Accelerator asks: accelerate only starts a multi-process
    # CPU (gloo) group when told cpu=True, and the first call fixes the process-wide state for both.
    return PartialState(cpu=not torch.cuda.is_available())


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
