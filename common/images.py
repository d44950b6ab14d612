"""Image I/O: images are float32 tensors in [0, 1], layout (C, H, W) with C = 1 (gray) or 3 (RGB).

Reading goes through libraries: TIFF (uint8, uint16, float) through tifffile; PNG, JPEG, BMP and WebP
through Pillow, which also finds truncated and corrupt files (chunk checksums, the zlib stream, scanline
filters, a JPEG without its end), reads the EXIF orientation and gives the size from the header. Pillow
keeps only 8 bits of a 16-bit colour PNG, so that one kind is decoded again, after Pillow has checked it,
by OpenCV (libpng; ``IMREAD_UNCHANGED`` keeps 16 bits). An alpha channel is dropped with a warning.
Every bad input raises :class:`InputError` with a one-line message.

Before any pixel data is decoded, the width x height in the file's header (Pillow's ``open`` and
tifffile's page directory read only the header) is checked against ``max_pixels`` (default
:data:`MAX_PIXELS`, 200 megapixels): a small file can claim a huge image (a 249 kB PNG decodes to
256 megapixels, about 1 GB as uint8 and 3 GB as float32 RGB).

The EXIF orientation tag (JPEG APP1, PNG ``eXIf``, WebP EXIF as Pillow reads them; TIFF tag 274) is
applied on read, so pixels come out as an image viewer shows them; written files carry no orientation.

Writing: PNG (8/16-bit gray and RGB) through OpenCV's libpng encoder (Pillow cannot write 16-bit RGB and
torchvision's encoder takes uint8 only; OpenCV is already installed as a requirement of albumentations);
TIFF through tifffile; JPEG through Pillow. Atomic (temporary file in the target folder, then
``os.replace``, see :mod:`common.publish`), refusing to overwrite any path given in ``protect``; with
``group=`` the file joins an :class:`~common.publish.OutputGroup` published all together.

Hand-written, because no library does it: the format sniffing by signature (to name the format in errors),
the 16-bit flag of a PNG (the bit-depth byte of its IHDR, which Pillow does not expose for colour PNGs),
:func:`apply_orientation` on tensors (Pillow's ``exif_transpose`` works on its own images, which cannot hold
16-bit colour or float TIFF pixels) and the TIFF page and channel rules.
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
from torch import Tensor

from common.errors import InputError
from common.publish import OutputGroup, write_atomic

MAX_PIXELS = 200_000_000  # default limit of read_image (width x height); the one place of this default
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})
BT601_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights for R, G, B

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ORIENTATION_TAG = 0x0112  # EXIF / TIFF tag 274
_END = {"png": b"IEND\xaeB`\x82", "jpeg": b"\xff\xd9", "bmp": b"", "webp": b""}  # a whole file ends with this


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
    limit = _PixelLimit(path, max_pixels)
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
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        fmt, (array, depth, alpha, orientation) = "tiff", _decode_tiff(path, data, limit)
    else:
        fmt = _pillow_format(data)
        if fmt is None:
            raise InputError(f"{path} is not a PNG, JPEG, TIFF, BMP or WebP image; give one of those")
        array, depth, alpha, orientation = _decode_pillow(path, data, limit, fmt)
    if array.shape[1] == 0 or array.shape[2] == 0:
        raise InputError(f"{path} is an empty image ({array.shape[2]}x{array.shape[1]} pixels)")
    if alpha:
        warnings.warn(f"{path}: alpha channel (transparency) dropped; colour values used as stored",
                      UserWarning, stacklevel=2)
    return LoadedImage(apply_orientation(array, orientation).contiguous(), depth, path, alpha, fmt, orientation)


def _pillow_format(data: bytes) -> str | None:
    """The format of a file Pillow decodes, from its signature (None: not one of ours)."""
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


@dataclass(frozen=True)
class _PixelLimit:
    """The ``max_pixels`` check of one read: call it with the header's size before decoding."""

    path: Path
    max_pixels: int | None

    def __call__(self, width: int, height: int) -> None:
        if self.max_pixels is not None and width * height > self.max_pixels:
            raise InputError(
                f"{self.path} is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), over the "
                f"limit of {self.max_pixels / 1e6:g} megapixels; raise it with --max-pixels or give a smaller image")


def apply_orientation(pixels: Tensor, orientation: int) -> Tensor:
    """(..., H, W) stored pixels -> as displayed for EXIF orientation 1-8 (other values: unchanged).

    The tag says where the stored first row and column belong: 2 mirror left-right, 3 rotate
    180 degrees, 4 mirror top-bottom, 5 transpose, 6 rotate 90 degrees clockwise, 7 transverse
    (transpose then rotate 180), 8 rotate 90 degrees counter-clockwise.
    """
    rows, cols = pixels.ndim - 2, pixels.ndim - 1
    if orientation in (5, 7):
        pixels = pixels.transpose(rows, cols)
    flips = {2: (cols,), 3: (rows, cols), 4: (rows,), 7: (rows, cols)}.get(orientation)
    if flips:
        return pixels.flip(flips)
    if orientation in (6, 8):
        return torch.rot90(pixels, -1 if orientation == 6 else 1, (rows, cols))
    return pixels


def _valid_orientation(value: object) -> int:
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 1
    return number if 1 <= number <= 8 else 1


def _bad(path: Path, what: str) -> InputError:
    return InputError(f"{path} is {what}; re-export or replace the file")


def _decode_pillow(path: Path, data: bytes, limit: _PixelLimit, fmt: str) -> tuple[Tensor, int, bool, int]:
    """PNG, JPEG, BMP, WebP: Pillow reads the header (size checked), decodes and checks the whole file."""
    from PIL import Image

    try:
        with _without_pillow_bomb_check(), Image.open(io.BytesIO(data)) as img:  # open reads the header only
            limit(*img.size)
            if fmt == "png":
                with Image.open(io.BytesIO(data)) as check:
                    check.verify()  # every chunk's checksum, without decoding
            if _END[fmt] not in data:
                raise OSError(f"image file is truncated (no end-of-image {_END[fmt]!r})")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "palette images with transparency": alpha is dropped anyway
                img.load()
                try:
                    orientation = _valid_orientation(img.getexif().get(_ORIENTATION_TAG, 1))
                except Exception:  # a damaged EXIF block does not make the pixels unusable: show as stored
                    orientation = 1
                alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info
                if fmt == "png" and data[24] == 16 and not img.mode.startswith("I"):
                    return _decode_16bit_colour(path, data), 16, alpha, orientation
                if img.mode.startswith("I"):  # 16-bit gray ("I;16", "I;16B"; "I" for a 16-bit PNG)
                    array, depth = np.asarray(img.convert("I"), dtype=np.float32) / 65535.0, 16
                else:
                    img = img.convert("L" if img.mode in ("1", "L", "LA", "La") else "RGB")
                    array, depth = np.asarray(img, dtype=np.float32) / 255.0, 8
    except InputError:
        raise
    except Exception as err:  # Pillow raises OSError, ValueError, SyntaxError ...
        kind = {"png": "PNG", "jpeg": "JPEG"}.get(fmt, "image")
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if fmt == "png" and "unrecognized data stream" in detail:  # Pillow's PNG decoder: an unknown row filter
            detail = "invalid scanline filter"
        state = "a truncated" if "truncat" in detail.lower() else "a corrupt"
        raise _bad(path, f"{state} {kind} ({detail})") from None
    array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    return torch.from_numpy(np.ascontiguousarray(array)), depth, alpha, orientation


def _decode_16bit_colour(path: Path, data: bytes) -> Tensor:
    """A 16-bit RGB(A) / gray+alpha PNG that Pillow has checked, decoded at full precision by OpenCV."""
    import cv2

    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint16:
        raise _bad(path, "a 16-bit PNG that OpenCV cannot decode")
    if array.ndim == 2:
        array = array[..., None]
    elif array.shape[2] >= 3:  # OpenCV orders colour B, G, R (, A)
        array = array[..., [2, 1, 0]]
    else:  # gray + alpha
        array = array[..., :1]
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, -1, 0)).astype(np.float32) / 65535.0)


@contextlib.contextmanager
def _without_pillow_bomb_check() -> Iterator[None]:
    """Switch off Pillow's own size limit (warning above 89 MP, error above 179 MP) for one read:
    ``max_pixels`` is the limit, and it may be set above Pillow's."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _decode_tiff(path: Path, data: bytes, limit: _PixelLimit) -> tuple[Tensor, int, bool, int]:
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            _check_tiff_pages(path, tif, limit)
            series = tif.series[0]
            page = series.keyframe
            axes, array = series.axes, series.asarray()
            photometric, extras = int(page.photometric), tuple(int(e) for e in page.extrasamples)
            tag = page.tags.get(_ORIENTATION_TAG)
            orientation = _valid_orientation(tag.value) if tag is not None else 1
    except InputError:
        raise
    except Exception as err:  # tifffile raises many types for damaged files
        raise _bad(path, f"a damaged or unsupported TIFF ({type(err).__name__}: {err})") from None
    if axes == "YX":
        array = array[None]
    elif axes == "YXS":
        array = np.moveaxis(array, -1, 0)
    elif axes != "SYX":
        raise InputError(f"{path} holds a TIFF stack with axes {axes} {array.shape}; give one 2-D image")
    channels = array.shape[0]
    alpha = (channels == 4 and photometric == 2) or (channels == 2 and extras[-1:] in ((1,), (2,)))
    if alpha:
        array = array[:-1]
    if array.shape[0] not in (1, 3) or photometric not in (0, 1, 2):
        raise InputError(f"{path} has {channels} channel(s) (TIFF photometric {photometric}); "
                         "give a gray, gray+alpha, RGB or RGBA image")
    if array.dtype == np.uint8:
        pixels, depth = array.astype(np.float32) / 255.0, 8
    elif array.dtype == np.uint16:
        pixels, depth = array.astype(np.float32) / 65535.0, 16
    elif array.dtype in (np.float16, np.float32, np.float64):
        pixels, depth = array.astype(np.float32), 32
        if pixels.size and not (np.isfinite(pixels).all() and 0 <= pixels.min() and pixels.max() <= 1):
            raise InputError(f"{path} is a float TIFF with values outside [0, 1] (or NaN/inf); "
                             "rescale it to [0, 1]")
    else:
        raise InputError(f"{path} stores {array.dtype} samples; give uint8, uint16 or float TIFF")
    if photometric == 0:  # min-is-white
        pixels = 1.0 - pixels
    return torch.from_numpy(np.ascontiguousarray(pixels)), depth, alpha, orientation


def _check_tiff_pages(path: Path, tif: tifffile.TiffFile, limit: _PixelLimit) -> None:
    """From the IFDs only (no pixel data): refuse an image over the limit and a file of several
    full-resolution pages (a stack, or pages of different sizes); reduced-resolution previews
    and transparency masks (NewSubfileType bits 0 and 2) are not counted as images."""
    sizes = []
    for page in tif.pages:
        limit(page.imagewidth, page.imagelength)
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
    allowed = {".png": (8, 16), ".tif": (8, 16, 32), ".tiff": (8, 16, 32), ".jpg": (8,), ".jpeg": (8,)}
    if suffix not in allowed:
        raise InputError(f"cannot write {path}: use a .png, .tif or .jpg file name")
    if bit_depth not in allowed[suffix]:
        raise InputError(f"cannot write {path} with bit depth {bit_depth}; {suffix} allows "
                         f"{', '.join(map(str, allowed[suffix]))}")
    array = _as_hwc(pixels)
    if bit_depth == 32:
        encoded = array.astype(np.float32)
    else:
        encoded = np.rint(array * (2**bit_depth - 1)).astype(np.uint8 if bit_depth == 8 else np.uint16)
    if suffix == ".png":
        return _encode_png(encoded)
    buffer = io.BytesIO()
    if suffix in (".tif", ".tiff"):
        tifffile.imwrite(buffer, encoded[..., 0] if encoded.shape[2] == 1 else encoded,
                         photometric="minisblack" if encoded.shape[2] == 1 else "rgb")
    else:
        from PIL import Image

        Image.fromarray(encoded[..., 0] if encoded.shape[2] == 1 else encoded).save(
            buffer, "JPEG", quality=jpeg_quality)
    return buffer.getvalue()


def write_image(path: str | os.PathLike[str], pixels: Tensor, *, bit_depth: int = 8,
                protect: Sequence[str | os.PathLike[str]] = (), jpeg_quality: int = 95,
                group: OutputGroup | None = None) -> None:
    """Write (C, H, W) float pixels (clamped to [0, 1], rounded) atomically.

    ``.png``: 8 or 16 bit; ``.tif``/``.tiff``: 8, 16 or 32 (float32); ``.jpg``/``.jpeg``: 8.
    Parent folders are created. A path that is one of ``protect`` is refused (InputError).
    With ``group`` the file is only staged there, and appears when the group is published.
    """
    _publish(path, encode_image(path, pixels, bit_depth=bit_depth, jpeg_quality=jpeg_quality), protect, group)


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
    _publish(path, encode_array(path, array), protect, group)


def _publish(path: str | os.PathLike[str], data: bytes, protect: Sequence[str | os.PathLike[str]],
             group: OutputGroup | None) -> None:
    if group is None:
        write_atomic(path, data, protect=protect)
    else:
        group.add(path, data, protect=protect)


def _as_hwc(pixels: Tensor) -> np.ndarray:
    if not pixels.is_floating_point():
        raise ValueError(f"expected float pixels in [0, 1], got {pixels.dtype}")
    if pixels.ndim != 3 or pixels.shape[0] not in (1, 3) or 0 in pixels.shape:
        raise ValueError(f"expected a (C, H, W) image with C in (1, 3), got shape {tuple(pixels.shape)}")
    array = pixels.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(array).all():
        raise ValueError("image contains NaN or infinite values")
    return np.clip(np.moveaxis(array, 0, -1), 0.0, 1.0)


def _encode_png(array: np.ndarray) -> bytes:
    """Encode (H, W, C) uint8/uint16, C in (1, 3), as PNG with OpenCV (libpng; OpenCV wants B, G, R)."""
    import cv2

    ok, encoded = cv2.imencode(".png", array[..., ::-1] if array.shape[2] == 3 else array[..., 0],
                               [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {array.shape} {array.dtype} image as PNG")
    return encoded.tobytes()


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


def list_images(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (by suffix, case-insensitive; hidden files skipped), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a directory; give a folder of images")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith(".") and p.is_file())


def center_crop(pixels: Tensor, size: int) -> Tensor:
    """The central ``size`` x ``size`` window of (..., H, W) (whole sides where the image is smaller)."""
    height, width = pixels.shape[-2:]
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    return pixels[..., top:top + size, left:left + size]
