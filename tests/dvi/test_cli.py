"""``python -m dvi`` denoise / estimate-noise end to end on generated images; bad inputs end in one line.

Fits use the CLI's real networks (the reference U-Net) on 64x64 images for 2 steps, so they test
the plumbing (files, bit depths, channels, logging, errors), not the denoising quality.
"""

import dataclasses
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import dvi.interface.cli
import dvi.fitting.large
import dvi.fitting.module
from common.images import read_image, write_image
from common.metrics import psnr
from common.prior_files import MANIFEST_NAME
from dvi.interface.cli import main
from tests.conftest import error_lines, one_error_line, smooth_image

FAST = ["--steps", "2", "--components", "1", "--mc-samples", "1", "--device", "cpu", "--restart-sigma", "10"]
# restart-sigma 10: after 2 steps sigma is still large; keep the restart rule from doubling every fit



def noisy_clean(seed: int = 1, *, channels: int = 3, size: int = 64, sigma: float = 20.0):
    clean = smooth_image(seed, channels=channels, size=size)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed)) * sigma / 255
    return (clean + noise).clamp(0, 1), clean


def write_pair(folder: Path, *, seed: int = 1, channels: int = 3, size: int = 64,
               bit_depth: int = 8) -> tuple[Path, Path]:
    noisy, clean = noisy_clean(seed, channels=channels, size=size)
    write_image(folder / "noisy.png", noisy, bit_depth=bit_depth)
    write_image(folder / "clean.png", clean, bit_depth=bit_depth)
    return folder / "noisy.png", folder / "clean.png"


def wrote_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith("wrote ")]
    assert len(lines) == 1, out
    return lines[0]


def test_denoise_writes_image_variance_uncertainty_and_events_and_same_seed_is_byte_identical(
        tiny_priors, tmp_path, capsys):
    noisy, clean = write_pair(tmp_path)
    argv = ["denoise", "--image", str(noisy), "--clean", str(clean), "--priors", str(tiny_priors[3]), *FAST,
            "--seed", "5"]
    main([*argv, "--output", "out1/result.png"])
    line = wrote_line(capsys.readouterr().out)

    out = read_image(tmp_path / "out1" / "result.png")
    assert out.pixels.shape == (3, 64, 64) and out.bit_depth == 8 and out.format == "png"
    variance = tifffile.imread(tmp_path / "out1" / "result_variance.tif")
    assert variance.dtype == np.float32 and variance.shape == (3, 64, 64)
    assert np.isfinite(variance).all() and (variance > 0).all()
    uncertainty = read_image(tmp_path / "out1" / "result_uncertainty.png").pixels
    assert uncertainty.shape == (3, 64, 64) and uncertainty.max() == 1.0  # normalised std
    expected_std = np.sqrt(variance) / np.sqrt(variance).max()
    np.testing.assert_allclose(uncertainty.numpy(), expected_std, atol=0.6 / 255)

    # the line reports the noise level (true sigma 20, medium class: lambda 1, beta0 0.01) and the scores
    delta = float(re.search(r"delta ([\d.]+)", line).group(1))
    assert abs(delta - 20.0) < 2.0, line
    assert "lambda 1," in line and "beta0 0.01" in line and "restarts 0" in line
    printed_8bit = float(re.search(r"8-bit PSNR ([\d.]+) dB", line).group(1))
    assert abs(printed_8bit - psnr(out.pixels, read_image(clean).pixels)) < 0.01, line
    assert re.search(r"; PSNR [\d.]+ dB, SSIM [\d.]+", line), line

    runs = list((tmp_path / "runs" / "dvi").glob("noisy-*"))
    assert len(runs) == 1 and list(runs[0].glob("events.out.tfevents.*"))

    main([*argv, "--output", "out2/result.png"])
    capsys.readouterr()
    for name in ("result.png", "result_variance.tif", "result_uncertainty.png"):
        assert (tmp_path / "out1" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes(), name
    assert {p.name for p in (tmp_path / "out2").iterdir()} == {"result.png", "result_variance.tif",
                                                             "result_uncertainty.png"}


def test_16bit_grayscale_png_gives_16bit_grayscale_output_with_default_name(tiny_priors, tmp_path, capsys):
    noisy, _ = write_pair(tmp_path, channels=1, bit_depth=16)
    main(["denoise", "--image", str(noisy), "--priors", str(tiny_priors[1]), *FAST])
    line = wrote_line(capsys.readouterr().out)
    assert "PSNR" not in line  # no --clean, no scores
    out = read_image(tmp_path / "outputs" / "noisy_denoised.png")
    assert out.bit_depth == 16 and out.pixels.shape == (1, 64, 64)
    assert tifffile.imread(tmp_path / "outputs" / "noisy_denoised_variance.tif").shape == (1, 64, 64)


def test_rgba_input_warns_and_gives_rgb(tiny_priors, tmp_path, capsys):
    noisy, _ = noisy_clean(3)
    rgba = np.concatenate([np.rint(noisy.permute(1, 2, 0).numpy() * 255), np.full((64, 64, 1), 200.0)], axis=2)
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(tmp_path / "rgba.png")
    capsys.readouterr()
    main(["denoise", "--image", "rgba.png", "--priors", str(tiny_priors[3]), *FAST, "--output", "rgb.png"])
    warned = [line for line in capsys.readouterr().err.splitlines() if "alpha channel" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: rgba.png: alpha channel"), warned  # one line
    out = read_image(tmp_path / "rgb.png")
    assert out.pixels.shape == (3, 64, 64) and not out.had_alpha


def test_output_bit_depth_follows_input_and_format(tiny_priors, tmp_path, capsys, monkeypatch):
    """A float32 TIFF gives a 16-bit PNG (PNG has no 32-bit), a 32-bit TIFF, an 8-bit JPEG (fit faked)."""

    def fake_fit(images, priors, settings, *, clean=None, name=None):
        return [SimpleNamespace(denoised=noisy.clamp(0, 1), variance=torch.full_like(noisy, 1e-3), batch=1,
                                noise=SimpleNamespace(delta=25.0, weight=1.0), beta0=0.01, seconds=0.0, restarts=0)
                for noisy in images]

    monkeypatch.setattr(dvi.fitting.large, "fit_images", fake_fit)
    noisy, _ = noisy_clean(4)
    write_image(tmp_path / "float.tif", noisy, bit_depth=32)
    for output, depth in (("a.png", 16), ("b.tif", 32), ("c.jpg", 8)):
        main(["denoise", "--image", "float.tif", "--priors", str(tiny_priors[3]), "--output", output])
        assert read_image(tmp_path / output).bit_depth == depth, output
    torch.testing.assert_close(read_image(tmp_path / "b.tif").pixels, noisy)


def test_estimate_noise_prints_delta_lambda_beta0(tmp_path, capsys):
    noisy, _ = noisy_clean(2, size=128, sigma=20.0)
    write_image(tmp_path / "n.png", noisy, bit_depth=16)
    main(["estimate-noise", "--image", "n.png"])
    out = capsys.readouterr().out.strip()
    delta = float(re.search(r"^delta ([\d.]+) \(0-255 scale\)", out).group(1))
    assert abs(delta - 20.0) < 2.0, out
    assert "noise class medium" in out and "lambda 1," in out and out.endswith("beta0 0.01")


# ---------------------------------------------------------------- bad inputs


def files_and_bytes(root: Path) -> dict[Path, bytes]:
    """Every file under ``root`` except TensorBoard runs, with its bytes."""
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and "runs" not in p.relative_to(root).parts}


def refused(argv: list[str], root: Path, capsys, *, argparse_error: bool = False) -> str:
    """Run ``main(argv)``: it must exit with status 2, one ``error:`` line and no traceback, and
    leave every file under ``root`` as it was (no output written, inputs unchanged)."""
    before = files_and_bytes(root)
    if argparse_error:  # argparse: usage lines, then "python -m dvi denoise: error: ..."
        lines = error_lines(main, argv, capsys)
        assert sum("error: " in line for line in lines) == 1 and "error: " in lines[-1], lines
    else:
        lines = [one_error_line(main, argv, capsys)]
    after = files_and_bytes(root)
    assert after.keys() == before.keys(), sorted(map(str, after.keys() - before.keys()))
    assert all(after[p] == before[p] for p in before)
    return lines[-1]


def _two_channel_tiff(path: Path) -> None:
    array = np.zeros((64, 64, 2), np.uint8)
    tifffile.imwrite(path, array, photometric="minisblack", planarconfig="contig", extrasamples=["unspecified"])


def _tampered_prior(src: Path, folder: Path) -> Path:
    folder.mkdir()
    shutil.copy(src, folder / src.name)
    shutil.copy(src.parent / MANIFEST_NAME, folder / MANIFEST_NAME)
    data = bytearray((folder / src.name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / src.name).write_bytes(bytes(data))
    return folder / src.name


@pytest.mark.parametrize("case", ["image_missing", "text_as_png", "truncated_png", "two_channel_tiff", "too_small",
                                  "small_for_noise_estimate", "gray_prior_for_rgb", "corrupt_prior",
                                  "prior_sha_mismatch", "clean_other_size", "output_is_image", "output_is_clean",
                                  "variance_is_image", "bad_output_suffix"])
def test_bad_input_ends_with_one_error_line_and_touches_nothing(case, tiny_priors, tmp_path, capsys):
    noisy, clean = write_pair(tmp_path)
    image, priors, extra = noisy, [str(tiny_priors[3])], ["--output", "out/result.png"]
    if case == "image_missing":
        image = tmp_path / "missing.png"
    elif case == "text_as_png":
        image = tmp_path / "x.png"
        image.write_text("this is not an image\n")
    elif case == "truncated_png":
        image = tmp_path / "cut.png"
        image.write_bytes(noisy.read_bytes()[: noisy.stat().st_size // 2])
    elif case == "two_channel_tiff":
        image = tmp_path / "two.tif"
        _two_channel_tiff(image)
    elif case in ("too_small", "small_for_noise_estimate"):
        image = tmp_path / "small.png"
        write_image(image, smooth_image(0, size=12 if case == "too_small" else 40))
    elif case == "gray_prior_for_rgb":
        priors = [str(tiny_priors[1])]
    elif case == "corrupt_prior":
        (tmp_path / "junk.pt").write_bytes(np.random.default_rng(0).bytes(4096))
        priors = [str(tmp_path / "junk.pt")]
    elif case == "prior_sha_mismatch":
        priors = [str(_tampered_prior(tiny_priors[3], tmp_path / "priors"))]
    elif case == "clean_other_size":
        write_image(tmp_path / "clean48.png", smooth_image(1, size=48))
        extra += ["--clean", str(tmp_path / "clean48.png")]
    elif case == "output_is_image":
        extra = ["--output", str(noisy)]
    elif case == "output_is_clean":
        extra = ["--clean", str(clean), "--output", str(clean)]
    elif case == "variance_is_image":  # --output x.png would write x_variance.tif over the input
        image = tmp_path / "x_variance.tif"
        write_image(image, noisy_clean(1)[0], bit_depth=16)
        extra = ["--output", str(tmp_path / "x.png")]
    elif case == "bad_output_suffix":
        extra = ["--output", str(tmp_path / "out" / "result.bmp")]
    line = refused(["denoise", "--image", str(image), "--priors", *priors, *FAST, *extra], tmp_path, capsys)
    expected = {"image_missing": "does not exist", "text_as_png": "not a PNG", "truncated_png": "truncated PNG",
                "two_channel_tiff": "2 channel", "too_small": "12x12", "small_for_noise_estimate":
                    "40x40 pixels, too small: the noise-level estimate and --unet-depth 4 need at least 56x56",
                "gray_prior_for_rgb": "1-channel", "corrupt_prior": "cannot read prior file",
                "prior_sha_mismatch": "sha256", "clean_other_size": "--clean", "output_is_image": "refusing",
                "output_is_clean": "refusing", "variance_is_image": "refusing",
                "bad_output_suffix": "use a .png"}[case]
    assert expected in line, line
    assert not (tmp_path / "out").exists()


def test_argparse_errors_exit_2(tiny_priors, tmp_path, capsys):
    noisy, _ = write_pair(tmp_path)
    line = refused(["denoise", "--priors", str(tiny_priors[3])], tmp_path, capsys, argparse_error=True)
    assert "--image" in line
    for value, message in (("-1", "must be positive"), ("foo", "'auto' or a positive number")):
        line = refused(["denoise", "--image", str(noisy), "--beta0", value], tmp_path, capsys, argparse_error=True)
        assert "--beta0" in line and message in line, line
    line = refused(["denoise", "--image", str(noisy), "--steps", "0"], tmp_path, capsys, argparse_error=True)
    assert "--steps" in line


def test_nan_loss_retries_with_new_seed_then_reports_divergence(tiny_priors, tmp_path, capsys, monkeypatch):
    noisy, _ = write_pair(tmp_path)
    real, calls = dvi.fitting.module.negative_elbo, []

    def nan_elbo(**kwargs):
        calls.append(torch.initial_seed())
        terms = real(**kwargs)
        return dataclasses.replace(terms, total=terms.total * float("nan"))

    monkeypatch.setattr(dvi.fitting.module, "negative_elbo", nan_elbo)
    line = refused(["denoise", "--image", str(noisy), "--priors", str(tiny_priors[3]), *FAST, "--seed", "7",
                    "--output", "out/result.png"], tmp_path, capsys)
    assert "diverged" in line and "--seed" in line
    steps = int(FAST[FAST.index("--steps") + 1])
    # (a memory probe step may come first: the automatic tile size is measured, tests/dvi/test_large.py)
    assert calls[-2 * steps:] == [7] * steps + [8] * steps  # the second attempt ran with a new seed
    runs = sorted(p.name for p in (tmp_path / "runs" / "dvi").iterdir())
    assert len(runs) == 2 and runs[1].endswith("-seed8")


def test_denoise_figure_shows_noisy_denoised_uncertainty_and_the_clean_reference(tiny_priors, tmp_path, capsys):
    from dvi.figures import SETTINGS

    noisy, clean = write_pair(tmp_path)
    width = {with_clean: round((4 if with_clean else 3) * SETTINGS.panel_width * SETTINGS.dpi)
             for with_clean in (True, False)}
    for with_clean in (True, False):
        out = tmp_path / f"out{with_clean}" / "result.png"
        main(["denoise", "--image", str(noisy), "--priors", str(tiny_priors[3]), *FAST, "--output", str(out),
              "--figure", *(["--clean", str(clean)] if with_clean else [])])
        with Image.open(out.with_name("result_figure.png")) as figure:
            assert figure.format == "PNG" and figure.size[0] == width[with_clean]
    main(["denoise", "--image", str(noisy), "--priors", str(tiny_priors[3]), *FAST, "--output", "plain/result.png"])
    assert not (tmp_path / "plain" / "result_figure.png").exists()  # only with --figure
    # the figure is one of the image's outputs: an existing one is refused before the fit, like the others
    for name in ("result.png", "result_variance.tif", "result_uncertainty.png"):
        (tmp_path / "outFalse" / name).unlink()
    capsys.readouterr()
    line = one_error_line(main, ["denoise", "--image", str(noisy), "--priors", str(tiny_priors[3]), *FAST,
                                 "--output", str(tmp_path / "outFalse" / "result.png"), "--figure"], capsys)
    assert "result_figure.png" in line and "--overwrite" in line
    assert not (tmp_path / "outFalse" / "result.png").exists()
