"""Tests for common.metrics: closed forms, agreement with scikit-image, clear shape errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from common.errors import InputError
from common.pixels import to_8bit
from common.metrics import Scores, psnr, psnr_8bit, score, ssim


def _image(channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(channels, 24, 20, generator=torch.Generator().manual_seed(seed))


def test_psnr_matches_closed_form() -> None:
    reference = torch.full((3, 16, 16), 0.5)
    estimate = reference.clone()
    estimate[0, :8] += 0.1  # mse = 0.01 * (8 * 16) / (3 * 16 * 16) = 0.01 / 6
    expected = 10 * math.log10(1 / (0.01 / 6))
    assert psnr(estimate, reference) == pytest.approx(expected, abs=1e-4)


def test_psnr_clips_estimate_and_is_inf_on_identity() -> None:
    reference = torch.ones(1, 8, 8)
    assert psnr(reference, reference) == math.inf
    assert psnr(reference + 0.3, reference) == math.inf  # clipped to 1
    assert psnr(torch.zeros(1, 8, 8), reference) == pytest.approx(0.0)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_is_one_on_identical_and_matches_skimage(channels: int) -> None:
    reference = _image(channels)
    assert ssim(reference, reference) == pytest.approx(1.0)
    estimate = (reference + 0.1 * torch.randn(reference.shape, generator=torch.Generator().manual_seed(1)))
    ref = reference.double().numpy()
    est = np.clip(estimate.double().numpy(), 0, 1)
    if channels == 1:
        direct = structural_similarity(ref[0], est[0], data_range=1.0)
    else:
        direct = structural_similarity(np.moveaxis(ref, 0, -1), np.moveaxis(est, 0, -1),
                                       data_range=1.0, channel_axis=-1)
    assert ssim(estimate, reference) == pytest.approx(direct, abs=1e-12)
    assert ssim(estimate, reference) < 1.0


def test_psnr_8bit_is_psnr_of_rounded_image() -> None:
    reference = to_8bit(_image(3, 2))
    estimate = reference + 0.4 / 255 * torch.randn(reference.shape, generator=torch.Generator().manual_seed(3))
    assert psnr_8bit(estimate, reference) == pytest.approx(psnr(to_8bit(estimate), reference), abs=1e-12)
    assert psnr_8bit(estimate, reference) != pytest.approx(psnr(estimate, reference))


def test_score_bundles_all_three() -> None:
    reference, estimate = _image(3, 4), _image(3, 5)
    result = score(estimate, reference)
    assert isinstance(result, Scores)
    assert result == Scores(psnr(estimate, reference), ssim(estimate, reference), psnr_8bit(estimate, reference))


@pytest.mark.parametrize("metric", [psnr, ssim, psnr_8bit, score])
def test_shape_mismatch_raises_input_error(metric) -> None:
    with pytest.raises(InputError, match=r"--image is 20x24x3 but --clean is 20x24x1; give the matching"):
        metric(torch.zeros(3, 20, 24), torch.zeros(1, 20, 24))


def test_ssim_refuses_tiny_images() -> None:
    with pytest.raises(InputError, match="7x7"):
        ssim(torch.zeros(1, 5, 9), torch.zeros(1, 5, 9))
