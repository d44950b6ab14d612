"""Several processes sharing one job: which process this is, its share, its device, waiting for the others.

A multi-process launch (``torchrun --nproc_per_node N``, or ``--nnodes``/``--node_rank`` across machines) starts
the same command N times with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in the environment. Each process
(rank) then fits its own images with an ordinary one-device Lightning run on its own device: the GPU
``cuda:LOCAL_RANK`` (modulo the GPUs it sees, so two ranks may share one card) or the CPU. The ranks meet
over a ``gloo`` process group (:func:`join`): rank 0's list of what is left to do is the one every
rank shares out (so a row another rank appends meanwhile cannot shift the shares), and rank 0 waits for
all ranks before it summarises. Outside such a launch everything here is a no-op for one process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from common.errors import InputError

T = TypeVar("T")
WAIT = timedelta(days=1)  # how long a rank waits for the others (shares can be uneven: a big photo, a retry)


@dataclass(frozen=True)
class Launch:
    """This process's place in a launch: ``rank`` of ``world`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Launch:
        """torch.distributed's rank and world size when a process group exists, else ``RANK``/``WORLD_SIZE``
        (and ``LOCAL_RANK``, default the rank) as torchrun sets them; one process when they are unset."""
        local = environ.get("LOCAL_RANK")
        if dist.is_available() and dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
            return cls(rank=rank, world=world, local_rank=int(local) if local is not None else rank)
        try:
            world = int(environ.get("WORLD_SIZE", "1"))
            rank = int(environ.get("RANK", local or "0"))
            local_rank = int(local) if local is not None else rank
        except ValueError:
            raise InputError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (as torchrun sets them), not "
                             f"{environ.get('RANK')!r}, {environ.get('WORLD_SIZE')!r}, {local!r}") from None
        if not (world >= 1 and 0 <= rank < world and local_rank >= 0):
            raise InputError(f"RANK {rank} and WORLD_SIZE {world} do not describe a process of the launch")
        return cls(rank=rank, world=world, local_rank=local_rank)

    @property
    def is_first(self) -> bool:
        return self.rank == 0

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's items: those at positions i with i % world == rank (round robin, shares differ by at most 1)."""
        return list(items[self.rank::self.world])

    def describe(self, share: int, total: int, *, what: str = "pairs") -> str:
        """``"rank 1/2: 5 of 10 pairs"`` (ranks counted from 0)."""
        return f"rank {self.rank}/{self.world}: {share} of {total} {what}"

    def cuda_device(self) -> torch.device | None:
        """This rank's GPU (``cuda:LOCAL_RANK`` modulo the visible GPUs), or None without CUDA."""
        if not torch.cuda.is_available():
            return None
        return torch.device("cuda", self.local_rank % torch.cuda.device_count())


def ranks_sharing_device(environ: Mapping[str, str] = os.environ) -> int:
    """How many ranks on this machine fit on this rank's device (its GPU, or the CPU's memory): the
    ``LOCAL_WORLD_SIZE`` ranks spread over the visible GPUs as :meth:`Launch.cuda_device` spreads them. A budget
    from the device's free memory is split this many ways (each rank reads the same free memory at the start)."""
    launch = Launch.from_environment(environ)
    try:
        local_world = max(1, int(environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local_world = 1
    if launch.world == 1 or local_world == 1:
        return 1
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus == 0:
        return local_world
    return sum(1 for rank in range(local_world) if rank % gpus == launch.local_rank % gpus)


def fit_strategy(accelerator: str) -> object:
    """The Lightning ``strategy`` of one fit: on a GPU rank of a multi-process launch, a one-device strategy on
    that rank's card (Lightning's own choice for ``devices=1`` would be ``cuda:0`` on every rank); else "auto"."""
    launch = Launch.from_environment()
    device = launch.cuda_device()
    if launch.world == 1 or device is None or accelerator == "cpu":
        return "auto"
    from lightning.pytorch.strategies import SingleDeviceStrategy

    return SingleDeviceStrategy(device=device)


class Group:
    """The ranks of one launch, met over gloo (:func:`join`); for a single process every call returns at once."""

    def __init__(self, launch: Launch, *, created: bool = False, rank_zero_before: int | None = None) -> None:
        self.launch = launch
        self._created, self._rank_zero_before = created, rank_zero_before

    def agree(self, items: list[T]) -> list[T]:
        """Rank 0's ``items`` on every rank (pickled over the group)."""
        if self.launch.world == 1:
            return items
        box: list[object] = [items if self.launch.is_first else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def finish(self) -> None:
        """Return once every rank has called it, then leave the group this process joined."""
        if self.launch.world == 1:
            return
        dist.barrier()
        if self._rank_zero_before is not None:
            from lightning.pytorch.utilities.rank_zero import rank_zero_only

            rank_zero_only.rank = self._rank_zero_before
        if self._created:
            dist.destroy_process_group()
            self._created = False


def join(environ: Mapping[str, str] = os.environ) -> Group:
    """This process's :class:`Group`; end with :meth:`Group.finish`. With several ranks it joins a gloo group
    from ``MASTER_ADDR``/``MASTER_PORT`` (unless torch.distributed is initialised already), moves plain ``cuda``
    work to the rank's GPU, and lets Lightning treat each fit as the one-process run it is (Lightning's
    rank-0-only logging reads ``RANK``; it is switched on in every rank: each image has its own TensorBoard run)."""
    launch = Launch.from_environment(environ)
    if launch.world == 1:
        return Group(launch)
    created = not dist.is_initialized()
    if created:
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in environ]
        if missing:
            raise InputError(f"a launch of {launch.world} processes needs {' and '.join(missing)} in the environment "
                             "(torchrun sets them); start it with torchrun")
        dist.init_process_group("gloo", init_method="env://", rank=launch.rank, world_size=launch.world, timeout=WAIT)
    device = launch.cuda_device()
    if device is not None:
        torch.cuda.set_device(device)
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    before = getattr(rank_zero_only, "rank", 0)
    rank_zero_only.rank = 0
    return Group(launch, created=created, rank_zero_before=before)
