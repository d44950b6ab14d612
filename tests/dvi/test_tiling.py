"""Tiling and blending: pure-tensor checks, no fits."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from dvi.fitting.tiling import Tile, blend_weights, denoise_tiled, plan_tiles, tile_for_memory

SIZES = [(70, 90), (32, 32), (33, 100), (20, 50), (64, 64), (1, 1), (100, 41)]


def smooth_rect(channels: int, height: int, width: int) -> Tensor:
    """A smooth non-square image in [0.1, 0.9]."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    return torch.stack([0.5 + 0.4 * torch.sin((c + 2) * xx + (3 - c) * yy) * torch.cos(2 * yy) for c in range(channels)])


def box_blur(x: Tensor) -> Tensor:
    """3x3 mean with replicate padding, (C, H, W) -> (C, H, W)."""
    return F.avg_pool2d(F.pad(x[None], (1, 1, 1, 1), mode="replicate"), 3, stride=1)[0]


def safe_mask(tiles: list[Tile], height: int, width: int) -> Tensor:
    """Pixels that every covering tile holds at least 1 px away from its edges (image borders excepted)."""
    safe = torch.ones(height, width, dtype=torch.bool)
    for t in tiles:
        inner = torch.zeros(t.height, t.width, dtype=torch.bool)
        r0, c0 = (0 if t.top == 0 else 1), (0 if t.left == 0 else 1)
        r1 = t.height if t.top + t.height == height else t.height - 1
        c1 = t.width if t.left + t.width == width else t.width - 1
        inner[r0:r1, c0:c1] = True
        safe[t.slices] &= inner
    return safe


@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize(("tile", "overlap"), [(32, 8), (16, 0), (24, 23)])
def test_plan_covers_every_pixel_with_full_tiles(height: int, width: int, tile: int, overlap: int) -> None:
    tiles = plan_tiles(height, width, tile=tile, overlap=overlap)
    assert len(set(tiles)) == len(tiles)
    assert [(t.top, t.left) for t in tiles] == sorted((t.top, t.left) for t in tiles)  # row-major
    count = torch.zeros(height, width, dtype=torch.int64)
    for t in tiles:
        assert (t.height, t.width) == (min(tile, height), min(tile, width))
        assert t.top >= 0 and t.left >= 0 and t.top + t.height <= height and t.left + t.width <= width
        count[t.slices] += 1
    assert bool((count >= 1).all())
    assert max(t.top + t.height for t in tiles) == height and max(t.left + t.width for t in tiles) == width
    tops, lefts = sorted({t.top for t in tiles}), sorted({t.left for t in tiles})
    assert len(tiles) == len(tops) * len(lefts)
    for starts in (tops, lefts):  # regular stride, only the last one shifted back
        assert all(b - a == tile - overlap for a, b in zip(starts[:-2], starts[1:-1]))
        assert all(b - a <= tile - overlap for a, b in zip(starts[:-1], starts[1:]))


def test_plan_examples() -> None:
    assert plan_tiles(20, 50, tile=32, overlap=8) == [Tile(0, 0, 20, 32), Tile(0, 18, 20, 32)]
    assert [t.left for t in plan_tiles(32, 90, tile=32, overlap=8)] == [0, 24, 48, 58]
    assert plan_tiles(10, 12, tile=32, overlap=8) == [Tile(0, 0, 10, 12)]
    assert Tile(3, 5, 2, 4).slices == (slice(3, 5), slice(5, 9))


@pytest.mark.parametrize(("tile", "overlap"), [(0, 0), (-3, 0), (32, 32), (32, 40), (32, -1)])
def test_plan_rejects_bad_arguments(tile: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="tile|overlap"):
        plan_tiles(70, 90, tile=tile, overlap=overlap)


def test_blend_weights_ramp_only_on_shared_sides() -> None:
    height, width, overlap = 70, 90, 8
    t = (torch.arange(overlap) + 0.5) / overlap
    ramp = 0.5 - 0.5 * torch.cos(math.pi * t)
    for tile in plan_tiles(height, width, tile=32, overlap=overlap):
        w = blend_weights(tile, height=height, width=width, overlap=overlap)
        assert w.shape == (tile.height, tile.width) and w.dtype == torch.float32
        assert bool((w > 0).all()) and bool((w <= 1).all())
        assert torch.equal(w[overlap:-overlap, overlap:-overlap], torch.ones_like(w[overlap:-overlap, overlap:-overlap]))
        mid_r, mid_c = tile.height // 2, tile.width // 2
        sides = {
            "top": (tile.top == 0, w[:overlap, mid_c]),
            "bottom": (tile.top + tile.height == height, w[-overlap:, mid_c].flip(0)),
            "left": (tile.left == 0, w[mid_r, :overlap]),
            "right": (tile.left + tile.width == width, w[mid_r, -overlap:].flip(0)),
        }
        for at_border, values in sides.values():
            expected = torch.ones(overlap) if at_border else ramp
            torch.testing.assert_close(values, expected.float(), atol=1e-6, rtol=0)


def test_blend_weights_single_tile_and_no_overlap_are_all_ones() -> None:
    w = blend_weights(Tile(0, 0, 10, 12), height=10, width=12, overlap=4)
    assert torch.equal(w, torch.ones(10, 12))
    w = blend_weights(Tile(16, 16, 16, 16), height=64, width=64, overlap=0)
    assert torch.equal(w, torch.ones(16, 16))


def each(fit: Callable[[Tensor], tuple[Tensor, Tensor]]) -> Callable[[list[Tensor]], list[tuple[Tensor, Tensor]]]:
    """A one-tile model applied to each tile of a group."""
    return lambda tiles: [fit(x) for x in tiles]


def test_tiles_are_fitted_in_groups_of_equal_size() -> None:
    image = torch.rand(3, 70, 90, generator=torch.Generator().manual_seed(2))
    groups: list[list[tuple[int, ...]]] = []

    def fit(tiles: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        groups.append([tuple(x.shape) for x in tiles])
        return [(x**2, x) for x in tiles]

    mean, _ = denoise_tiled(image, fit, tile=32, overlap=8, batch=4, progress=False)
    count = len(plan_tiles(70, 90, tile=32, overlap=8))
    assert [len(g) for g in groups] == [4] * (count // 4) + ([count % 4] if count % 4 else [])
    assert all(shape == (3, 32, 32) for g in groups for shape in g)
    torch.testing.assert_close(mean, image**2, atol=1e-6, rtol=0)


# (24, 23): up to ~48 tiles share a pixel, so float32 rounding of the weighted sums reaches ~2e-6.
@pytest.mark.parametrize(("tile", "overlap", "atol"), [(32, 8, 1e-6), (16, 0, 0.0), (24, 23, 1e-5)])
def test_pointwise_model_is_reproduced_exactly(tile: int, overlap: int, atol: float) -> None:
    image = torch.rand(3, 70, 90, generator=torch.Generator().manual_seed(0))
    calls: list[tuple[int, ...]] = []

    def fit(x: Tensor) -> tuple[Tensor, Tensor]:
        calls.append(tuple(x.shape))
        return x**2, x + 1

    mean, variance = denoise_tiled(image, each(fit), tile=tile, overlap=overlap, progress=False)
    assert len(calls) == len(plan_tiles(70, 90, tile=tile, overlap=overlap)) > 1
    assert mean.shape == variance.shape == image.shape
    torch.testing.assert_close(mean, image**2, atol=atol, rtol=0)
    torch.testing.assert_close(variance, image + 1, atol=atol, rtol=0)


def test_box_blur_matches_in_tile_interiors_and_closely_at_seams() -> None:
    image = smooth_rect(3, 70, 90)
    tiles = plan_tiles(70, 90, tile=32, overlap=8)
    mean, variance = denoise_tiled(image, each(lambda x: (box_blur(x), box_blur(x) * 0.1)), tile=32, overlap=8, progress=False)
    reference = box_blur(image)
    diff = (mean - reference).abs().amax(0)
    safe = safe_mask(tiles, 70, 90)
    assert 0 < int(safe.sum()) < 70 * 90  # the check really has both kinds of pixel
    assert float(diff[safe].max()) < 1e-6
    assert float((variance - 0.1 * reference).abs().amax(0)[safe].max()) < 1e-6
    # At seams a tile's replicate padding differs from the true neighbours, but those edge pixels
    # carry the smallest ramp weight (0.0096). Measured max error: 6.5e-5 on this smooth image
    # (neighbour steps <= 0.018), 2.9e-3 on uniform noise in [0, 1]; bounds 1e-3 and 0.01.
    assert float(diff.max()) < 1e-3
    noise = torch.rand(3, 70, 90, generator=torch.Generator().manual_seed(1))
    noisy_mean, _ = denoise_tiled(noise, each(lambda x: (box_blur(x), x)), tile=32, overlap=8, progress=False)
    noisy_diff = (noisy_mean - box_blur(noise)).abs().amax(0)
    assert float(noisy_diff[safe].max()) < 1e-6 and float(noisy_diff.max()) < 0.01


def test_single_tile_passes_through_unchanged() -> None:
    image = torch.rand(1, 20, 30)
    out = (torch.full((1, 20, 30), 0.25, dtype=torch.float64), torch.zeros(1, 20, 30))
    result = denoise_tiled(image, each(lambda x: out), tile=32, overlap=8, progress=False)
    assert result[0] is out[0] and result[1] is out[1]


def test_progress_false_prints_nothing(capsys: pytest.CaptureFixture) -> None:
    image = torch.rand(1, 40, 40)
    denoise_tiled(image, each(lambda x: (x, x)), tile=16, overlap=4, progress=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_tile_for_memory() -> None:
    sides = [tile_for_memory(gb, bytes_per_pixel=4096) for gb in (0.02, 0.1, 0.5, 1, 2, 8)]
    assert sides == sorted(sides) and len(set(sides)) > 3
    for gb, side in zip((0.02, 0.1, 0.5, 1, 2, 8), sides):
        assert side % 16 == 0 and side >= 64
        assert side**2 * 4096 <= gb * 2**30 < (side + 16) ** 2 * 4096
    assert tile_for_memory(1, bytes_per_pixel=4096) == 512  # 2**30 / 4096 = 512**2 exactly
    assert tile_for_memory(1, bytes_per_pixel=4096, multiple=100, smallest=100) == 500
    with pytest.raises(ValueError, match="GiB"):
        tile_for_memory(0.001, bytes_per_pixel=4096)  # 64x64 needs 0.0156 GiB
