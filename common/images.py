"""Image I/O: images are float32 tensors in [0, 1], layout (C, H, W) with C = 1 (gray) or 3 (RGB).

Libraries do the format work. TIFF (uint8, uint16, float) is read and written by tifffile. PNG, JPEG, BMP
and WebP are read by Pillow, which also finds truncated and corrupt files (chunk checksums, the zlib stream,
scanline filters, a JPEG without its end), reads the EXIF orientation (JPEG, PNG ``eXIf``, WebP) and gives the
size from the header; Pillow keeps only 8 bits of a 16-bit colour PNG, so that one kind is decoded again,
after Pillow has checked it, by OpenCV (libpng, ``IMREAD_UNCHANGED``). PNG (8/16-bit) and JPEG are written by
OpenCV (Pillow cannot write 16-bit RGB; OpenCV is installed as a requirement of albumentations), atomically
through :mod:`common.publish`: refusing any path in ``protect``, and with ``group=`` joining an
:class:`~common.publish.OutputGroup` that is published all together.

Bad input raises :class:`InputError`, one line naming the file; alpha is dropped with one warning. The
width x height in the header is checked against ``max_pixels`` (default :data:`MAX_PIXELS`) before any pixel
data is decoded: a 249 kB PNG can claim 256 megapixels (3 GB as float32 RGB). The EXIF orientation (TIFF tag
274) is applied on read, so pixels come out as a viewer shows them; written files carry none.

Hand-written, because no library does it: the format sniffing by signature (to name the format in errors,
also when the header is too damaged for Pillow), the PNG end check (Pillow accepts a PNG cut inside IEND),
the 16-bit flag and colour type of a colour PNG (IHDR bytes 24-25, which Pillow does not expose),
:func:`apply_orientation` (Pillow's ``exif_transpose`` needs a Pillow image, which cannot hold 16-bit colour
or float pixels: one numpy function serves every format) and the TIFF page and channel rules. Pixel
operations (8-bit rounding, gray conversion, crops) are in :mod:`common.pixels`.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image
from torch import Tensor

from common.errors import InputError
from common.publish import OutputGroup, write_atomic

MAX_PIXELS = 200_000_000  # default limit of read_image (width x height); the one place of this default
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"BM": "bmp", b"II*\x00": "tiff",
               b"MM\x00*": "tiff", b"II+\x00": "tiff", b"MM\x00+": "tiff"}  # (WebP: RIFF, size, WEBP)
_WRITABLE = {".png": (8, 16), ".tif": (8, 16, 32), ".tiff": (8, 16, 32), ".jpg": (8,), ".jpeg": (8,)}


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image: ``pixels`` float32 (C, H, W) in [0, 1], C in {1, 3}.

    ``bit_depth`` is the stored precision: 8, 16, or 32 for a float TIFF. ``had_alpha`` tells
    that an alpha channel (or PNG transparency) was present and dropped.
    """

    pixels: Tensor
    bit_depth: int
    path: Path
    had_alpha: bool
    format: str  # "png", "jpeg", "tiff", "bmp" or "webp"
    orientation: int = 1  # the EXIF orientation (1-8) already applied to ``pixels``; 1 = as stored


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = MAX_PIXELS) -> LoadedImage:
    """Read an image file into a float32 (C, H, W) tensor in [0, 1]; raise InputError if unusable.

    An image of more than ``max_pixels`` pixels (width x height, from the file header, before
    decoding) is refused; ``None`` means no limit.
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
    fmt = "webp" if data[:4] == b"RIFF" and data[8:12] == b"WEBP" else next(
        (name for signature, name in _SIGNATURES.items() if data.startswith(signature)), None)
    if fmt is None:
        raise InputError(f"{path} is not a PNG, JPEG, TIFF, BMP or WebP image; give one of those")
    array, alpha, orientation = (_decode_tiff(path, data, max_pixels) if fmt == "tiff"
                                 else _decode_pillow(path, data, max_pixels, fmt))
    if array.shape[1] == 0 or array.shape[2] == 0:
        raise InputError(f"{path} is an empty image ({array.shape[2]}x{array.shape[1]} pixels)")
    pixels, depth = _normalised(path, array)
    if alpha:
        warnings.warn(f"{path}: alpha channel (transparency) dropped; colour values used as stored",
                      UserWarning, stacklevel=2)
    pixels = np.ascontiguousarray(apply_orientation(pixels, orientation))
    return LoadedImage(torch.from_numpy(pixels), depth, path, alpha, fmt, orientation)


def _check_size(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    """Refuse an image of more than ``max_pixels`` (None: no limit); called with the header's size."""
    if max_pixels is not None and width * height > max_pixels:
        raise InputError(
            f"{path} is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), over the "
            f"limit of {max_pixels / 1e6:g} megapixels; raise it with --max-pixels or give a smaller image")


def _normalised(path: Path, array: np.ndarray) -> tuple[np.ndarray, int]:
    """(C, H, W) stored samples -> float32 in [0, 1], and the stored bit depth (8, 16; 32 for float)."""
    if array.dtype in (np.uint8, np.uint16):
        depth = 8 * array.dtype.itemsize
        return array.astype(np.float32) / (2**depth - 1), depth
    if array.dtype.kind != "f":
        raise InputError(f"{path} stores {array.dtype} samples; give uint8, uint16 or float TIFF")
    pixels = array.astype(np.float32)
    if not (np.isfinite(pixels).all() and 0 <= pixels.min() and pixels.max() <= 1):
        raise InputError(f"{path} is a float TIFF with values outside [0, 1] (or NaN/inf); rescale it to [0, 1]")
    return pixels, 32


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """(..., H, W) stored pixels -> as displayed for EXIF orientation 1-8 (other values: unchanged).

    The tag says where the stored first row and column belong: 2 mirror left-right, 3 rotate 180 degrees,
    4 mirror top-bottom, 5 transpose, 6 rotate 90 degrees clockwise (transpose, mirror left-right),
    7 transverse (transpose, rotate 180), 8 rotate 90 degrees counter-clockwise (transpose, mirror top-bottom).
    """
    if orientation in (5, 6, 7, 8):
        pixels = np.swapaxes(pixels, -2, -1)
    flips = {2: (-1,), 3: (-2, -1), 4: (-2,), 6: (-1,), 7: (-2, -1), 8: (-2,)}
    return np.flip(pixels, flips[orientation]) if orientation in flips else pixels


def _orientation(value: object) -> int:
    """An orientation tag's value if it is 1-8, else 1 (as stored)."""
    return int(value) if isinstance(value, (int, np.integer)) and 1 <= value <= 8 else 1


def _channels_first(array: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) samples -> (C, H, W)."""
    return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)


def _bad(path: Path, what: str) -> InputError:
    return InputError(f"{path} is {what}; re-export or replace the file")


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


@contextlib.contextmanager
def _pillow_size_limit_off() -> Iterator[None]:
    """Pillow's own size limit (a warning above 89 MP, an error above 179 MP) off for one read:
    ``max_pixels`` is the limit, and it may be set above Pillow's."""
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _decode_pillow(path: Path, data: bytes, max_pixels: int | None, fmt: str) -> tuple[np.ndarray, bool, int]:
    """PNG, JPEG, BMP, WebP: Pillow reads the header (size checked), checks the whole file and decodes it.

    Returns (C, H, W) uint8 or uint16 samples without alpha, whether there was alpha, the EXIF orientation.
    """
    try:
        with _pillow_size_limit_off(), Image.open(io.BytesIO(data)) as img:  # open reads the header only
            _check_size(path, *img.size, max_pixels)
            if fmt == "png":
                with Image.open(io.BytesIO(data)) as check:
                    check.verify()  # every chunk's checksum, without decoding
                if b"IEND\xaeB`\x82" not in data:  # Pillow itself takes a PNG cut inside its end chunk
                    raise OSError("image file is truncated (no IEND chunk)")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "palette images with transparency": alpha is dropped anyway
                img.load()
                try:
                    orientation = _orientation(img.getexif().get(0x0112, 1))
                except Exception:  # a damaged EXIF block does not make the pixels unusable: show as stored
                    orientation = 1
                alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info
                if fmt == "png" and data[24] == 16 and not img.mode.startswith("I"):
                    array = _decode_16bit_colour(path, data)
                elif img.mode.startswith("I"):  # 16-bit gray ("I;16", "I;16B"; "I" for a 16-bit PNG)
                    array = np.asarray(img).astype(np.uint16)
                else:
                    array = np.asarray(img.convert("L" if img.mode in ("1", "L", "LA", "La") else "RGB"))
    except InputError:
        raise
    except Exception as err:  # Pillow raises OSError, ValueError, SyntaxError ...
        kind, detail = {"png": "PNG", "jpeg": "JPEG"}.get(fmt, "image"), _first_line(err)
        if fmt == "png" and "unrecognized data stream" in detail:  # Pillow's PNG decoder: an unknown row filter
            detail = "invalid scanline filter"
        state = "a truncated" if "truncat" in detail.lower() else "a corrupt"
        raise _bad(path, f"{state} {kind} ({detail})") from None
    return _channels_first(array), alpha, orientation


def _decode_16bit_colour(path: Path, data: bytes) -> np.ndarray:
    """A 16-bit RGB(A) or gray+alpha PNG that Pillow has checked, as (H, W, C) uint16 from OpenCV, alpha dropped."""
    import cv2

    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint16 or array.ndim != 3:
        raise _bad(path, "a 16-bit PNG that OpenCV cannot decode")
    return array[..., 2::-1] if data[25] & 2 else array[..., :1]  # IHDR colour type; OpenCV orders B, G, R (, A)


def _decode_tiff(path: Path, data: bytes, max_pixels: int | None) -> tuple[np.ndarray, bool, int]:
    """TIFF: pages and size checked from the page directory, then tifffile decodes the first series.

    Returns (C, H, W) samples as stored (min-is-white inverted) without alpha, whether there was alpha,
    the orientation (tag 274).
    """
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            _check_tiff_pages(path, tif, max_pixels)
            series = tif.series[0]
            page = series.keyframe
            axes, array = series.axes, series.asarray()
            photometric, extras = int(page.photometric), tuple(int(e) for e in page.extrasamples)
            orientation = _orientation(getattr(page.tags.get(274), "value", 1))  # tag 274, absent: 1
    except InputError:
        raise
    except Exception as err:  # tifffile raises many types for damaged files
        raise _bad(path, f"a damaged or unsupported TIFF ({type(err).__name__}: {_first_line(err)})") from None
    if axes not in ("YX", "YXS", "SYX"):
        raise InputError(f"{path} holds a TIFF stack with axes {axes} {array.shape}; give one 2-D image")
    array = array if axes == "SYX" else _channels_first(array)
    channels = array.shape[0]
    alpha = (channels == 4 and photometric == 2) or (channels == 2 and extras[-1:] in ((1,), (2,)))
    if alpha:
        array = array[:-1]
    if array.shape[0] not in (1, 3) or photometric not in (0, 1, 2):
        raise InputError(f"{path} has {channels} channel(s) (TIFF photometric {photometric}); "
                         "give a gray, gray+alpha, RGB or RGBA image")
    if photometric == 0 and array.dtype.kind in "uf":  # min-is-white (other sample types are refused later)
        array = np.invert(array) if array.dtype.kind == "u" else 1 - array.astype(np.float32)
    return array, alpha, orientation


def _check_tiff_pages(path: Path, tif: tifffile.TiffFile, max_pixels: int | None) -> None:
    """From the IFDs only (no pixel data): refuse an image over the limit and a file of several
    full-resolution pages (a stack, or pages of different sizes); reduced-resolution previews
    and transparency masks (NewSubfileType bits 0 and 2) are not counted as images."""
    sizes = []
    for page in tif.pages:
        _check_size(path, page.imagewidth, page.imagelength, max_pixels)
        if not int(page.subfiletype) & 0b101:
            sizes.append((page.imagewidth, page.imagelength))
    if len(set(sizes)) > 1:
        listed = ", ".join(f"{w}x{h}" for w, h in sizes[:4]) + (", ..." if len(sizes) > 4 else "")
        raise InputError(f"{path} holds {len(sizes)} TIFF pages of different sizes ({listed}); "
                         "give a single-page TIFF")
    if len(sizes) > 1:
        raise InputError(f"{path} holds a stack of {len(sizes)} TIFF pages of {sizes[0][0]}x{sizes[0][1]}; "
                         "give a single-page TIFF")


def encode_image(path: str | os.PathLike[str], pixels: Tensor, *, bit_depth: int = 8,
                 jpeg_quality: int = 95) -> bytes:
    """The file content :func:`write_image` writes for ``path`` (format from its suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _WRITABLE:
        raise InputError(f"cannot write {path}: use a .png, .tif or .jpg file name")
    if bit_depth not in _WRITABLE[suffix]:
        raise InputError(f"cannot write {path} with bit depth {bit_depth}; {suffix} allows "
                         f"{', '.join(map(str, _WRITABLE[suffix]))}")
    array = _as_hwc(pixels)
    samples = (array.astype(np.float32) if bit_depth == 32
               else np.rint(array * (2**bit_depth - 1)).astype(np.uint8 if bit_depth == 8 else np.uint16))
    gray = samples.shape[2] == 1
    if suffix in (".tif", ".tiff"):
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, samples[..., 0] if gray else samples, photometric="minisblack" if gray else "rgb")
        return buffer.getvalue()
    import cv2  # libpng / libjpeg; OpenCV orders colour B, G, R

    params = [cv2.IMWRITE_PNG_COMPRESSION, 6] if suffix == ".png" else [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    ok, encoded = cv2.imencode(suffix, samples[..., 0] if gray else samples[..., ::-1], params)
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
    path = Path(path)
    values = array.detach().to("cpu", torch.float32).numpy()
    buffer = io.BytesIO()
    if path.suffix.lower() == ".npy":
        np.save(buffer, values)
    elif path.suffix.lower() in (".tif", ".tiff"):
        tifffile.imwrite(buffer, values, photometric="minisblack")
    else:
        raise InputError(f"cannot write array {path}: use a .npy or .tif file name")
    return buffer.getvalue()


def write_array(path: str | os.PathLike[str], array: Tensor, *,
                protect: Sequence[str | os.PathLike[str]] = (), group: OutputGroup | None = None) -> None:
    """Write a float map (any shape, e.g. an uncertainty map) as float32 ``.npy`` or ``.tif``."""
    (write_atomic if group is None else group.add)(path, encode_array(path, array), protect=protect)


def _as_hwc(pixels: Tensor) -> np.ndarray:
    """(C, H, W) float pixels, C in (1, 3) -> (H, W, C) float64 clamped to [0, 1]; ValueError otherwise."""
    if not pixels.is_floating_point():
        raise ValueError(f"expected float pixels in [0, 1], got {pixels.dtype}")
    if pixels.ndim != 3 or pixels.shape[0] not in (1, 3) or 0 in pixels.shape:
        raise ValueError(f"expected a (C, H, W) image with C in (1, 3), got shape {tuple(pixels.shape)}")
    array = pixels.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(array).all():
        raise ValueError("image contains NaN or infinite values")
    return np.clip(np.moveaxis(array, 0, -1), 0.0, 1.0)


def list_images(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (by suffix, case-insensitive; hidden files skipped), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a directory; give a folder of images")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith(".") and p.is_file())
