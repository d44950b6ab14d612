"""How much memory a fit needs, to choose tile sizes and batch sizes from a budget.

The dominant term is the activations the four variational nets keep for backward; it is measured,
not guessed: one training step at 64x64 px (larger for a deep U-Net: :func:`probe_side`) on the CPU with ``torch.autograd.graph.saved_tensors_hooks``
counting the bytes of every tensor autograd saves, then scaled by the pixel count (the nets are
convolutional). Added to it: the priors' transient activations (no autograd graph: about three
feature maps of the widest prior per Monte-Carlo sample alive at once) and, per image, the nets'
weights with their gradients and two Adam moments. The nets always run in float32 (float64 under
``64-true``); the priors run in the fit's precision, so their activations and weights take 2 bytes per
value under the 16-bit precisions (bf16-mixed, the default on a GPU) and 4 otherwise
(:func:`prior_value_bytes`). That split follows the code (the nets turn autocast off), but the model has
not yet been checked against a GPU's measured peak (``benchmarks/dvi_speed.py --memory``, in
``benchmarks/gpu_check.sh``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import Tensor

from common.bfdncnn import BFDnCNN
from dvi.config import Config
from dvi.fitting.fit import build_module, fit_precision, smallest_side, variational_nets
from dvi.fitting.module import standalone
from dvi.fitting.tiling import tile_for_memory

PROBE_SIDE = 64
SAFETY = 1.25  # allocator fragmentation and workspace on top of what is counted


@lru_cache(maxsize=16)
def _saved_bytes_per_pixel(config: Config, channels: int) -> float:
    side = probe_side(config)
    y = torch.rand(1, channels, side, side)
    module = standalone(build_module(config, [BFDnCNN(channels=channels, depth=3, features=8).eval()], y,
                                     seeds=[0]), device="cpu")
    counted: list[int] = []

    def pack(tensor: Tensor) -> Tensor:
        counted.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        module.training_step(0, 0)
    return sum(counted) / side**2


def probe_side(config: Config) -> int:
    """Side (px) of the probe image: ``PROBE_SIDE``, or the smallest image ``config`` accepts (a deep U-Net needs
    ``2 ** --unet-depth``), rounded up to a multiple of the U-Net's downsampling."""
    multiple = 2 ** config.nets.unet_depth
    return -(-max(PROBE_SIDE, smallest_side(config)) // multiple) * multiple


def net_value_bytes(config: Config) -> int:
    """Bytes per value of the variational nets' weights and activations: 8 under ``64-true``, else 4 (the nets
    run with autocast off)."""
    return 8 if str(fit_precision(config)) in ("64-true", "64") else 4


def prior_value_bytes(config: Config) -> int:
    """Bytes per value of the priors' weights and activations in a fit at ``config``'s precision (``auto``
    resolved as the fit resolves it): 2 under bf16/fp16 (the priors are stored and run in the autocast type),
    8 under ``64-true``, else 4."""
    precision = str(fit_precision(config))
    return 2 if precision.startswith(("bf16", "16")) else 8 if precision.startswith("64") else 4


def fit_memory_bytes(config: Config, priors: Sequence[BFDnCNN], *, channels: int, height: int, width: int,
                     images: int = 1) -> float:
    """Estimated peak bytes of fitting ``images`` images of ``channels`` x ``height`` x ``width`` together."""
    nets = variational_nets(config, channels=channels)
    net_bytes, prior_bytes = net_value_bytes(config), prior_value_bytes(config)
    weights = sum(p.numel() for p in nets.parameters()) * net_bytes * 4  # weight, gradient, two Adam moments
    widest = max((p.shape[0] for prior in priors for p in prior.parameters() if p.dim() == 4), default=64)
    prior_transient = config.method.mc_samples * 3 * widest * prior_bytes
    per_pixel = _saved_bytes_per_pixel(config, channels) * net_bytes / 4 + prior_transient  # probed in float32
    prior_weights = sum(p.numel() for prior in priors for p in prior.parameters()) * prior_bytes
    return SAFETY * (images * (height * width * per_pixel + weights)) + prior_weights


def bytes_per_pixel(config: Config, priors: Sequence[BFDnCNN], *, channels: int) -> float:
    """Marginal estimated bytes per pixel of one image (what a tile size is chosen from)."""
    big = fit_memory_bytes(config, priors, channels=channels, height=1024, width=1024)
    small = fit_memory_bytes(config, priors, channels=channels, height=512, width=512)
    return (big - small) / (1024**2 - 512**2)


def available_memory_gb(device: torch.device) -> float:
    """Free memory of ``device`` in GiB: the GPU's free memory, or the RAM the OS reports as available."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2**30
    try:
        with open("/proc/meminfo") as handle:
            fields = dict(line.split(":", 1) for line in handle)
        return int(fields["MemAvailable"].split()[0]) * 1024 / 2**30
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") / 2**30


def images_that_fit(config: Config, priors: Sequence[BFDnCNN], *, channels: int, height: int, width: int,
                    memory_gb: float, most: int = 64) -> int:
    """How many such images can be fitted together within ``memory_gb`` GiB (at least 1, at most ``most``)."""
    one = fit_memory_bytes(config, priors, channels=channels, height=height, width=width, images=1)
    two = fit_memory_bytes(config, priors, channels=channels, height=height, width=width, images=2)
    each, fixed = two - one, 2 * one - two
    return max(1, min(most, math.floor((memory_gb * 2**30 - fixed) / each)))


def largest_tile(config: Config, priors: Sequence[BFDnCNN], *, channels: int, memory_gb: float) -> int:
    """Largest square tile side (px, multiple of 16) whose one-image fit fits in ``memory_gb`` GiB.

    Raises ValueError when not even a 64 px tile fits.
    """
    fixed = fit_memory_bytes(config, priors, channels=channels, height=0, width=0)
    return tile_for_memory(memory_gb - fixed / 2**30, bytes_per_pixel=bytes_per_pixel(config, priors, channels=channels))
