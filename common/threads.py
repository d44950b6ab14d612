"""CPU threads of one command-line process, so that several processes on one machine share its cores.

Two rules, applied by the command-line entry points (``python -m dvi``, ``python -m prior_training``) and
nowhere else (a library call leaves the caller's thread settings alone):

1. :func:`prefer_passive_wait`, before torch is imported: OpenMP's idle threads spin only briefly
   (``GOMP_SPINCOUNT=1000`` spins) and then sleep (``OMP_WAIT_POLICY=PASSIVE``) instead
   of spinning on a core for long (libgomp's default is 300000 spins). With the default, two torch
   processes on 2 cores steal each other's cores and run several times slower together than one after
   the other; sleeping at once (no spin) costs one process alone about a quarter of its speed, each wake-up
   being late; the short spin keeps both. Measured in docs/performance.md ("Several fits at once").
2. :func:`cpu_threads`: torch's intra-op threads = the cores this process may run on
   (``os.sched_getaffinity``: taskset, a cgroup cpuset, a batch-system allocation) divided by the
   processes of one machine (``LOCAL_WORLD_SIZE``, as torchrun sets it), at least 1.

An environment variable the user set wins over both: ``OMP_WAIT_POLICY`` (then no spin count is set
either), ``GOMP_SPINCOUNT``, and ``OMP_NUM_THREADS`` (then torch's own setting is kept).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

WAIT_POLICY = "PASSIVE"  # the OMP_WAIT_POLICY the entry points set when the user has not
SPIN_COUNT = "1000"  # the GOMP_SPINCOUNT (libgomp, the OpenMP of torch's Linux wheels) set with it


def prefer_passive_wait(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` and ``GOMP_SPINCOUNT`` (unless set) when the user has not set the
    policy. Call before torch (and its OpenMP) is loaded."""
    if "OMP_WAIT_POLICY" not in environ:
        environ["OMP_WAIT_POLICY"] = WAIT_POLICY
        environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity call on this platform
        return max(1, os.cpu_count() or 1)


def cpu_threads(environ: MutableMapping[str, str] = os.environ, *, cores: int | None = None) -> int | None:
    """Intra-op threads for one process: usable cores // ``LOCAL_WORLD_SIZE`` (>= 1); None when the user
    chose with ``OMP_NUM_THREADS`` (torch already follows it)."""
    if environ.get("OMP_NUM_THREADS"):
        return None
    try:
        processes = max(1, int(environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        processes = 1
    return max(1, (usable_cores() if cores is None else cores) // processes)


def apply_cpu_threads() -> None:
    """``torch.set_num_threads(cpu_threads())`` where the user has not chosen."""
    threads = cpu_threads()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
