"""Image I/O: images are float32 tensors in [0, 1], layout (C, H, W) with C = 1 (gray) or 3 (RGB).

Libraries do the format work. Pillow names the format (its plugins' signature checks, which need no readable
header) and reads PNG, JPEG, BMP and WebP: size and EXIF orientation from the header, truncated and corrupt
files found (chunk checksums, zlib stream, scanline filters, a JPEG without its end). Pillow keeps 8 bits of
a 16-bit colour PNG, so OpenCV (libpng) decodes that kind again once Pillow has checked it. tifffile reads
and writes TIFF (uint8, uint16, float; float maps of any shape); OpenCV writes PNG (8/16-bit) and JPEG.
Files are written atomically through :mod:`common.publish`; written images carry no orientation tag.

Hand-written, because no library does it: the PNG end check (Pillow accepts a PNG cut inside IEND), the PNG
bit depth and colour type (IHDR bytes 24-25; Pillow shows a 16-bit gray+alpha PNG as 8-bit RGBA),
:func:`apply_orientation` (Pillow's ``exif_transpose`` needs a Pillow image, which cannot hold 16-bit colour
or float pixels) and the TIFF rules (one full-resolution page; gray, RGB, alpha, min-is-white).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile
import torch
from PIL import Image
from torch import Tensor

from common.errors import InputError, one_line
from common.publish import OutputGroup, write_atomic

MAX_PIXELS = 200_000_000  # default limit of read_image (width x height); the one place of this default
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})
_WRITABLE = {".png": (8, 16), ".tif": (8, 16, 32), ".tiff": (8, 16, 32), ".jpg": (8,), ".jpeg": (8,)}


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image: ``pixels`` float32 (C, H, W) in [0, 1], C in {1, 3}; ``bit_depth`` the stored precision
    (8, 16, or 32 for a float TIFF); ``had_alpha``: an alpha channel (or PNG transparency) was dropped."""

    pixels: Tensor
    bit_depth: int
    path: Path
    had_alpha: bool
    format: str  # "png", "jpeg", "tiff", "bmp" or "webp"
    orientation: int = 1  # the EXIF orientation (1-8) already applied to ``pixels``; 1 = as stored


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = MAX_PIXELS) -> LoadedImage:
    """Read an image file into a float32 (C, H, W) tensor in [0, 1]; raise InputError (one line) if unusable.

    8- and 16-bit samples are divided by 255 or 65535; float (TIFF) samples must already be in [0, 1]. Alpha
    is dropped with one warning; the EXIF orientation is applied, so pixels come out as a viewer shows them.
    An image of more than ``max_pixels`` pixels (width x height, from the header) is refused before decoding;
    ``None`` means no limit.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; check the image path")
    if path.is_dir():
        raise InputError(f"{path} is a directory; give an image file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror}; check permissions") from None
    if not data:
        raise InputError(f"{path} is empty (0 bytes); give a valid image file")
    Image.init()  # registers all of Pillow's format plugins: their signature checks name the format
    fmt = next((f.lower() for f in ("PNG", "JPEG", "TIFF", "BMP", "WEBP") if Image.OPEN[f][1](data[:16])), None)
    if fmt is None:
        raise InputError(f"{path} is not a PNG, JPEG, TIFF, BMP or WebP image; give one of those")
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # Pillow's own limit off: max_pixels is the limit
    try:
        array, alpha, orientation = (_decode_tiff(path, data, max_pixels) if fmt == "tiff"
                                     else _decode_pillow(path, data, max_pixels, fmt))
    except InputError:
        raise
    except Exception as err:  # Pillow and tifffile raise OSError, ValueError, SyntaxError ... for a damaged file
        detail = one_line(err) or type(err).__name__
        if fmt == "tiff":
            damage = f"a damaged or unsupported TIFF ({type(err).__name__}: {detail})"
        else:  # "unrecognized data stream": Pillow's PNG decoder met an unknown row filter
            detail = "invalid scanline filter" if "unrecognized data stream" in detail else detail
            kind = {"png": "PNG", "jpeg": "JPEG"}.get(fmt, "image")
            damage = f"{'a truncated' if 'truncat' in detail.lower() else 'a corrupt'} {kind} ({detail})"
        raise InputError(f"{path} is {damage}; re-export or replace the file") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    array = np.moveaxis(np.atleast_3d(array), -1, 0)  # (H, W[, C]) -> (C, H, W)
    if array.shape[1] == 0 or array.shape[2] == 0:
        raise InputError(f"{path} is an empty image ({array.shape[2]}x{array.shape[1]} pixels)")
    if array.dtype not in (np.uint8, np.uint16) and array.dtype.kind != "f":
        raise InputError(f"{path} stores {array.dtype} samples; give uint8, uint16 or float TIFF")
    depth = 32 if array.dtype.kind == "f" else 8 * array.dtype.itemsize  # the stored precision
    pixels = array.astype(np.float32)
    if depth < 32:
        pixels /= 2**depth - 1
    elif not (np.isfinite(pixels).all() and 0 <= pixels.min() and pixels.max() <= 1):
        raise InputError(f"{path} is a float TIFF with values outside [0, 1] (or NaN/inf); rescale it to [0, 1]")
    if alpha:
        warnings.warn(f"{path}: alpha channel (transparency) dropped; colour values used as stored", stacklevel=2)
    orientation = int(orientation) if isinstance(orientation, (int, np.integer)) and 1 <= orientation <= 8 else 1
    pixels = np.ascontiguousarray(apply_orientation(pixels, orientation))
    return LoadedImage(torch.from_numpy(pixels), depth, path, alpha, fmt, orientation)


def _check_size(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    """Refuse an image of more than ``max_pixels`` (None: no limit); called with the header's size."""
    if max_pixels is not None and width * height > max_pixels:
        raise InputError(f"{path} is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), over the limit "
                         f"of {max_pixels / 1e6:g} megapixels; raise it with --max-pixels or give a smaller image")


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """(..., H, W) stored pixels -> as displayed for EXIF orientation 1-8 (other values: unchanged).

    The tag says where the stored first row and column belong: 2 mirror left-right, 3 rotate 180 degrees,
    4 mirror top-bottom, 5 transpose, 6 rotate 90 degrees clockwise (transpose, mirror left-right),
    7 transverse (transpose, rotate 180), 8 rotate 90 degrees counter-clockwise (transpose, mirror top-bottom).
    """
    if orientation in (5, 6, 7, 8):
        pixels = np.swapaxes(pixels, -2, -1)
    return np.flip(pixels, {2: -1, 3: (-2, -1), 4: -2, 6: -1, 7: (-2, -1), 8: -2}.get(orientation, ()))


def _decode_pillow(path: Path, data: bytes, max_pixels: int | None, fmt: str) -> tuple[np.ndarray, bool, object]:
    """PNG, JPEG, BMP, WebP: Pillow reads the header (size checked), checks the whole file and decodes it.
    Returns (H, W[, C]) uint8 or uint16 samples without alpha, whether there was alpha, the EXIF orientation."""
    with Image.open(io.BytesIO(data)) as img:  # open reads the header only
        _check_size(path, *img.size, max_pixels)
        if fmt == "png":
            Image.open(io.BytesIO(data)).verify()  # every chunk's checksum, without decoding
            if b"IEND\xaeB`\x82" not in data:  # Pillow itself takes a PNG cut inside its end chunk
                raise OSError("image file is truncated (no IEND chunk)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "palette images with transparency": alpha is dropped anyway
            img.load()
            try:
                orientation = img.getexif().get(0x0112, 1)
            except Exception:  # a damaged EXIF block does not make the pixels unusable: show as stored
                orientation = 1
            alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info
            if img.mode.startswith("I"):  # 16-bit gray ("I;16", "I;16B"; "I" for a 16-bit PNG)
                array = np.asarray(img).astype(np.uint16)
            elif fmt == "png" and data[24] == 16:  # IHDR bit depth: Pillow kept 8 of the 16 bits
                array = _decode_16bit_colour(path, data)
            else:
                array = np.asarray(img.convert("L" if img.mode in ("1", "L", "LA", "La") else "RGB"))
    return array, alpha, orientation


def _decode_16bit_colour(path: Path, data: bytes) -> np.ndarray:
    """A 16-bit RGB(A) or gray+alpha PNG that Pillow has checked, as (H, W, C) uint16 from OpenCV, alpha dropped."""
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint16 or array.ndim != 3:
        raise InputError(f"{path} is a 16-bit PNG that OpenCV cannot decode; re-export or replace the file")
    return array[..., 2::-1] if data[25] & 2 else array[..., :1]  # IHDR colour type; OpenCV orders B, G, R (, A)


def _decode_tiff(path: Path, data: bytes, max_pixels: int | None) -> tuple[np.ndarray, bool, object]:
    """TIFF: the page directories checked first (size limit; one full-resolution page, not counting previews
    and masks), then tifffile decodes it. Returns (H, W, C) samples as stored (min-is-white inverted) without
    alpha, whether there was alpha, and tag 274 (orientation)."""
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        for page in tif.pages:
            _check_size(path, page.imagewidth, page.imagelength, max_pixels)
        sizes = [(p.imagewidth, p.imagelength) for p in tif.pages if not (p.is_reduced or p.is_mask)]
        if len(sizes) > 1:
            listed = ", ".join(f"{w}x{h}" for w, h in sizes[:4]) + (", ..." if len(sizes) > 4 else "")
            held = (f"a stack of {len(sizes)} TIFF pages of {sizes[0][0]}x{sizes[0][1]}" if len(set(sizes)) == 1
                    else f"{len(sizes)} TIFF pages of different sizes ({listed})")
            raise InputError(f"{path} holds {held}; give a single-page TIFF")
        series = tif.series[0]  # the image (reduced-resolution previews are its levels)
        axes, array, page = series.axes, series.asarray(), series.keyframe
        orientation = page.tags.valueof(274, 1)  # absent: 1 (as stored)
    if axes not in ("YX", "YXS", "SYX"):
        raise InputError(f"{path} holds a TIFF stack with axes {axes} {array.shape}; give one 2-D image")
    array = np.moveaxis(array, 0, -1) if axes == "SYX" else np.atleast_3d(array)  # (H, W, C)
    channels = array.shape[-1]
    alpha = (channels == 4 and page.photometric == 2) or (channels == 2 and page.extrasamples[-1:] in ((1,), (2,)))
    if alpha:
        array = array[..., :-1]
    if array.shape[-1] not in (1, 3) or page.photometric not in (0, 1, 2):  # min-is-white, min-is-black, RGB
        raise InputError(f"{path} has {channels} channel(s) (TIFF photometric {int(page.photometric)}); "
                         "give a gray, gray+alpha, RGB or RGBA image")
    if page.photometric == 0 and array.dtype.kind in "uf":  # min-is-white (other sample types are refused later)
        array = np.invert(array) if array.dtype.kind == "u" else 1 - array.astype(np.float32)
    return array, alpha, orientation


def encode_image(path: str | os.PathLike[str], pixels: Tensor, *, bit_depth: int = 8,
                 jpeg_quality: int = 95) -> bytes:
    """The file content :func:`write_image` writes for ``path`` (format from its suffix, depths as there).
    ValueError unless ``pixels`` is a finite float (C, H, W) image, C in (1, 3); InputError for a suffix or
    bit depth that cannot be written."""
    suffix = Path(path).suffix.lower()
    if suffix not in _WRITABLE:
        raise InputError(f"cannot write {path}: use a .png, .tif or .jpg file name")
    if bit_depth not in _WRITABLE[suffix]:
        raise InputError(f"cannot write {path} with bit depth {bit_depth}; {suffix} allows "
                         f"{', '.join(map(str, _WRITABLE[suffix]))}")
    if not pixels.is_floating_point():
        raise ValueError(f"expected float pixels in [0, 1], got {pixels.dtype}")
    if pixels.ndim != 3 or pixels.shape[0] not in (1, 3) or 0 in pixels.shape:
        raise ValueError(f"expected a (C, H, W) image with C in (1, 3), got shape {tuple(pixels.shape)}")
    if not torch.isfinite(pixels).all():
        raise ValueError("image contains NaN or infinite values")
    array = pixels.detach().to("cpu", torch.float64).clamp(0, 1).permute(1, 2, 0).numpy()  # (H, W, C)
    samples = (array.astype(np.float32) if bit_depth == 32
               else np.rint(array * (2**bit_depth - 1)).astype(np.uint8 if bit_depth == 8 else np.uint16))
    gray = samples.shape[2] == 1
    if suffix in (".tif", ".tiff"):  # tifffile, which switches to BigTIFF above 4 GB (OpenCV cannot)
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, samples[..., 0] if gray else samples, photometric="minisblack" if gray else "rgb")
        return buffer.getvalue()
    params = [cv2.IMWRITE_PNG_COMPRESSION, 6] if suffix == ".png" else [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    ok, encoded = cv2.imencode(suffix, samples[..., 0] if gray else samples[..., ::-1], params)  # OpenCV: B, G, R
    if not ok:
        raise ValueError(f"OpenCV could not encode a {samples.shape} {samples.dtype} image as {suffix}")
    return encoded.tobytes()


def write_image(path: str | os.PathLike[str], pixels: Tensor, *, bit_depth: int = 8,
                protect: Sequence[str | os.PathLike[str]] = (), jpeg_quality: int = 95,
                group: OutputGroup | None = None) -> None:
    """Write (C, H, W) float pixels (clamped to [0, 1], rounded) atomically.

    ``.png``: 8 or 16 bit; ``.tif``/``.tiff``: 8, 16 or 32 (float32); ``.jpg``/``.jpeg``: 8.
    Parent folders are created. A path that is one of ``protect`` is refused (InputError).
    With ``group`` the file is only staged there, and appears when the group is published.
    """
    data = encode_image(path, pixels, bit_depth=bit_depth, jpeg_quality=jpeg_quality)
    (write_atomic if group is None else group.add)(path, data, protect=protect)


def encode_array(path: str | os.PathLike[str], array: Tensor) -> bytes:
    """The file content :func:`write_array` writes for ``path`` (``.npy`` or ``.tif``, float32)."""
    suffix = Path(path).suffix.lower()
    values = array.detach().to("cpu", torch.float32).numpy()
    buffer = io.BytesIO()
    if suffix == ".npy":
        np.save(buffer, values)
    elif suffix in (".tif", ".tiff"):
        tifffile.imwrite(buffer, values, photometric="minisblack")
    else:
        raise InputError(f"cannot write array {path}: use a .npy or .tif file name")
    return buffer.getvalue()


def write_array(path: str | os.PathLike[str], array: Tensor, *,
                protect: Sequence[str | os.PathLike[str]] = (), group: OutputGroup | None = None) -> None:
    """Write a float map (any shape, e.g. an uncertainty map) as float32 ``.npy`` or ``.tif``."""
    (write_atomic if group is None else group.add)(path, encode_array(path, array), protect=protect)


def list_images(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (by suffix, case-insensitive; hidden files skipped), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a directory; give a folder of images")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith(".") and p.is_file())
