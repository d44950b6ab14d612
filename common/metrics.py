"""Image quality metrics in the convention of the published ScoreDVI numbers (method.md, section 5).

PSNR and SSIM come from scikit-image on float64 arrays: the estimate is clipped to [0, 1], the
reference (the 8-bit ground truth read as float) is used as is, ``data_range=1``. SSIM uses the
default 7x7 uniform window, with ``channel_axis`` for RGB. ``psnr_8bit`` scores the estimate after
8-bit quantisation, which is what a saved PNG gives.

Inputs are (C, H, W) torch tensors with C = 1 or 3 and values in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import Tensor

from common.errors import InputError
from common.pixels import to_8bit


@dataclass(frozen=True)
class Scores:
    """PSNR (dB, may be inf for an exact match), SSIM (at most 1) and PSNR after 8-bit rounding."""

    psnr: float
    ssim: float
    psnr_8bit: float


def _describe(image: Tensor) -> str:
    if image.ndim == 3:
        return f"{image.shape[1]}x{image.shape[2]}x{image.shape[0]}"
    return "x".join(str(n) for n in image.shape) or "a scalar"


def _arrays(estimate: Tensor, reference: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes; return (H, W) or (H, W, 3) float64 arrays, the estimate clipped to [0, 1]."""
    if estimate.shape != reference.shape:
        raise InputError(f"--image is {_describe(estimate)} but --clean is {_describe(reference)}; "
                         "give the matching reference")
    if estimate.ndim != 3 or estimate.shape[0] not in (1, 3):
        raise InputError(f"images must be (C, H, W) with 1 or 3 channels, got {tuple(estimate.shape)}")
    est = np.clip(estimate.detach().cpu().double().numpy(), 0.0, 1.0)
    ref = reference.detach().cpu().double().numpy()
    if est.shape[0] == 1:
        return est[0], ref[0]
    return np.moveaxis(est, 0, -1), np.moveaxis(ref, 0, -1)


def psnr(estimate: Tensor, reference: Tensor) -> float:
    """PSNR in dB of ``estimate`` (clipped to [0, 1]) against ``reference``, data range 1.

    Returns ``inf`` when the two are identical.
    """
    est, ref = _arrays(estimate, reference)
    if np.array_equal(est, ref):
        return math.inf
    return float(peak_signal_noise_ratio(ref, est, data_range=1.0))


def ssim(estimate: Tensor, reference: Tensor) -> float:
    """SSIM of ``estimate`` (clipped to [0, 1]) against ``reference``: data range 1, 7x7 window.

    RGB images use ``channel_axis`` (mean over channels); the value is at most 1.
    """
    est, ref = _arrays(estimate, reference)
    if min(est.shape[:2]) < 7:
        raise InputError(f"SSIM needs images of at least 7x7 pixels, got {est.shape[0]}x{est.shape[1]}")
    channel_axis = -1 if est.ndim == 3 else None
    return float(structural_similarity(ref, est, data_range=1.0, channel_axis=channel_axis))


def psnr_8bit(estimate: Tensor, reference: Tensor) -> float:
    """PSNR of the estimate after rounding to 8 bits (``to_8bit``), as a saved PNG would score."""
    return psnr(to_8bit(estimate), reference)


def score(estimate: Tensor, reference: Tensor) -> Scores:
    """All three metrics of ``estimate`` against ``reference``."""
    return Scores(psnr=psnr(estimate, reference), ssim=ssim(estimate, reference),
                  psnr_8bit=psnr_8bit(estimate, reference))
