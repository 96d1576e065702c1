"""The processes of a distributed launch (`torchrun`, `accelerate launch`): which one is the main one, letting it go
first, and handing its decisions to the others.

The launchers tell each process its place through RANK / WORLD_SIZE (and LOCAL_RANK); without them, a plain
`vigie train` is one process, the main one, and nothing here imports torch. With them, the process group is
accelerate's `PartialState`, formed on first use: the transformers Trainer, built later, joins that same group.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta
from typing import TypeVar

T = TypeVar("T")

# the Trainer's own default (TrainingArguments.ddp_timeout); the group formed here is the one it trains in, and
# its first wait is the other processes' while the main one builds the dataset
TIMEOUT = timedelta(minutes=30)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """The process that opens the MLflow run and logs (global rank 0)."""
    return rank() == 0


def _state():
    import torch
    from accelerate import PartialState

    # without cpu=True, accelerate forms no group on a machine without accelerator; the Trainer is told the same
    # (`use_cpu`), so both settle on one backend: gloo on CPU, nccl on GPUs
    return PartialState(cpu=not torch.cuda.is_available(), timeout=TIMEOUT)


def main_process_first() -> AbstractContextManager:
    """A block the main process runs first, the others once it is done (e.g. build a dataset, then load it)."""
    return _state().main_process_first() if world_size() > 1 else nullcontext()


def barrier() -> None:
    if world_size() > 1:
        _state().wait_for_everyone()


def from_main(decide: Callable[[], T]) -> T:
    """`decide()`, called on the main process only, its (picklable) result handed to every process: one decision
    that touches shared files (which checkpoint to resume from, clearing old ones) is made once."""
    if world_size() == 1:
        return decide()
    from accelerate.utils import broadcast_object_list

    _state()
    return broadcast_object_list([decide() if is_main_process() else None], from_process=0)[0]
