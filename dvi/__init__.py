"""ScoreDVI stage 2: unsupervised single-image denoising with score priors.

``from dvi import denoise, evaluate, estimate_noise, Config, load_preset`` (see :mod:`dvi.api`). Importing
``dvi`` loads nothing heavy: torch and Lightning are imported when one of the functions is first used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"denoise": "dvi.api", "evaluate": "dvi.api", "estimate_noise": "dvi.api", "Denoised": "dvi.api",
            "Evaluation": "dvi.api", "Config": "dvi.config", "load_preset": "dvi.config"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dvi' has no attribute {name!r}")
