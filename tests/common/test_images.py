"""Tests for common.images: exact round trips, alpha handling, clear errors, safe writing."""

from __future__ import annotations

import io
import os
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageFile, ImageOps

from common import images
from common.errors import InputError
from common.images import (
    list_images,
    read_image,
    write_array,
    write_image,
)
from common.pixels import to_8bit, to_grayscale


def _levels(channels: int, bit_depth: int, seed: int = 0) -> torch.Tensor:
    """Random (C, 13, 17) float image on the exact grid of the given bit depth."""
    top = 2**bit_depth - 1
    ints = np.random.default_rng(seed).integers(0, top + 1, (channels, 13, 17))
    return torch.from_numpy(ints / top).float()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("bit_depth", [8, 16])
def test_png_round_trip_is_exact(tmp_path: Path, channels: int, bit_depth: int) -> None:
    pixels = _levels(channels, bit_depth)
    path = tmp_path / "out.png"
    write_image(path, pixels, bit_depth=bit_depth)
    loaded = read_image(path)
    assert loaded.bit_depth == bit_depth and not loaded.had_alpha and loaded.format == "png"
    assert loaded.pixels.dtype == torch.float32 and loaded.pixels.shape == pixels.shape
    assert torch.equal(loaded.pixels, pixels)


def test_png_written_is_readable_by_pillow(tmp_path: Path) -> None:
    pixels = _levels(3, 8)
    write_image(tmp_path / "a.png", pixels)
    with Image.open(tmp_path / "a.png") as img:
        stored = np.asarray(img)
    assert np.array_equal(stored, np.rint(pixels.permute(1, 2, 0).numpy() * 255).astype(np.uint8))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("bit_depth", "suffix"), [(16, ".tif"), (32, ".tiff"), (8, ".TIF")])
def test_tiff_round_trip_is_exact(tmp_path: Path, channels: int, bit_depth: int, suffix: str) -> None:
    pixels = _levels(channels, 16) if bit_depth != 8 else _levels(channels, 8)
    if bit_depth == 32:
        pixels = torch.rand(channels, 9, 11, generator=torch.Generator().manual_seed(1))
    path = tmp_path / f"out{suffix}"
    write_image(path, pixels, bit_depth=bit_depth)
    loaded = read_image(path)
    assert loaded.bit_depth == bit_depth and loaded.format == "tiff"
    assert torch.equal(loaded.pixels, pixels)


def test_jpeg_round_trip_is_close(tmp_path: Path) -> None:
    pixels = torch.full((3, 16, 16), 0.5)
    write_image(tmp_path / "a.jpg", pixels)
    loaded = read_image(tmp_path / "a.jpg")
    assert loaded.format == "jpeg" and loaded.bit_depth == 8
    assert (loaded.pixels - pixels).abs().max() < 3 / 255


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_dropped_with_warning(tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(2)
    array = rng.integers(0, 256, (8, 10, len(mode)), dtype=np.uint8)
    Image.fromarray(array, mode).save(tmp_path / "alpha.png")
    with pytest.warns(UserWarning, match="alpha"):
        loaded = read_image(tmp_path / "alpha.png")
    assert loaded.had_alpha
    expected = torch.from_numpy(array[..., :-1]).permute(2, 0, 1).float() / 255
    assert torch.equal(loaded.pixels, expected)


def test_tiff_rgba_16bit_alpha_is_dropped(tmp_path: Path) -> None:
    array = np.random.default_rng(3).integers(0, 65536, (6, 7, 4), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "rgba.tif", array, photometric="rgb", extrasamples=["unassalpha"])
    with pytest.warns(UserWarning, match="alpha"):
        loaded = read_image(tmp_path / "rgba.tif")
    assert loaded.bit_depth == 16
    assert torch.equal(loaded.pixels, torch.from_numpy(array[..., :3].astype(np.float32) / 65535).permute(2, 0, 1))


def test_palette_png_is_read_in_colour(tmp_path: Path) -> None:
    rgb = np.random.default_rng(4).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.save(tmp_path / "p.png")
    expected = np.asarray(palette.convert("RGB")).astype(np.float32) / 255
    loaded = read_image(tmp_path / "p.png")
    assert torch.equal(loaded.pixels, torch.from_numpy(expected).permute(2, 0, 1))


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(6).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _corrupt_png() -> bytes:
    data = bytearray(_png_bytes())
    data[len(data) // 2] ^= 0x55
    return bytes(data)


def _corrupt_png_valid_crc() -> bytes:
    """Damaged pixel data behind a correct chunk checksum (torchvision's decoder segfaults on it)."""
    data = bytearray(_png_bytes())
    start = data.index(b"IDAT") + 4
    length = int.from_bytes(data[start - 8 : start - 4], "big")
    data[start + length // 2] ^= 0x55
    data[start + length : start + length + 4] = zlib.crc32(data[start - 4 : start + length]).to_bytes(4, "big")
    return bytes(data)


def _png_with_bad_filter_byte() -> bytes:
    """Well-formed chunks and zlib stream, but scanline filter type 9 (also a segfault before)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = (4).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    rows = b"".join(bytes([9 if y == 2 else 0]) + bytes(4) for y in range(4))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _two_channel_tiff() -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((8, 8, 2), np.uint8), photometric="minisblack", planarconfig="contig")
    return buffer.getvalue()


def _five_channel_tiff() -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((8, 8, 5), np.uint16), photometric="minisblack", planarconfig="contig")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("text.png", lambda: b"this is not an image\n", "not a PNG, JPEG, TIFF"),
        ("empty.png", lambda: b"", "empty"),
        ("cut.png", lambda: _png_bytes()[: len(_png_bytes()) // 2], "truncated PNG"),
        ("cut_end.png", lambda: _png_bytes()[:-4], "truncated PNG"),
        ("corrupt.png", _corrupt_png, "corrupt PNG"),
        ("corrupt_crc_ok.png", _corrupt_png_valid_crc, "corrupt"),
        ("bad_filter.png", _png_with_bad_filter_byte, "filter"),
        ("cut.jpg", lambda: _jpeg_bytes()[: len(_jpeg_bytes()) // 2], "truncated"),
        ("cut_end.jpg", lambda: _jpeg_bytes()[:-2], "truncated"),
        ("two.tif", _two_channel_tiff, "2 channel"),
        ("five.tif", _five_channel_tiff, "5 channel"),
        ("cut.tif", lambda: _two_channel_tiff()[:20], "TIFF"),
    ],
)
def test_bad_files_raise_input_error(tmp_path: Path, name: str, content, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content())
    with pytest.raises(InputError, match=message) as info:
        read_image(path)
    assert name in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="is a directory"):
        read_image(tmp_path)


def test_float_tiff_out_of_range_is_refused(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "f.tif", np.full((4, 4), 255.0, np.float32))
    with pytest.raises(InputError, match=r"outside \[0, 1\]"):
        read_image(tmp_path / "f.tif")


def test_write_refuses_protected_input(tmp_path: Path) -> None:
    source = tmp_path / "noisy.png"
    write_image(source, _levels(3, 8))
    before = source.read_bytes()
    alias = tmp_path / "sub" / ".." / "noisy.png"
    for target in (source, alias):
        with pytest.raises(InputError, match="refusing to overwrite"):
            write_image(target, torch.zeros(3, 13, 17), protect=[source])
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noisy.png"]


def test_write_failure_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(images.os, "replace", fail)
    with pytest.raises(InputError, match="No space left"):
        write_image(tmp_path / "out" / "x.png", torch.zeros(1, 4, 4))
    assert list((tmp_path / "out").iterdir()) == []


def test_write_clamps_rounds_and_creates_parents(tmp_path: Path) -> None:
    pixels = torch.tensor([[[-0.5, 0.2, 1.7, 0.5 / 255 + 1e-4]]])
    path = tmp_path / "a" / "b" / "c.png"
    write_image(path, pixels)
    assert torch.equal(read_image(path).pixels, torch.tensor([[[0.0, 51 / 255, 1.0, 1 / 255]]]))
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not the 0o600 of a temp file


def test_write_rejects_bad_format_and_depth(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="float"):
        write_image(tmp_path / "a.png", torch.zeros(1, 2, 2, dtype=torch.uint8))
    with pytest.raises(InputError, match=r"\.png, \.tif or \.jpg"):
        write_image(tmp_path / "a.gif", torch.zeros(1, 2, 2))
    with pytest.raises(InputError, match="bit depth 16"):
        write_image(tmp_path / "a.jpg", torch.zeros(1, 2, 2), bit_depth=16)


@pytest.mark.parametrize("suffix", [".npy", ".tif"])
def test_write_array_round_trip(tmp_path: Path, suffix: str) -> None:
    values = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(0)) * 3
    write_array(tmp_path / f"u{suffix}", values)
    stored = np.load(tmp_path / "u.npy") if suffix == ".npy" else tifffile.imread(tmp_path / "u.tif")
    assert stored.dtype == np.float32 and np.array_equal(stored, values.numpy())


def test_to_8bit_and_grayscale() -> None:
    x = torch.tensor([[[0.0, 0.5, 0.9999, 1.2, -0.1]]])
    assert torch.equal(to_8bit(x) * 255, torch.tensor([[[0.0, 128.0, 255.0, 255.0, 0.0]]]))
    rgb = torch.zeros(3, 1, 3)
    rgb[0, 0, 0], rgb[1, 0, 1], rgb[2, 0, 2] = 1.0, 1.0, 1.0
    assert torch.allclose(to_grayscale(rgb), torch.tensor([[[0.299, 0.587, 0.114]]]))
    gray = torch.rand(1, 2, 2)
    assert torch.equal(to_grayscale(gray), gray)


def test_list_images(tmp_path: Path) -> None:
    for name in ["b.PNG", "a.jpg", "c.tiff", "notes.txt", ".hidden.png", "sub/d.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.tiff"]
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["a.jpg", "b.PNG", "c.tiff", "d.png"]
    with pytest.raises(InputError, match="not a directory"):
        list_images(tmp_path / "a.jpg")


def test_reading_emits_no_deprecation_noise(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", _levels(3, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(tmp_path / "a.png")


def _exif_with_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def _as_tensor(img: Image.Image) -> torch.Tensor:
    array = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0).copy())


def test_jpeg_with_orientation_6_comes_out_as_a_viewer_shows_it(tmp_path: Path) -> None:
    stored = Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8))
    stored.save(tmp_path / "plain.jpg", "JPEG", quality=90)
    stored.save(tmp_path / "rotated.jpg", "JPEG", quality=90, exif=_exif_with_orientation(6))
    plain, rotated = read_image(tmp_path / "plain.jpg"), read_image(tmp_path / "rotated.jpg")
    assert plain.pixels.shape == (3, 24, 40) and rotated.pixels.shape == (3, 40, 24)
    # As a viewer shows it: Pillow's exif_transpose of the same decoded grid (90 degrees clockwise).
    with Image.open(tmp_path / "rotated.jpg") as img:
        viewer = _as_tensor(ImageOps.exif_transpose(img))
    assert viewer.shape == rotated.pixels.shape and (viewer - rotated.pixels).abs().max() <= 2 / 255
    assert torch.equal(rotated.pixels, torch.rot90(plain.pixels, -1, (1, 2)))
    assert rotated.orientation == 6 and plain.orientation == 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_png_exif_orientation_matches_pillow_exif_transpose(tmp_path: Path, orientation: int) -> None:
    stored = Image.fromarray(np.random.default_rng(orientation).integers(0, 256, (5, 7), dtype=np.uint8))
    stored.save(tmp_path / "o.png", exif=_exif_with_orientation(orientation))
    with Image.open(tmp_path / "o.png") as img:
        img.load()
        viewer = _as_tensor(ImageOps.exif_transpose(img))
    assert torch.equal(read_image(tmp_path / "o.png").pixels, viewer)


def test_tiff_and_webp_orientation_is_applied(tmp_path: Path) -> None:
    grid = np.random.default_rng(2).integers(0, 256, (6, 9), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "o.tif", grid, photometric="minisblack", extratags=[(274, "H", 1, 8, False)])
    expected = torch.rot90(torch.from_numpy(grid / 255.0).float()[None], 1, (1, 2))
    assert torch.equal(read_image(tmp_path / "o.tif").pixels, expected)
    Image.fromarray(grid).save(tmp_path / "o.webp", lossless=True, exif=_exif_with_orientation(3))
    flipped = torch.from_numpy(grid[::-1, ::-1] / 255.0).float()
    assert torch.equal(read_image(tmp_path / "o.webp").pixels, flipped.expand(3, 6, 9))  # WebP decodes as RGB


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid 16000 x 16000 gray PNG (256 megapixels) of about 249 kB: all-zero rows compress well."""
    side = 16000
    compressor, row_block = zlib.compressobj(9), b"\x00" * ((side + 1) * 1000)
    stream = b"".join(compressor.compress(row_block) for _ in range(side // 1000)) + compressor.flush()
    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", stream)
                     + _png_chunk(b"IEND", b""))
    return path


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every pixel decoder of common.images fail the test if it is reached."""
    def fail(*args: object, **kwargs: object) -> None:
        pytest.fail("pixel data was decoded before the size check")

    monkeypatch.setattr(images, "_decode_16bit_colour", fail)
    monkeypatch.setattr(ImageFile.ImageFile, "load", fail)  # what Pillow's PNG, JPEG, BMP and WebP decoding runs
    monkeypatch.setattr(tifffile.TiffPage, "asarray", fail)
    monkeypatch.setattr(Image.Image, "load", fail)


def test_small_file_claiming_256_megapixels_is_refused_before_decoding(huge_png: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert huge_png.stat().st_size < 300_000
    assert images.MAX_PIXELS == 200_000_000
    _no_decoding(monkeypatch)
    with pytest.raises(InputError, match=r"16000x16000 pixels \(256\.0 megapixels\), over the limit of 200 "
                                         r"megapixels; raise it with --max-pixels"):
        read_image(huge_png)


def test_pixel_limit_is_checked_from_every_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pixels = _levels(3, 8)  # 17 x 13 = 221 pixels
    for name in ("a.png", "a.jpg", "a.tif"):
        write_image(tmp_path / name, pixels)
    Image.fromarray(np.zeros((13, 17, 3), np.uint8)).save(tmp_path / "a.bmp")
    Image.fromarray(np.zeros((13, 17, 3), np.uint8)).save(tmp_path / "a.webp", lossless=True)
    names = ("a.png", "a.jpg", "a.tif", "a.bmp", "a.webp")
    for name in names:
        assert read_image(tmp_path / name, max_pixels=221).pixels.shape == (3, 13, 17)
        assert read_image(tmp_path / name, max_pixels=None).pixels.shape == (3, 13, 17)
    _no_decoding(monkeypatch)
    for name in names:
        with pytest.raises(InputError, match=r"is 17x13 pixels .*over the limit of 0\.00022 megapixels"):
            read_image(tmp_path / name, max_pixels=220)


def test_pillow_formats_above_pillows_own_limit_follow_max_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "a.bmp")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # Pillow would refuse above 1000 pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(tmp_path / "a.bmp").pixels.shape == (1, 40, 50)
    assert Image.MAX_IMAGE_PIXELS == 500


def test_multi_page_tiff_is_refused_not_read_as_its_first_page(tmp_path: Path) -> None:
    with tifffile.TiffWriter(tmp_path / "sizes.tif") as tif:
        tif.write(np.zeros((8, 9), np.uint8))
        tif.write(np.zeros((5, 6), np.uint8))
    with tifffile.TiffWriter(tmp_path / "same.tif") as tif:  # two series of one page each
        tif.write(np.zeros((8, 9), np.uint8))
        tif.write(np.ones((8, 9), np.uint8))
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 8, 9), np.uint8), photometric="minisblack", metadata=None)
    with pytest.raises(InputError, match=r"sizes.tif holds 2 TIFF pages of different sizes \(9x8, 6x5\); "
                                         r"give a single-page TIFF$"):
        read_image(tmp_path / "sizes.tif")
    for name, count in (("same.tif", 2), ("stack.tif", 3)):
        with pytest.raises(InputError, match=rf"{name} holds a stack of {count} TIFF pages of 9x8"):
            read_image(tmp_path / name)


def test_tiff_with_a_reduced_resolution_preview_reads_the_full_image(tmp_path: Path) -> None:
    full = np.random.default_rng(3).integers(0, 256, (8, 9), dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "preview.tif") as tif:
        tif.write(full, photometric="minisblack")
        tif.write(np.zeros((4, 4), np.uint8), photometric="minisblack", subfiletype=1)
    assert torch.equal(read_image(tmp_path / "preview.tif").pixels, torch.from_numpy(full / 255.0).float()[None])


def _with_exif_chunk(png: bytes, orientation: int) -> bytes:
    """``png`` with an eXIf chunk (holding ``orientation``) inserted before its first IDAT."""
    at = png.index(b"IDAT") - 4
    return png[:at] + _png_chunk(b"eXIf", _exif_with_orientation(orientation)) + png[at:]


def test_16bit_colour_png_keeps_16_bits_and_its_orientation(tmp_path: Path) -> None:
    pixels = _levels(3, 16)
    write_image(tmp_path / "a.png", pixels, bit_depth=16)
    (tmp_path / "o.png").write_bytes(_with_exif_chunk((tmp_path / "a.png").read_bytes(), 6))
    loaded = read_image(tmp_path / "o.png")
    assert loaded.bit_depth == 16 and loaded.orientation == 6
    assert torch.equal(loaded.pixels, torch.rot90(pixels, -1, (1, 2)))


def test_16bit_gray_alpha_png_is_read_as_16bit_gray(tmp_path: Path) -> None:
    samples = np.random.default_rng(7).integers(0, 65536, (4, 5, 2), dtype=np.uint16)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in samples)
    header = (5).to_bytes(4, "big") + (4).to_bytes(4, "big") + bytes([16, 4, 0, 0, 0])  # colour type 4: gray+alpha
    (tmp_path / "la.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
                                      + _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b""))
    with pytest.warns(UserWarning, match="alpha"):
        loaded = read_image(tmp_path / "la.png")
    assert loaded.bit_depth == 16 and loaded.had_alpha
    assert torch.equal(loaded.pixels, torch.from_numpy(samples[None, ..., 0].astype(np.float32) / 65535))


def test_float_tiff_orientation_is_applied(tmp_path: Path) -> None:
    values = np.random.default_rng(8).random((3, 6, 9), dtype=np.float32)
    tifffile.imwrite(tmp_path / "o.tif", values, photometric="rgb", planarconfig="separate",
                     extratags=[(274, "H", 1, 7, False)])  # transverse: transpose, then rotate 180 degrees
    loaded = read_image(tmp_path / "o.tif")
    assert loaded.bit_depth == 32 and loaded.orientation == 7
    assert torch.equal(loaded.pixels, torch.from_numpy(values).transpose(1, 2).flip((1, 2)))


def test_damaged_exif_reads_as_stored(tmp_path: Path) -> None:
    grid = np.random.default_rng(9).integers(0, 256, (5, 7), dtype=np.uint8)
    Image.fromarray(grid).save(tmp_path / "e.png", exif=b"Exif\x00\x00not a TIFF header")
    loaded = read_image(tmp_path / "e.png")
    assert loaded.orientation == 1 and torch.equal(loaded.pixels, torch.from_numpy(grid / 255.0).float()[None])


def test_jpeg_quality_is_honoured(tmp_path: Path) -> None:
    pixels = _levels(3, 8)
    write_image(tmp_path / "low.jpg", pixels, jpeg_quality=20)
    write_image(tmp_path / "high.jpeg", pixels, jpeg_quality=98)
    assert (tmp_path / "low.jpg").stat().st_size < (tmp_path / "high.jpeg").stat().st_size
    with Image.open(tmp_path / "high.jpeg") as img:
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (17, 13)
