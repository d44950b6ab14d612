"""Large images and many images: tile sizes and batch sizes from a memory budget, tiled fits.

A photo too big for one fit is cut into overlapping tiles (:mod:`dvi.fitting.tiling`); each tile is fitted
as its own image, with the noise level estimated once on the whole photo, several same-sized
tiles at a time, and the results are blended. Budgets come from :mod:`dvi.fitting.memory`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from common.bfdncnn import BFDnCNN
from common.errors import InputError
from dvi.config import Config
from dvi.fitting.fit import FitResult, check_size, fit_images, noise_level, smallest_side
from dvi.fitting.memory import available_memory_gb, fit_memory_bytes, images_that_fit, largest_tile
from dvi.fitting.ranks import ranks_sharing_device
from dvi.fitting.tiling import SMALLEST_TILE, denoise_tiled, plan_tiles

USABLE = 0.9  # share of the free memory a fit may plan to use


def fit_device(config: Config) -> torch.device:
    """The device Lightning will fit on for ``config.runtime.device``."""
    device = config.runtime.device
    wants_gpu = device in ("gpu", "cuda") or (device == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def memory_budget(config: Config) -> float:
    """GiB a fit may use: ``config.runtime.max_memory``, else 90% of the device's free memory (split between the
    ranks of a multi-process launch that share the device: :func:`dvi.fitting.ranks.ranks_sharing_device`)."""
    gb = config.runtime.max_memory
    return gb if gb is not None else USABLE * available_memory_gb(fit_device(config)) / ranks_sharing_device()


def tile_side(image: Tensor, priors: Sequence[BFDnCNN], config: Config) -> int:
    """The tile side for ``image`` (C, H, W): ``config.runtime.tile`` if given, else the largest that fits the memory
    (measured by a probe fit, :mod:`dvi.fitting.memory`, only for an image that could exceed the smallest tile)."""
    tile, overlap = config.runtime.tile, config.runtime.tile_overlap
    if tile is not None:
        smallest = max(smallest_side(config), 2 * overlap)
        if tile and tile < smallest:
            raise InputError(f"--tile {tile} is too small: use at least {smallest} px (the noise-level estimate, "
                             "--unet-depth and twice --tile-overlap need it), or 0 for no tiling")
        return tile or max(image.shape[-2:])
    if config.runtime.max_memory is None and max(image.shape[-2:]) <= SMALLEST_TILE:  # no tile is smaller: no probe
        return SMALLEST_TILE
    gb = memory_budget(config)
    try:
        return largest_tile(config, priors, channels=image.shape[0], memory_gb=gb)
    except ValueError:
        need = fit_memory_bytes(config, priors, channels=image.shape[0], height=SMALLEST_TILE, width=SMALLEST_TILE)
        given = "--max-memory" if config.runtime.max_memory is not None else f"{USABLE:.0%} of the free memory"
        raise InputError(f"{gb:.3g} GiB ({given}) is too little: fitting even a {SMALLEST_TILE}x{SMALLEST_TILE} px "
                         f"tile needs about {need / 2**30:.2g} GiB with this configuration; allow more with "
                         "--max-memory, or choose a smaller configuration (e.g. --preset fast)") from None


def batch_size(shape: Sequence[int], priors: Sequence[BFDnCNN], config: Config) -> int:
    """Images (or tiles) of ``shape`` (C, H, W) fitted together: ``config.runtime.batch``, else 1 on the CPU
    (compute-bound: batching does not pay there) and as many as fit in memory on a GPU."""
    if config.runtime.batch:
        return config.runtime.batch
    if fit_device(config).type == "cpu":
        return 1
    channels, height, width = shape
    return images_that_fit(config, priors, channels=channels, height=height, width=width,
                           memory_gb=memory_budget(config))


def fit_tiled(noisy: Tensor, priors: Sequence[BFDnCNN], config: Config, *,
              name: str | None = None, progress: bool = True) -> FitResult:
    """Denoise ``noisy`` (C, H, W) in [0,1], in overlapping tiles when it exceeds the tile side.

    One noise-level estimate on the whole image serves every tile (more data than one tile has).
    Tiles log scalars to TensorBoard but no images.
    The result's component maps are left empty when the image was tiled (components are not
    matched across tiles); ``mean_sigma`` is the tiles' mean and ``restarts`` their sum.
    """
    side, overlap = tile_side(noisy, priors, config), config.runtime.tile_overlap
    check_size(noisy, config)
    level = noise_level(noisy.to(fit_device(config)), config)
    tiles = plan_tiles(noisy.shape[-2], noisy.shape[-1], tile=side, overlap=overlap)
    if len(tiles) == 1:
        return fit_images([noisy], priors, config, noise=[level], name=name)[0]
    first = tiles[0]
    batch = batch_size((noisy.shape[0], first.height, first.width), priors, config)
    # per tile: no progress bar (one runs over the tiles) and no TensorBoard images (a log of a 1008 px tile's
    # six maps took 1.3 s on the 2-core CPU, twice per tile at the default image_every); scalars are still logged
    quiet = config.replace(progress=False, image_every=0)
    results: list[FitResult] = []
    start = time.perf_counter()

    def fit_group(group: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        tag = None if name is None else f"{name}/tiles{len(results):04d}"
        done = fit_images(group, priors, quiet, noise=[level] * len(group), name=tag)
        results.extend(done)
        return [(r.denoised, r.variance) for r in done]

    mean, variance = denoise_tiled(noisy, fit_group, tile=side, overlap=overlap, batch=batch, progress=progress)
    peaks = [r.peak_memory_mb for r in results if not math.isnan(r.peak_memory_mb)]
    return FitResult(denoised=mean.clamp(0, 1), variance=variance, noise=level, beta0=results[0].beta0,
                     mean_sigma=sum(r.mean_sigma for r in results) / len(results),
                     seconds=time.perf_counter() - start, peak_memory_mb=max(peaks, default=math.nan),
                     restarts=sum(r.restarts for r in results), seed=config.runtime.seed,
                     component_means=torch.empty(0), component_weights=torch.empty(0), batch=batch,
                     step_path=results[-1].step_path)


def fit_many(images: Sequence[Tensor], priors_for: Callable[[int], Sequence[BFDnCNN]], config: Config, *, names: Sequence[str], cleans: Sequence[Tensor | None] | None = None,
             progress: bool = True) -> Iterator[tuple[int, FitResult]]:
    """Fit every image (C, H, W); yield ``(index, result)`` as each finishes (in groups, not in order).

    Images larger than their tile are fitted one at a time in tiles (:func:`fit_tiled`); the others
    are grouped by shape and fitted ``batch_size`` at a time (:func:`fit_images`).
    ``priors_for(channels)`` gives the priors of an image's channel count; ``names[i]`` names its run.
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        priors = priors_for(image.shape[0])
        if max(image.shape[-2:]) > tile_side(image, priors, config):
            yield index, fit_tiled(image, priors, config, name=names[index], progress=progress)
        else:
            groups.setdefault(tuple(image.shape), []).append(index)
    for shape, members in groups.items():
        priors = priors_for(shape[0])
        size = batch_size(shape, priors, config)
        for first in range(0, len(members), size):
            chunk = members[first:first + size]
            clean = None
            if cleans is not None and all(cleans[i] is not None for i in chunk):
                clean = [cleans[i] for i in chunk]
            name = names[chunk[0]] if len(chunk) == 1 else f"{names[chunk[0]]}+{len(chunk) - 1}"
            yield from zip(chunk, fit_images([images[i] for i in chunk], priors, config, clean=clean, name=name))
