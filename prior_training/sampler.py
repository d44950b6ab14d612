"""Device-resident patch sampler for stage 1: the training images live on the training device as uint8,
and every step draws its crops, D4 transforms, noise levels and noise as a few batched tensor operations.

The BF-CNN recipe (Mohan et al., ICLR 2020; docs/method.md section 2) trains on patches of clean images,
augmented by flips/rotations and by rescaled copies of each image (scales 1, 0.9, 0.8, 0.7), with AWGN of
a standard deviation drawn uniformly from [0, 100] on the 0-255 scale. Here:

* every image (and each rescaled copy) is one slab of a flat uint8 buffer; a batch is one ``take`` of
  ``B * C * p * p`` indices into it (no per-patch Python, no decode);
* the crop of patch ``b`` is uniform over all ``p x p`` windows inside all stored images (an image is
  drawn with probability proportional to its number of windows, then the window uniformly);
* the D4 transform (one of the 8 flips/rotations of the square) is folded into the gather indices as
  (transpose?, flip rows?, flip columns?), so it costs nothing extra;
* ``sigma_b`` per patch from the run's :class:`~prior_training.noise.NoiseRecipe` (BF-CNN: U[0, 100] on the
  0-255 scale) and ``noisy = clean + sigma_b * n``, ``n ~ N(0, I)``, on images in [0, 1].

Each batch is drawn from a ``torch.Generator`` on the store's device seeded with ``(seed, key)``: the
same seed and key give the same batch, and a resumed run continues the exact sequence (the key is the
global step). This module holds no ``nn.Module``; Lightning decides the device and calls :meth:`to`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from prior_training.noise import NoiseRecipe

BFCNN_SCALES = (1.0, 0.9, 0.8, 0.7)  # the rescaled copies of each training image in the BF-CNN recipe
D4_SIZE = 8  # flips/rotations of a square: identity, 3 rotations, 4 reflections


@dataclass(frozen=True)
class PatchBatch:
    """One training batch on the sampler's device.

    ``clean`` and ``noisy`` (B, C, p, p) float32 in [0, 1] (``noisy`` unclipped), ``sigma`` (B,) on the
    0-1 scale (multiply by 255 for the 0-255 scale), ``transform`` (B,) the D4 element of each patch
    (bits: 4 = transpose, 2 = flip rows, 1 = flip columns; applied in that order), ``image`` / ``top`` /
    ``left`` (B,) the stored image and the window's top-left corner in it (before the transform).
    """

    clean: Tensor
    noisy: Tensor
    sigma: Tensor
    transform: Tensor
    image: Tensor
    top: Tensor
    left: Tensor


def apply_d4(patch: Tensor, transform: int) -> Tensor:
    """Reference (slow) D4 transform of (..., p, p): transpose if bit 4, flip rows if bit 2, columns if bit 1.

    The sampler computes the same result through its gather indices; the tests compare the two.
    """
    if transform & 4:
        patch = patch.transpose(-2, -1)
    if transform & 2:
        patch = patch.flip(-2)
    if transform & 1:
        patch = patch.flip(-1)
    return patch


def to_uint8(pixels: Tensor) -> Tensor:
    """Float pixels in [0, 1] -> uint8 ``round(255 x)`` (a 16-bit source loses its low byte)."""
    return torch.round(pixels.clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def rescaled(pixels: Tensor, scale: float) -> Tensor:
    """(C, H, W) float image resized by ``scale`` (antialiased bilinear; ``scale`` 1 returns it unchanged)."""
    if scale == 1.0:
        return pixels
    height, width = pixels.shape[-2:]
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(pixels[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def pad_to(pixels: Tensor, patch_size: int) -> Tensor:
    """Reflect-pad (replicate where reflection is impossible) a side shorter than ``patch_size``."""
    height, width = pixels.shape[-2:]
    pad_h, pad_w = max(0, patch_size - height), max(0, patch_size - width)
    if not pad_h and not pad_w:
        return pixels
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(pixels[None].float(), (0, pad_w, 0, pad_h), mode=mode)[0].to(pixels.dtype)


def decoded_bytes(sizes: Sequence[tuple[int, int]], *, channels: int, scales: Sequence[float]) -> int:
    """Bytes of the uint8 store for images of ``(height, width)`` at ``scales`` (before padding)."""
    factor = sum(scale * scale for scale in scales)
    return int(sum(height * width for height, width in sizes) * channels * factor)


class PatchSampler:
    """Random noisy/clean patch batches from uint8 images held on one device.

    Args:
        images: (C, H, W) images, uint8 or float in [0, 1], all with the same C (1 or 3).
        patch_size: side ``p`` of the square patches (images with a shorter side are padded to it).
        batch_size: patches ``B`` per batch.
        noise: the law of the patches' noise levels (the LightningModule sets its own at fit start).
        scales: rescaled copies of each image to store (1 keeps the original).
        seed: seed of every batch's generator, combined with the batch's key.
        channels_last: return batches in channels-last memory format (what cuDNN/oneDNN convolutions prefer).
    """

    def __init__(self, images: Sequence[Tensor], *, patch_size: int, batch_size: int, noise: NoiseRecipe = NoiseRecipe(),
                 scales: Sequence[float] = (1.0,), seed: int = 0, channels_last: bool = False) -> None:
        if not images:
            raise ValueError("PatchSampler needs at least one image")
        channels = {int(image.shape[0]) for image in images}
        if len(channels) != 1 or not channels <= {1, 3}:
            raise ValueError(f"images must all have 1 or all have 3 channels, got {sorted(channels)}")
        if patch_size < 1 or batch_size < 1 or not all(0 < s <= 1 for s in scales):
            raise ValueError("patch_size and batch_size must be positive, scales in (0, 1]")
        self.channels, self.patch_size, self.batch_size = channels.pop(), patch_size, batch_size
        self.noise, self.seed, self.channels_last = noise, int(seed), channels_last
        slabs, heights, widths = [], [], []
        for image in images:
            as_float = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
            for scale in scales:
                slab = pad_to(to_uint8(rescaled(as_float, scale)), patch_size)
                slabs.append(slab.permute(1, 2, 0).reshape(-1))  # (H, W, C) order: channels-last gathers
                heights.append(slab.shape[1])
                widths.append(slab.shape[2])
        self.store = torch.cat(slabs)
        self.height = torch.tensor(heights, dtype=torch.int64)
        self.width = torch.tensor(widths, dtype=torch.int64)
        sizes = torch.tensor([slab.numel() for slab in slabs], dtype=torch.int64)
        self.offset = torch.cumsum(sizes, 0) - sizes
        windows = (self.height - patch_size + 1) * (self.width - patch_size + 1)
        self.window_end = torch.cumsum(windows, 0)  # window k with start[i] <= k < end[i] lies in image i
        self.window_start = self.window_end - windows
        self.windows = int(self.window_end[-1])  # a Python int: no device-to-host copy per batch
        self._device = torch.device("cpu")
        self._generator = torch.Generator()
        self._grid = torch.arange(patch_size)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def images(self) -> int:
        """Number of stored images (originals times scales)."""
        return int(self.height.numel())

    @property
    def nbytes(self) -> int:
        return self.store.numel()

    def to(self, device: torch.device | str) -> PatchSampler:
        """Move the store (and the generator) to ``device``, in place; return ``self``."""
        device = torch.device(device)
        for name in ("store", "height", "width", "offset", "window_end", "window_start", "_grid"):
            setattr(self, name, getattr(self, name).to(device))
        self._device = device
        self._generator = torch.Generator(device=device)
        return self

    def image(self, index: int) -> Tensor:
        """Stored image ``index`` as (C, H, W) uint8 (for checks; a view of the store)."""
        height, width, start = int(self.height[index]), int(self.width[index]), int(self.offset[index])
        return self.store[start:start + height * width * self.channels].view(height, width, self.channels).permute(2, 0, 1)

    def _seeded(self, key: int) -> torch.Generator:
        # distinct (seed, key) pairs give distinct 63-bit seeds for any realistic key (< 2^40 steps)
        return self._generator.manual_seed((self.seed * 0x9E3779B1 + int(key)) % (1 << 63))

    def sample(self, key: int) -> PatchBatch:
        """The batch of ``key`` (e.g. the global step): a pure function of (stored images, seed, key)."""
        generator, device, p, batch = self._seeded(key), self._device, self.patch_size, self.batch_size
        window = torch.randint(0, self.windows, (batch,), generator=generator, device=device)
        image = torch.searchsorted(self.window_end, window, right=True)
        local = window - self.window_start[image]
        columns = self.width[image] - p + 1
        top, left = local // columns, local % columns
        transform = torch.randint(0, D4_SIZE, (batch,), generator=generator, device=device)
        sigma = self.noise.draw(batch, generator=generator, device=device)
        noise = torch.randn(batch, p, p, self.channels, generator=generator, device=device)
        # output pixel (y, x) of patch b reads stored pixel (u, v) of its window
        # (flips act on the output's rows/columns, then the transpose swaps them: apply_d4's order)
        rows, cols = self._grid.view(1, p, 1), self._grid.view(1, 1, p)
        rows = torch.where((transform & 2).bool().view(-1, 1, 1), p - 1 - rows, rows)
        cols = torch.where((transform & 1).bool().view(-1, 1, 1), p - 1 - cols, cols)
        swap = (transform & 4).bool().view(-1, 1, 1)
        u, v = torch.where(swap, cols, rows), torch.where(swap, rows, cols)
        width = self.width[image].view(-1, 1, 1)
        pixel = self.offset[image].view(-1, 1, 1) + ((top.view(-1, 1, 1) + u) * width + left.view(-1, 1, 1) + v) * self.channels
        index = pixel.unsqueeze(-1) + torch.arange(self.channels, device=device)  # (B, p, p, C)
        clean_hwc = torch.take(self.store, index).float().div_(255.0)
        noisy_hwc = torch.addcmul(clean_hwc, noise, sigma.view(-1, 1, 1, 1))
        clean, noisy = clean_hwc.permute(0, 3, 1, 2), noisy_hwc.permute(0, 3, 1, 2)  # channels-last strides
        if not self.channels_last:
            clean, noisy = clean.contiguous(), noisy.contiguous()
        return PatchBatch(clean=clean, noisy=noisy, sigma=sigma, transform=transform, image=image, top=top, left=left)
