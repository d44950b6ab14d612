"""Shared fixtures: generated images (nothing downloaded), runs/ kept inside tmp folders."""

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from common.images import write_image


def smooth_image(seed: int, *, channels: int = 3, size: int = 64) -> torch.Tensor:
    """A smooth synthetic photo-like image in [0.1, 0.9]: a few random sinusoids and an edge."""
    generator = torch.Generator().manual_seed(seed)
    axis = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    image = torch.zeros(channels, size, size)
    for c in range(channels):
        f = torch.rand(4, generator=generator) * 6 + 1
        image[c] = torch.sin(f[0] * xx + f[1] * yy) * torch.cos(f[2] * yy - f[3] * xx)
        image[c] += (xx + 0.3 * yy > 0.6).float() * (0.8 * torch.rand(1, generator=generator) - 0.4)
    return (0.5 + 0.35 * image / image.abs().amax().clamp_min(1e-6)).clamp(0.1, 0.9)


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "clean"
    for i in range(6):
        write_image(folder / f"img{i}.png", smooth_image(i, size=48))
    return folder


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs (TensorBoard, outputs/) go to the test's own folder, never the repository."""
    monkeypatch.chdir(tmp_path)


def error_lines(main: Callable[[list[str]], None], argv: list[str], capsys: pytest.CaptureFixture) -> list[str]:
    """Run a CLI ``main(argv)`` that must fail: exit status 2, no traceback; return its stderr lines."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    return captured.err.strip().splitlines()


def one_error_line(main: Callable[[list[str]], None], argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Like :func:`error_lines`, and stderr must be exactly one line starting with ``error: ``."""
    lines = error_lines(main, argv, capsys)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def _accepts_file(folder: Path) -> bool:
    try:
        (folder / "probe").write_bytes(b"")
    except OSError:
        return False
    (folder / "probe").unlink()
    return True


@pytest.fixture()
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/ro``, refusing new files: chmod 0555 (enough for a normal user), else the immutable
    attribute (which binds root); skipped where neither works. Made writable again afterwards."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if _accepts_file(folder):
        folder.chmod(0o755)
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        if not immutable or _accepts_file(folder):
            if immutable:
                subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
            pytest.skip("cannot make a read-only folder here (root without chattr)")
    try:
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)
