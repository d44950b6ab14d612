"""Tests for dvi.method.noise_level: noise-level estimate (0..255 scale) and the lambda / beta0 schedule."""

from __future__ import annotations

import math

import pytest
import torch
from skimage import data

from common.errors import InputError
from dvi.method.noise_level import (
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


# ---------------------------------------------------------------- vectorised estimator vs a reference loop
#
# An independent, deliberately plain re-implementation of fit_noise_model: explicit loops over
# rounds, channels and sub-images, one sub-image at a time, float64. Reused from the module
# (re-implementing them would add nothing to what is checked here): `PATCH` and the scalar
# Gamma quantile `_gamma_threshold` (a pure function of the confidence, no batching in it).
# Everything else (unshuffle by slicing, patches, gradient energy, selection, per-sub-image
# scatter, leave-one-out pooling, weakest axis, projections, constrained ML fit) is rewritten.

from dvi.method.noise_level import PATCH, NoiseModelFit, _gamma_threshold


def _ref_patch_stats(sub: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All 7x7 patches of one (h, w) sub-image, row-major over positions: (L, 49) patches,
    their means (L,) and gradient energies xi (L,): sum of the squared horizontal and vertical
    forward differences inside each patch."""
    win = sub.unfold(0, PATCH, 1).unfold(1, PATCH, 1)  # (h-6, w-6, 7, 7) strided view
    xi = (win[..., :, 1:] - win[..., :, :-1]).square().sum((-2, -1)) + (win[..., 1:, :] - win[..., :-1, :]).square().sum((-2, -1))
    patches = win.reshape(-1, PATCH * PATCH)
    return patches, patches.mean(1), xi.reshape(-1)


def _wmean(wt: torch.Tensor, t: torch.Tensor) -> float:
    """Weighted mean of ``t`` for weights ``wt`` that sum to 1."""
    return float((wt * t).sum())


def _ref_ml_fit(s2: torch.Tensor, f: torch.Tensor, a: float, b: float, steps: int = 4) -> tuple[float, float]:
    """ML fit of ``v = a + b f`` (a, b >= 0) to squared zero-mean Gaussian samples of one sub-image.

    Each step solves the weighted least-squares problem (weights 1 / v^2 from the previous
    step, 1e-12 floor on v) with a 2-column lstsq, not with the module's closed form; then the
    same constraint handling: slope not identifiable (weighted variance of f <= 1e-8 * weighted
    mean of f^2) or negative -> b = 0 and a = weighted mean; else a < 0 -> a = 0 and b refit alone.
    """
    for _ in range(steps):
        wt = 1.0 / (a + b * f + 1e-12).square()
        wt = wt / wt.sum()
        f_mean = _wmean(wt, f)
        if _wmean(wt, (f - f_mean).square()) > 1e-8 * _wmean(wt, f.square()):
            sw = wt.sqrt()[:, None]
            design = torch.stack([torch.ones_like(f), f], 1)
            a_new, b_new = torch.linalg.lstsq(sw * design, sw * s2[:, None]).solution[:, 0].tolist()
        else:
            a_new, b_new = _wmean(wt, s2), 0.0
        if b_new < 0:
            a_new, b_new = _wmean(wt, s2), 0.0
        elif a_new < 0:
            a_new, b_new = 0.0, _wmean(wt, f * s2) / _wmean(wt, f.square())
        a, b = a_new, b_new
    return a, b


def _reference_fit(image: torch.Tensor, *, stride: int, exponent: float = 0.5, rounds: int = 3,
                   confidence: float = 1 - 1e-6, _perturb: str | None = None) -> NoiseModelFit:
    """Reference-order version of ``fit_noise_model`` (float64, explicit loops; module doc).

    Per round, per channel: (1) each sub-image's weak-texture selection from its own previous
    fit (kept if it would leave <= 49 patches; all patches in round 0); (2) each sub-image's
    mean selected patch and scatter (sum of outer products about that mean) of its selected
    patches; (3) for each sub-image k, the pooled covariance of the OTHER sub-images of the
    channel = (sum of their scatters) / (sum of their counts), its weakest eigenvector u, the
    projections z = u . (patch - mean_k) of all of k's patches, and the ML fit on k's selected z^2.
    ``_perturb`` deliberately breaks one step (only to show that the comparison can fail).
    """
    img = image.double()
    n_ch, h, w = img.shape
    h, w = h - h % stride, w - w % stride
    n_sub = stride * stride
    tau = _gamma_threshold(confidence)
    # sub-image k = i * stride + j holds pixels (i::stride, j::stride) of the cropped image
    stats = [[_ref_patch_stats(img[c, i:h:stride, j:w:stride]) for c in range(n_ch)]
             for i in range(stride) for j in range(stride)]
    if _perturb == "transpose_subimages":
        stats = [stats[j * stride + i] for i in range(stride) for j in range(stride)]
    a = [[0.0] * n_ch for _ in range(n_sub)]
    b = [[0.0] * n_ch for _ in range(n_sub)]
    sel = [[torch.ones(len(stats[k][c][1]), dtype=torch.bool) for c in range(n_ch)] for k in range(n_sub)]
    for rnd in range(rounds):
        for c in range(n_ch):
            for k in range(n_sub):
                if rnd > 0:
                    _, m, xi = stats[k][c]
                    new = xi <= tau * (a[k][c] + b[k][c] * m.abs() ** (2 * exponent))
                    if int(new.sum()) > PATCH * PATCH:
                        sel[k][c] = new
            mus, scatters, counts = [], [], []
            for k in range(n_sub):
                chosen = stats[k][c][0][sel[k][c]]
                mu = chosen.mean(0)
                centred = chosen - mu
                mus.append(mu)
                scatters.append(centred.T @ centred)
                counts.append(chosen.shape[0])
            for k in range(n_sub):
                others = [j for j in range(n_sub) if j != k]
                if _perturb == "own_covariance":
                    cov = scatters[k] / counts[k]
                elif _perturb == "average_covariances":
                    cov = sum(scatters[j] / counts[j] for j in others) / len(others)
                else:
                    cov = sum(scatters[j] for j in others) / sum(counts[j] for j in others)
                u = torch.linalg.eigh(cov).eigenvectors[:, 0]  # eigenvalues ascending: weakest axis
                patches, m, _ = stats[k][c]
                z2 = ((patches - mus[k]) @ u).square()
                s = sel[k][c]
                assert s.any()
                a[k][c], b[k][c] = _ref_ml_fit(z2[s], m[s].abs() ** (2 * exponent), a[k][c], b[k][c])
    sigma_w2, sigma_u2 = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    f_mean = torch.tensor([[float((stats[k][c][1].abs() ** (2 * exponent)).mean()) for c in range(n_ch)]
                           for k in range(n_sub)], dtype=torch.float64)
    return NoiseModelFit(sigma_w2, sigma_u2, sigma_w2 + sigma_u2 * f_mean, float(exponent))


def _ref_case_image(photos: dict[str, torch.Tensor], case: str, stride: int) -> torch.Tensor:
    """Noisy float64 test image; a 256x256 crop at stride 4, its 128x128 top-left part at stride 2
    (64x64 sub-images either way, which keeps the test fast)."""
    size = 256 if stride == 4 else 128
    if case == "signal_dependent":  # Poisson-Gaussian v(x) = a + b x on 4x4 flat tiles, as above
        gen = torch.Generator().manual_seed(0)
        levels = torch.linspace(0.05, 0.95, 16, dtype=torch.float64)[torch.randperm(16, generator=gen)]
        clean = levels.reshape(4, 4).repeat_interleave(size // 4, 0).repeat_interleave(size // 4, 1).expand(3, size, size)
        var = (3 / 255) ** 2 + ((20 / 255) ** 2 - (3 / 255) ** 2) * clean
        return clean + torch.randn(clean.shape, generator=gen, dtype=torch.float64) * var.sqrt()
    if case == "ramp_keeps_last_selection":  # 2 channels: flat, and a steep ramp whose sub-images of
        # noise sigma 1.1 have 0..49 weak-texture patches in some round (last selection kept), sigma 3 most
        idx = torch.arange(size)
        ramp = torch.linspace(0.1, 0.9, size, dtype=torch.float64).expand(size, size)
        sigma = torch.stack([torch.ones(size, size), 1.1 + 1.9 * ((idx[:, None] + idx[None, :]) % 2)]).double()
        return torch.stack([torch.full_like(ramp, 0.5), ramp]) + _noise((2, size, size), sigma)
    if case == "camera_awgn_odd_size":  # gray, H and W not multiples of the stride: cropped first
        clean = photos["camera"][:, : size - 3, : size - 6]
        return clean + _noise(clean.shape, 5.0)
    clean = photos["astronaut"][:, :size, :size]
    if case == "astronaut_awgn":
        return clean + _noise(clean.shape, 15.0)
    if case == "astronaut_channel_sigmas":  # 8 / 20 / 40 in R / G / B
        return clean + _noise(clean.shape, torch.tensor([8.0, 20.0, 40.0], dtype=torch.float64)[:, None, None])
    assert case == "astronaut_phase_sigmas"  # sigma differs for every (channel, sub-image): bookkeeping
    idx = torch.arange(size)
    phase = (idx[:, None] % stride) * stride + idx[None, :] % stride  # sub-image index of each pixel
    sigma = (6.0 + 2.0 * phase)[None] * torch.tensor([1.0, 1.5, 2.0], dtype=torch.float64)[:, None, None]
    return clean + _noise(clean.shape, sigma)


_REF_CASES = ["astronaut_awgn", "camera_awgn_odd_size", "astronaut_channel_sigmas", "astronaut_phase_sigmas",
              "signal_dependent", "ramp_keeps_last_selection"]
_REF_RTOL = 1e-6


def _assert_fits_equal(fit: NoiseModelFit, ref: NoiseModelFit) -> None:
    """Same shapes, and sigma_w2, sigma_u2, mean_variance equal to rtol 1e-6 (atol 1e-9 of the
    largest fitted variance, for parameters clamped at or near 0)."""
    atol = 1e-9 * float(ref.mean_variance.abs().max())
    assert fit.exponent == ref.exponent
    for name in ("sigma_w2", "sigma_u2", "mean_variance"):
        torch.testing.assert_close(getattr(fit, name), getattr(ref, name), rtol=_REF_RTOL, atol=atol, msg=name)


@pytest.mark.parametrize("stride", [4, 2])
@pytest.mark.parametrize("case", _REF_CASES)
def test_vectorised_estimator_matches_reference_loop(photos: dict[str, torch.Tensor], case: str, stride: int) -> None:
    """The batched fit_noise_model equals the per-sub-image loop _reference_fit (per sub-image and
    channel sigma_w2, sigma_u2, mean_variance), and estimate_noise_level equals the delta
    sqrt(mean of the reference mean_variance) * 255, all to rtol 1e-6 in float64."""
    image = _ref_case_image(photos, case, stride)
    fit = fit_noise_model(image, stride=stride)
    ref = _reference_fit(image, stride=stride)
    assert ref.sigma_w2.shape == (stride * stride, image.shape[0])
    _assert_fits_equal(fit, ref)
    ref_delta = math.sqrt(float(ref.mean_variance.mean())) * 255.0
    assert estimate_noise_level(image, stride=stride) == pytest.approx(ref_delta, rel=_REF_RTOL)


@pytest.mark.parametrize("perturb", ["own_covariance", "average_covariances", "transpose_subimages"])
def test_reference_comparison_can_fail(photos: dict[str, torch.Tensor], perturb: str) -> None:
    """The comparison above is not vacuous: the reference with one step changed (own-sub-image
    covariance instead of leave-one-out, averaged instead of pooled covariances, sub-images
    transposed) differs from fit_noise_model by far more than the tolerance."""
    image = _ref_case_image(photos, "camera_awgn_odd_size", 4)
    fit = fit_noise_model(image, stride=4)
    wrong = _reference_fit(image, stride=4, _perturb=perturb)
    with pytest.raises(AssertionError):
        _assert_fits_equal(fit, wrong)
    assert float(((wrong.mean_variance - fit.mean_variance).abs() / fit.mean_variance.abs()).max()) > 1e3 * _REF_RTOL
