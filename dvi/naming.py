"""Names of TensorBoard runs (``runs/dvi/<name>``)."""

from __future__ import annotations

import time


def run_name(stem: str) -> str:
    """TensorBoard run folder ``runs/dvi/<stem>-<YYYYmmdd-HHMMSS>-<ms>``: one per fit, never mixed."""
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() // 1_000_000 % 1000:03d}"
