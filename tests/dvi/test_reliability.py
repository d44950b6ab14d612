"""Issue 15 in ``python -m dvi``: signals, output pre-flight and publication, overwriting, pixel limit, notes.

Each test reproduces one reported failure. Fits are tiny (64x64 images, the smallest nets, a few steps).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dvi.interface.cli
from common.images import write_image
from dvi.interface.cli import main
from tests.conftest import one_error_line, smooth_image

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--components", "1", "--mc-samples", "1", "--device", "cpu", "--unet-width", "4", "--unet-depth", "2",
         "--aux-layers", "2", "--aux-features", "4", "--restart-sigma", "10", "--progress", "false"]
FAST = ["--steps", "2", *SMALL]


def image(path: Path, *, seed: int = 0, size: int = 64) -> Path:
    write_image(path, smooth_image(seed, size=size))
    return path


def files_under(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def fit_started(folder: Path) -> bool:
    """True once the TensorBoard events file of a run has grown past its header (scalars of step 1 written)."""
    events = list(folder.rglob("events.out.tfevents.*"))
    return bool(events) and events[0].stat().st_size > 200


def interrupted_run(argv: list[str], cwd: Path, signum: int) -> tuple[int, str, str]:
    """Start ``python -m dvi argv`` in ``cwd``, send ``signum`` once the fit is logging, return (status, out, err)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "dvi", *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not fit_started(cwd / "runs") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        assert fit_started(cwd / "runs"), "the fit did not start logging within 120 s"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_denoise_fit_is_non_zero_one_line_and_no_output(signum, status, tiny_priors, tmp_path):
    image(tmp_path / "n.png")
    argv = ["denoise", "--image", "n.png", "--priors", str(tiny_priors[3]), "--steps", "100000", "--log-every", "1",
            "--output", "out/o.png", *SMALL]
    code, out, err = interrupted_run(argv, tmp_path, signum)
    name = signal.Signals(signum).name
    assert code == status, (code, out, err)
    assert err.strip().splitlines() == [f"interrupted by {name}; nothing written"], err
    assert "Traceback" not in out + err and "wrote" not in out
    assert files_under(tmp_path / "out") == set()
