"""Overlapped tiling with smooth blending: denoise a large photo tile by tile.

Images are float tensors shaped (C, H, W) with values in [0, 1]; every tile size,
overlap and offset is in pixels. Each planned tile is handed to a callback that
fits it as its own image and returns a per-pixel (mean, variance); the results are
blended with a separable raised-cosine window that ramps over the overlap.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from rich.progress import Progress
from torch import Tensor

SMALLEST_TILE = 64  # px: the smallest tile tile_for_memory gives


@dataclass(frozen=True)
class Tile:
    """A rectangle of the image, in pixels: rows ``top:top+height``, columns ``left:left+width``."""

    top: int
    left: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """(row slice, column slice) selecting this tile from an (..., H, W) tensor."""
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


def _axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis of ``length`` pixels; the last tile ends exactly at the border."""
    if length <= tile:
        return [0]
    starts, start = [], 0
    while start + tile < length:
        starts.append(start)
        start += tile - overlap
    starts.append(length - tile)
    return starts


def plan_tiles(height: int, width: int, *, tile: int, overlap: int) -> list[Tile]:
    """Row-major grid of tiles (side ``tile`` px, neighbours sharing at least ``overlap`` px) covering an image.

    Along each axis the starts are 0, tile-overlap, 2(tile-overlap), ..., and the last tile is
    shifted back to end at the border, so every tile is full size; a side shorter than ``tile``
    gives a single tile of that side.
    """
    if tile < 1:
        raise ValueError(f"tile must be at least 1 pixel, not {tile}.")
    if overlap < 0 or overlap >= tile:
        raise ValueError(f"overlap must be in [0, tile) = [0, {tile}) pixels, not {overlap}.")
    if height < 1 or width < 1:
        raise ValueError(f"image size must be at least 1x1 pixels, not {height}x{width}.")
    rows, cols = _axis_starts(height, tile, overlap), _axis_starts(width, tile, overlap)
    tile_h, tile_w = min(tile, height), min(tile, width)
    return [Tile(top, left, tile_h, tile_w) for top in rows for left in cols]


def _axis_window(start: int, size: int, length: int, overlap: int) -> Tensor:
    """1-D window of ``size`` px: raised-cosine ramps of ``overlap`` px on sides away from the border."""
    window = torch.ones(size, dtype=torch.float32)
    ramp_len = min(overlap, size)
    if ramp_len == 0:
        return window
    t = (torch.arange(overlap, dtype=torch.float64) + 0.5) / overlap
    ramp = (0.5 - 0.5 * torch.cos(math.pi * t)).to(torch.float32)[:ramp_len]
    if start > 0:
        window[:ramp_len] *= ramp
    if start + size < length:
        window[size - ramp_len:] *= ramp.flip(0)
    return window


def blend_weights(tile: Tile, *, height: int, width: int, overlap: int) -> Tensor:
    """Blending weights (tile.height, tile.width), float32, for a tile of an image of height x width px.

    Separable: 1 in the interior and on sides at the image border; on a side shared with another
    tile, a raised-cosine ramp 0.5 - 0.5 cos(pi (i + 0.5) / overlap) over ``overlap`` px, which is
    strictly positive so the normalised blend is defined everywhere.
    """
    rows = _axis_window(tile.top, tile.height, height, overlap)
    cols = _axis_window(tile.left, tile.width, width, overlap)
    return rows[:, None] * cols[None, :]


FitTiles = Callable[[list[Tensor]], list[tuple[Tensor, Tensor]]]


def denoise_tiled(image: Tensor, fit_tiles: FitTiles, *, tile: int, overlap: int, batch: int = 1,
                  progress: bool = True) -> tuple[Tensor, Tensor]:
    """Denoise ``image`` (C, H, W) in [0, 1] tile by tile; return the blended (mean, variance), each (C, H, W).

    ``fit_tiles`` receives up to ``batch`` tiles ``image[:, rows, cols]`` at a time (side ``tile``
    px, ``overlap`` px shared with neighbours; all tiles of an image at least ``tile`` px wide have
    the same size, so they can be fitted together) and returns each one's (mean, variance), both
    (C, h, w). The weighted sums are accumulated on the CPU in float32 and divided by the summed
    weights. The blended variance is the weight-averaged per-tile variance: an approximation that
    ignores the disagreement between overlapping tiles' means. If the image fits in one tile,
    ``fit_tiles`` is called once on the whole image and its result is returned unchanged.
    ``progress`` shows a rich bar over tiles.
    """
    _, height, width = image.shape
    tiles = plan_tiles(height, width, tile=tile, overlap=overlap)
    if len(tiles) == 1:
        return fit_tiles([image])[0]
    shape = tuple(image.shape)
    mean_sum = torch.zeros(shape, dtype=torch.float32)
    var_sum = torch.zeros(shape, dtype=torch.float32)
    weight_sum = torch.zeros(shape[1:], dtype=torch.float32)
    with Progress(transient=False, disable=not progress) as bar:
        task = bar.add_task("tiles", total=len(tiles))
        for first in range(0, len(tiles), batch):
            group = tiles[first:first + batch]
            results = fit_tiles([image[(slice(None), *piece.slices)] for piece in group])
            for piece, (mean, variance) in zip(group, results):
                rows, cols = piece.slices
                weight = blend_weights(piece, height=height, width=width, overlap=overlap)
                mean_sum[:, rows, cols] += weight * mean.detach().to("cpu", torch.float32)
                var_sum[:, rows, cols] += weight * variance.detach().to("cpu", torch.float32)
                weight_sum[rows, cols] += weight
            bar.advance(task, len(group))
    return mean_sum / weight_sum, var_sum / weight_sum


def tile_for_memory(max_memory_gb: float, *, bytes_per_pixel: float, multiple: int = 16, smallest: int = SMALLEST_TILE) -> int:
    """Largest square tile side in px (a multiple of ``multiple``, at least ``smallest``) that fits a budget.

    A tile of side s needs s * s * ``bytes_per_pixel`` bytes, which must not exceed
    ``max_memory_gb`` * 2**30 bytes (GiB).
    """
    if bytes_per_pixel <= 0 or multiple < 1 or smallest < 1:
        raise ValueError("bytes_per_pixel must be positive and multiple, smallest at least 1.")
    budget = max_memory_gb * 2**30
    side = int(math.isqrt(max(int(budget / bytes_per_pixel), 0))) // multiple * multiple
    while side > 0 and side * side * bytes_per_pixel > budget:
        side -= multiple
    if side < smallest or side * side * bytes_per_pixel > budget:
        raise ValueError(
            f"{max_memory_gb} GiB cannot hold even a {smallest}x{smallest} px tile at {bytes_per_pixel} bytes per "
            f"pixel ({smallest * smallest * bytes_per_pixel / 2**30:.3g} GiB needed)."
        )
    return side
