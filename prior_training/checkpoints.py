"""Reading Lightning checkpoints of stage 1 without executing code from them.

Every read goes through :func:`common.safe_load.load_weights` (``torch.load(..., weights_only=True)``): the
unpickler only builds tensors, containers and primitive values, plus the classes of :data:`SAFE_GLOBALS`
(paths a checkpoint's hyperparameters may hold).
A crafted checkpoint whose pickle calls anything else is refused before any of it runs.
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from common.errors import InputError
from common.safe_load import load_weights

# hyperparameters such as ``init_prior`` / ``data_root`` are saved as Path objects
SAFE_GLOBALS = [pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath, pathlib.PureWindowsPath]
LIGHTNING_KEYS = ("state_dict", "pytorch-lightning_version")


@contextlib.contextmanager
def safe_checkpoint_globals() -> Iterator[None]:
    """Allow :data:`SAFE_GLOBALS` in ``weights_only`` loads inside the block (e.g. Lightning's own restore)."""
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        yield


def read_checkpoint(path: Path, *, option: str = "checkpoint") -> dict[str, Any]:
    """The contents of a Lightning checkpoint written by ``python -m prior_training fit``.

    A missing, truncated, foreign or code-carrying file is an :class:`InputError` whose one line names
    ``option`` and the file.
    """
    path = Path(path)
    hint = "pass a .ckpt written by 'python -m prior_training fit'"
    raw = load_weights(path, what=option, hint=hint, safe_globals=SAFE_GLOBALS)
    if not isinstance(raw, dict) or not all(key in raw for key in LIGHTNING_KEYS):
        raise InputError(f"{option} {path} is not a prior_training checkpoint (no Lightning state_dict/version); {hint}")
    return raw
