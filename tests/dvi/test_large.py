"""Large and many images: memory budgets, tiled fits, several --image files, presets."""

import pytest
import torch

import dvi.fitting.large
from common.images import read_image, write_image
from common.prior_files import load_prior
from dvi.config import Config, load_preset
from dvi.fitting.large import fit_tiled
from dvi.interface.cli import main, parse
from dvi.interface.options import config_from
from dvi.fitting.memory import bytes_per_pixel, fit_memory_bytes, images_that_fit, largest_tile
from dvi.method.noise_level import analyse_noise
from dvi.fitting.tiling import plan_tiles
from tests.conftest import one_error_line, smooth_image
from tests.dvi.test_fit import SMALL, noisy_pair

CLI_FAST = ["--steps", "2", "--components", "1", "--mc-samples", "1", "--device", "cpu", "--restart-sigma", "10"]


def record_fits(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Each call of fit_images made by dvi.fitting.large: its image shapes and noise levels."""
    calls, real = [], dvi.fitting.large.fit_images

    def recording(images, *args, noise=None, **kwargs):
        calls.append({"shapes": [tuple(x.shape) for x in images], "noise": noise, "image_every": args[1].runtime.image_every})
        return real(images, *args, noise=noise, **kwargs)

    monkeypatch.setattr(dvi.fitting.large, "fit_images", recording)
    return calls


def noisy_image(height: int, width: int, *, seed: int = 0, channels: int = 3) -> torch.Tensor:
    clean = smooth_image(seed, channels=channels, size=max(height, width))[:, :height, :width]
    return (clean + 20 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)


def test_tiled_fit_shares_one_noise_estimate_and_covers_the_image(tiny_priors, monkeypatch):
    prior, _ = load_prior(tiny_priors[3], channels=3)
    image = noisy_image(100, 130)
    calls = record_fits(monkeypatch)
    settings = SMALL.replace(steps=2, image_every=1, tile=64, tile_overlap=16, batch=2)
    result = fit_tiled(image, [prior], settings, progress=False)
    tiles = plan_tiles(100, 130, tile=64, overlap=16)
    assert sum(len(c["shapes"]) for c in calls) == len(tiles) == 6
    assert all(len(c["shapes"]) <= 2 and set(c["shapes"]) == {(3, 64, 64)} for c in calls)
    whole = analyse_noise(image)
    assert all(level == whole for c in calls for level in c["noise"]) and result.noise == whole
    assert result.denoised.shape == image.shape == result.variance.shape
    assert torch.isfinite(result.denoised).all() and (result.variance > 0).all()
    assert result.component_means.numel() == 0  # components are not matched across tiles
    assert all(c["image_every"] == 0 for c in calls)  # tiles log scalars, no images


def test_image_within_one_tile_is_fitted_whole(tiny_priors, monkeypatch):
    prior, _ = load_prior(tiny_priors[3], channels=3)
    calls = record_fits(monkeypatch)
    result = fit_tiled(noisy_pair()[1], [prior], SMALL.replace(steps=2, tile=0), progress=False)
    assert [c["shapes"] for c in calls] == [[(3, 64, 64)]] and result.component_means.shape[0] == SMALL.method.components


def test_memory_estimate_is_consistent_with_tile_and_batch_choices():
    settings = Config()
    priors = []
    per_pixel = bytes_per_pixel(settings, priors, channels=3)
    assert per_pixel > 1000  # 13 M-parameter U-Net at full resolution: kilobytes per pixel, not bytes
    side = largest_tile(settings, priors, channels=3, memory_gb=4.0)
    assert fit_memory_bytes(settings, priors, channels=3, height=side, width=side) <= 4.0 * 2**30
    assert fit_memory_bytes(settings, priors, channels=3, height=side + 64, width=side + 64) > 4.0 * 2**30
    count = images_that_fit(settings, priors, channels=3, height=128, width=128, memory_gb=8.0)
    assert fit_memory_bytes(settings, priors, channels=3, height=128, width=128, images=count) <= 8 * 2**30
    assert fit_memory_bytes(settings, priors, channels=3, height=128, width=128, images=count + 1) > 8 * 2**30
    slim = settings.replace(unet_width=16, mc_samples=1)
    assert bytes_per_pixel(slim, priors, channels=3) < per_pixel / 2


def test_several_images_one_run_each_size_batched(tiny_priors, tmp_path, monkeypatch, capsys):
    for name, (h, w), seed in (("a", (64, 64), 1), ("b", (64, 64), 2), ("c", (64, 80), 3)):
        write_image(tmp_path / f"{name}.png", noisy_image(h, w, seed=seed))
    calls = record_fits(monkeypatch)
    main(["denoise", "--image", "a.png", "b.png", "c.png", "--output-dir", "res", "--priors", str(tiny_priors[3]),
          "--batch", "2", "--tile", "0", *CLI_FAST])
    assert sorted(tuple(c["shapes"]) for c in calls) == [((3, 64, 64), (3, 64, 64)), ((3, 64, 80),)]
    for name, shape in (("a", (3, 64, 64)), ("b", (3, 64, 64)), ("c", (3, 64, 80))):
        assert read_image(tmp_path / "res" / f"{name}_denoised.png").pixels.shape == shape
        assert (tmp_path / "res" / f"{name}_denoised_variance.tif").is_file()
    assert "for 2 images together" in capsys.readouterr().out


def test_tiled_denoise_from_the_command_line(tiny_priors, tmp_path, capsys):
    write_image(tmp_path / "big.png", noisy_image(96, 120))
    main(["denoise", "--image", "big.png", "--priors", str(tiny_priors[3]), "--tile", "64", "--tile-overlap", "16",
          "--save-components", *CLI_FAST])
    out = capsys.readouterr().out
    assert read_image(tmp_path / "outputs" / "big_denoised.png").pixels.shape == (3, 96, 120)
    assert "fitted in tiles" in out and not (tmp_path / "outputs" / "big_denoised_mean0.png").exists()


@pytest.mark.parametrize(("extra", "expected"), [
    (["--output", "x.png"], "--output-dir"),
    (["--clean", "a.png"], "single --image"),
    (["--tile", "30"], "--tile 30 is too small"),
    (["--max-memory", "0.001"], "--max-memory"),
])
def test_bad_multi_image_and_tiling_options(tiny_priors, tmp_path, capsys, extra, expected):
    for name in ("a", "b"):
        write_image(tmp_path / f"{name}.png", noisy_image(64, 64))
    line = one_error_line(main, ["denoise", "--image", "a.png", "b.png", "--priors", str(tiny_priors[3]),
                                 *CLI_FAST, *extra], capsys)
    assert expected in line, line
    assert not (tmp_path / "outputs").exists()


def test_same_names_in_two_folders_are_refused(tiny_priors, tmp_path, capsys):
    for folder in ("one", "two"):
        write_image(tmp_path / folder / "x.png", noisy_image(64, 64))
    line = one_error_line(main, ["denoise", "--image", "one/x.png", "two/x.png", *CLI_FAST], capsys)
    assert "same name" in line


def test_fast_preset_and_explicit_options_override_it():
    FAST = load_preset("fast")
    fast = config_from(parse(["denoise", "--image", "x.png", "--preset", "fast"])[1])
    assert fast == FAST
    mixed = config_from(parse(["denoise", "--image", "x.png", "--preset", "fast", "--steps", "7"])[1])
    assert mixed.method.steps == 7 and mixed.method.mc_samples == FAST.method.mc_samples
    assert config_from(parse(["denoise", "--image", "x.png"])[1]) == Config()
    before = config_from(parse(["denoise", "--image", "x.png", "--steps", "7", "--preset", "fast"])[1])
    assert before == mixed  # explicit options win wherever --preset stands
