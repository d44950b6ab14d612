"""Pixel operations on float images: (..., C, H, W) tensors in [0, 1], no file I/O (that is :mod:`common.images`)."""

from __future__ import annotations

import torch
from torch import Tensor

BT601_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights for R, G, B


def to_8bit(pixels: Tensor) -> Tensor:
    """Quantise float pixels as a saved 8-bit file would: round(clamp(x, 0, 1) * 255) / 255."""
    return torch.round(pixels.clamp(0.0, 1.0) * 255.0) / 255.0


def to_grayscale(pixels: Tensor) -> Tensor:
    """(C, H, W) -> (1, H, W) with ITU-R BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B; gray passes."""
    if pixels.shape[-3] == 1:
        return pixels
    if pixels.shape[-3] != 3:
        raise ValueError(f"expected 1 or 3 channels, got shape {tuple(pixels.shape)}")
    weights = torch.tensor(BT601_LUMA, dtype=pixels.dtype, device=pixels.device).view(3, 1, 1)
    return (pixels * weights).sum(dim=-3, keepdim=True)


def center_crop(pixels: Tensor, size: int) -> Tensor:
    """The central ``size`` x ``size`` window of (..., H, W) (whole sides where the image is smaller)."""
    height, width = pixels.shape[-2:]
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    return pixels[..., top:top + size, left:left + size]
