"""Tests for dvi.noise_level: noise-level estimate (0..255 scale) and the lambda / beta0 schedule."""

from __future__ import annotations

import math

import pytest
import torch
from skimage import data

from common.errors import InputError
from dvi.noise_level import (
    NoiseClass,
    NoiseLevel,
    analyse_noise,
    auto_beta0,
    estimate_noise_level,
    fit_noise_model,
    noise_class,
    pixel_unshuffle_images,
    prior_weight,
)


def _photo(name: str) -> torch.Tensor:
    """A clean 256x256 crop of a scikit-image photo, float64 scaled into [0.1, 0.9].

    The margin keeps the added Gaussian noise (never clipped here) a true AWGN of known sigma.
    """
    if name == "astronaut":
        img = torch.from_numpy(data.astronaut()[:256, :256]).permute(2, 0, 1)
    else:
        img = torch.from_numpy(data.camera()[:256, :256])[None]
    return 0.1 + 0.8 * img.double() / 255.0


def _noise(shape: tuple[int, ...], sigma255: float | torch.Tensor, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64) * sigma255 / 255.0


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """One intra-op thread: the work is small, and on a busy 2-core box MKL and OpenMP threads
    fighting each other made this file 5x slower (73 s vs 14 s, measured). Restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def photos() -> dict[str, torch.Tensor]:
    return {name: _photo(name) for name in ("astronaut", "camera")}


# ---------------------------------------------------------------- pixel unshuffle

def test_pixel_unshuffle_shape_and_content() -> None:
    image = torch.arange(3 * 37 * 42, dtype=torch.float32).reshape(3, 37, 42)
    sub = pixel_unshuffle_images(image, stride=4)
    assert sub.shape == (16, 3, 9, 10)  # H, W cropped to 36, 40 first
    for i in range(4):
        for j in range(4):
            assert torch.equal(sub[i * 4 + j], image[:, :36, :40][:, i::4, j::4])
    assert pixel_unshuffle_images(image, stride=2).shape == (4, 3, 18, 21)


@pytest.mark.parametrize("bad", [torch.zeros(8, 8), torch.zeros(1, 3, 8, 8), torch.zeros(3, 8, 8, dtype=torch.uint8)])
def test_pixel_unshuffle_rejects_bad_input(bad: torch.Tensor) -> None:
    with pytest.raises(InputError):
        pixel_unshuffle_images(bad)


# ---------------------------------------------------------------- estimator accuracy

@pytest.mark.parametrize("name", ["astronaut", "camera"])
@pytest.mark.parametrize("sigma", [5.0, 15.0, 30.0, 50.0])
def test_awgn_on_photos_within_10_percent(photos: dict[str, torch.Tensor], name: str, sigma: float) -> None:
    clean = photos[name]
    delta = estimate_noise_level(clean + _noise(clean.shape, sigma))
    assert abs(delta - sigma) <= 0.10 * sigma, f"{name}: sigma {sigma}, estimated {delta:.3f}"


@pytest.mark.parametrize("sigma", [2.0, 10.0, 40.0])
def test_flat_image_plus_noise(sigma: float) -> None:
    # The plain smallest eigenvalue of a 64x64 sub-image's patch covariance is ~17 % low
    # here; the cross-fitted projection must not be.
    flat = torch.full((3, 256, 256), 0.5, dtype=torch.float64)
    delta = estimate_noise_level(flat + _noise(flat.shape, sigma, seed=1))
    assert abs(delta - sigma) <= 0.05 * sigma


def test_noiseless_flat_image_gives_zero() -> None:
    for dtype in (torch.float32, torch.float64):
        assert estimate_noise_level(torch.full((3, 128, 128), 0.3, dtype=dtype)) < 0.01


def test_per_channel_noise_levels_are_kept_apart(photos: dict[str, torch.Tensor]) -> None:
    clean = photos["astronaut"]
    sigmas = torch.tensor([8.0, 20.0, 40.0], dtype=torch.float64)[:, None, None]
    fit = fit_noise_model(clean + _noise(clean.shape, sigmas))
    assert fit.mean_variance.shape == (16, 3)
    per_channel = fit.mean_variance.mean(0).sqrt() * 255.0
    assert torch.allclose(per_channel, sigmas.flatten(), rtol=0.12), per_channel


def test_signal_dependent_noise_is_fitted() -> None:
    # 4x4 flat tiles of 16 intensities, Poisson-Gaussian noise v(x) = a + b x (exponent 0.5)
    gen = torch.Generator().manual_seed(0)
    levels = torch.linspace(0.05, 0.95, 16, dtype=torch.float64)[torch.randperm(16, generator=gen)]
    clean = levels.reshape(4, 4).repeat_interleave(64, 0).repeat_interleave(64, 1).expand(3, 256, 256)
    a, b = (3 / 255) ** 2, (20 / 255) ** 2 - (3 / 255) ** 2
    var = a + b * clean
    noisy = clean + torch.randn(clean.shape, generator=gen, dtype=torch.float64) * var.sqrt()
    fit = fit_noise_model(noisy)
    assert fit.exponent == 0.5
    assert fit.sigma_u2.median().item() == pytest.approx(b, rel=0.2)
    assert fit.sigma_w2.median().item() < 0.2 * b  # the intensity-dependent part dominates, as it should
    true_delta = math.sqrt(var.mean().item()) * 255.0
    assert estimate_noise_level(noisy) == pytest.approx(true_delta, rel=0.1)


def test_float32_and_float64_agree(photos: dict[str, torch.Tensor]) -> None:
    clean = photos["astronaut"]
    for sigma in (1.0, 15.0):
        noisy = clean + _noise(clean.shape, sigma)
        d64 = estimate_noise_level(noisy)
        d32 = estimate_noise_level(noisy.float())
        assert d32 == pytest.approx(d64, rel=2e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(photos: dict[str, torch.Tensor]) -> None:
    noisy = (photos["camera"] + _noise((1, 256, 256), 15.0)).float()
    assert estimate_noise_level(noisy.cuda()) == pytest.approx(estimate_noise_level(noisy), rel=2e-3)


def test_estimator_rejects_bad_input() -> None:
    with pytest.raises(InputError):
        estimate_noise_level(torch.rand(3, 32, 32))  # 8x8 sub-images: too small for 7x7 patches
    with pytest.raises(InputError):
        estimate_noise_level(torch.rand(3, 64, 64), stride=1)  # needs several sub-images
    nan_image = torch.rand(3, 64, 64)
    nan_image[0, 3, 3] = float("nan")
    with pytest.raises(InputError):
        estimate_noise_level(nan_image)


# ---------------------------------------------------------------- schedules

def test_prior_weight_boundaries() -> None:
    assert prior_weight(0.0) == 0.5
    assert prior_weight(9.999) == 0.5
    assert prior_weight(10.0) == 1.0
    assert prior_weight(24.999) == 1.0
    assert prior_weight(25.0) == 2.0
    assert prior_weight(300.0) == 2.0
    assert prior_weight(5.0, gamma=4.0) == 0.25
    assert prior_weight(30.0, gamma=4.0) == 4.0
    assert prior_weight(15.0, gamma=4.0) == 1.0
    assert prior_weight(12.0, low=15.0, high=20.0) == 0.5
    assert prior_weight(20.0, low=15.0, high=20.0) == 2.0


def test_noise_class_and_beta0_boundaries() -> None:
    assert noise_class(9.999) is NoiseClass.LOW
    assert noise_class(10.0) is NoiseClass.MEDIUM
    assert noise_class(24.999) is NoiseClass.MEDIUM
    assert noise_class(25.0) is NoiseClass.HIGH
    assert auto_beta0(9.999) == 0.005
    assert auto_beta0(10.0) == 0.01
    assert auto_beta0(24.999) == 0.01
    assert auto_beta0(25.0) == 0.02


@pytest.mark.parametrize(
    "call",
    [
        lambda: prior_weight(-1.0),
        lambda: prior_weight(float("nan")),
        lambda: prior_weight(5.0, gamma=0.0),
        lambda: noise_class(5.0, low=25.0, high=10.0),
        lambda: auto_beta0(float("inf")),
    ],
)
def test_schedules_reject_bad_values(call) -> None:
    with pytest.raises(InputError):
        call()


def test_analyse_noise_combines_everything() -> None:
    flat = torch.full((3, 128, 128), 0.5, dtype=torch.float64)
    result = analyse_noise(flat + _noise(flat.shape, 40.0, seed=2))
    assert isinstance(result, NoiseLevel)
    assert result.delta == pytest.approx(40.0, rel=0.05)
    assert (result.weight, result.noise_class, result.beta0) == (2.0, NoiseClass.HIGH, 0.02)
    low = analyse_noise(flat + _noise(flat.shape, 4.0, seed=2), gamma=3.0)
    assert (low.weight, low.noise_class, low.beta0) == (pytest.approx(1 / 3), NoiseClass.LOW, 0.005)
    with pytest.raises(AttributeError):
        result.delta = 1.0  # frozen
