"""Reading torch files without running code from them, with one-line errors.

``torch.load(..., weights_only=True)`` only rebuilds tensors, containers and plain values
(plus the classes in ``safe_globals``); a pickle that names any other Python callable (the
way a crafted file runs a shell command) is refused before it is called. Torch's own message
for that is a paragraph; :func:`load_weights` turns every failure into one
:class:`InputError` line naming the file and what to do.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from common.errors import InputError

_BLOCKED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_weights(path: str | os.PathLike[str], *, what: str = "file",
                 hint: str = "pass a file written by this toolkit",
                 safe_globals: Sequence[Any] = ()) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; any failure is one InputError.

    ``what`` names the file in the message ("prior file", "checkpoint"); ``hint`` says what to do
    instead. ``safe_globals`` are extra classes/functions the file may name (an allow-list, as
    :func:`torch.serialization.safe_globals`), e.g. for a Lightning checkpoint's hyper-parameters.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist; {hint}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": noise, not a finding
            with torch.serialization.safe_globals(list(safe_globals)):
                return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise InputError(describe_load_error(path, err, what=what, hint=hint)) from None


def describe_load_error(path: Path, err: BaseException, *, what: str, hint: str) -> str:
    """The one line for a failed weights-only load of ``path`` (torch's text is never cut into it)."""
    blocked = _BLOCKED_GLOBAL.search(str(err))
    if blocked:
        return (f"cannot read {what} {path}: it names the Python object {blocked.group(1)}, not only tensors, "
                f"and was not loaded because unpickling it could run code; {hint}")
    if not path.stat().st_size:
        return f"cannot read {what} {path}: it is empty (0 bytes); {hint}"
    return f"cannot read {what} {path}: it is corrupt, truncated or not a torch file ({type(err).__name__}); {hint}"
