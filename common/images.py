"""Image I/O: images are float32 tensors in [0, 1], layout (C, H, W) with C = 1 (gray) or 3 (RGB).

Reading: PNG (8/16-bit; gray, RGB, palette, gray+alpha, RGBA) and JPEG through torchvision.io,
TIFF (uint8, uint16, float) through tifffile, BMP/WebP through Pillow. An alpha channel is
dropped with a warning. Every bad input raises :class:`InputError` with a one-line message.

Before any pixel data is decoded, the width x height in the file's header is checked against
``max_pixels`` (default :data:`MAX_PIXELS`, 200 megapixels): a small file can claim a huge image
(a 249 kB PNG decodes to 256 megapixels, about 1 GB as uint8 and 3 GB as float32 RGB).

The EXIF orientation tag (JPEG APP1, PNG ``eXIf``, TIFF tag 274, WebP EXIF) is applied on read,
so pixels come out as an image viewer shows them; written files carry no orientation tag.

PNG files are checked in Python (chunk CRCs, complete zlib stream, scanline filter bytes) before
torchvision sees them: its ``decode_png`` crashes the interpreter (segfault) on corrupt pixel
data, and reads a colour palette PNG as gray in ``UNCHANGED`` mode, so palettes are decoded as RGB.

Writing is atomic (temporary file in the target folder, then ``os.replace``, see
:mod:`common.publish`) and refuses to overwrite any path given in ``protect``; with
``group=`` the file joins an :class:`~common.publish.OutputGroup` published all together.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import warnings
import zlib
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
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ORIENTATION_TAG = 0x0112  # EXIF / TIFF tag 274
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


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
    if data.startswith(_PNG_SIGNATURE):
        fmt, (array, depth, alpha, orientation) = "png", _decode_png(path, data, limit)
    elif data.startswith(b"\xff\xd8\xff"):
        fmt, (array, depth, alpha, orientation) = "jpeg", _decode_jpeg(path, data, limit)
    elif data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        fmt, (array, depth, alpha, orientation) = "tiff", _decode_tiff(path, data, limit)
    elif data.startswith(b"BM") or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        fmt = "bmp" if data.startswith(b"BM") else "webp"
        array, depth, alpha, orientation = _decode_pillow(path, data, limit)
    else:
        raise InputError(f"{path} is not a PNG, JPEG, TIFF, BMP or WebP image; give one of those")
    if array.shape[1] == 0 or array.shape[2] == 0:
        raise InputError(f"{path} is an empty image ({array.shape[2]}x{array.shape[1]} pixels)")
    if alpha:
        warnings.warn(f"{path}: alpha channel (transparency) dropped; colour values used as stored",
                      UserWarning, stacklevel=2)
    return LoadedImage(apply_orientation(array, orientation).contiguous(), depth, path, alpha, fmt, orientation)


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
    if orientation == 2:
        return pixels.flip(cols)
    if orientation == 3:
        return pixels.flip(rows, cols)
    if orientation == 4:
        return pixels.flip(rows)
    if orientation == 5:
        return pixels.transpose(rows, cols)
    if orientation == 6:
        return torch.rot90(pixels, -1, (rows, cols))
    if orientation == 7:
        return pixels.transpose(rows, cols).flip(rows, cols)
    if orientation == 8:
        return torch.rot90(pixels, 1, (rows, cols))
    return pixels


def _exif_orientation(exif: bytes) -> int:
    """The orientation (tag 0x0112) in raw EXIF bytes ("Exif\\0\\0" + TIFF structure); 1 if absent or unreadable."""
    from PIL import Image

    try:
        holder = Image.Exif()
        holder.load(exif)
        return _valid_orientation(holder.get(_ORIENTATION_TAG, 1))
    except Exception:  # a damaged EXIF block does not make the pixels unusable: show as stored
        return 1


def _valid_orientation(value: object) -> int:
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 1
    return number if 1 <= number <= 8 else 1


def _bad(path: Path, what: str) -> InputError:
    return InputError(f"{path} is {what}; re-export or replace the file")


def _check_png(path: Path, data: bytes, limit: _PixelLimit) -> tuple[int, int, bool, bytes]:
    """Validate PNG structure and pixel stream; return (bit depth, colour type, has tRNS, eXIf body)."""
    pos, header, idat, has_trns, ended, exif = 8, b"", [], False, False, b""
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if pos + 12 + length > len(data):
            break
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise _bad(path, f"a corrupt PNG (checksum error in {kind.decode('latin-1')} chunk)")
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"eXIf":
            exif = body
        has_trns |= kind == b"tRNS"
        pos += 12 + length
        if kind == b"IEND":
            ended = True
            break
    if not ended:
        raise _bad(path, "a truncated PNG (file ends before the IEND chunk)")
    if len(header) != 13 or not idat:
        raise _bad(path, "a corrupt PNG (missing IHDR or IDAT chunk)")
    width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if width == 0 or height == 0:
        raise InputError(f"{path} is an empty image ({width}x{height} pixels)")
    limit(width, height)  # before inflating the pixel stream
    if ctype not in _PNG_CHANNELS or depth not in (1, 2, 4, 8, 16):
        raise _bad(path, f"a PNG with invalid colour type {ctype} / bit depth {depth}")
    bits = _PNG_CHANNELS[ctype] * depth
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    sizes = [((width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy) for x0, y0, dx, dy in passes]
    sizes = [(w, h) for w, h in sizes if w > 0 and h > 0]
    expected = sum(h * (1 + (w * bits + 7) // 8) for w, h in sizes)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(b"".join(idat), expected + 1)
    except zlib.error:
        raise _bad(path, "a corrupt PNG (pixel data does not decompress)") from None
    if len(raw) != expected or not inflater.eof:
        raise _bad(path, "a corrupt or truncated PNG (wrong amount of pixel data)")
    offset = 0
    for w, h in sizes:
        stride = 1 + (w * bits + 7) // 8
        filters = np.frombuffer(raw, np.uint8, h * stride, offset)[::stride]
        if filters.max() > 4:
            raise _bad(path, "a corrupt PNG (invalid scanline filter)")
        offset += h * stride
    return depth, ctype, has_trns, exif


def _torchvision_decode(path: Path, data: bytes, rgb: bool) -> Tensor:
    """Decode PNG/JPEG bytes with torchvision; warnings about damaged data become InputError."""
    from torchvision.io import ImageReadMode, decode_image

    mode = ImageReadMode.RGB if rgb else ImageReadMode.UNCHANGED
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
        except RuntimeError as err:
            detail = str(err).strip().splitlines()[-1].split(", ")[-1]
            raise _bad(path, f"a damaged or unreadable image ({detail})") from None
    for item in caught:
        if issubclass(item.category, DeprecationWarning):
            continue  # torchvision >= 0.29 deprecates its image codecs
        text = str(item.message)
        if any(word in text.lower() for word in ("truncat", "corrupt", "premature", "incomplete")):
            raise _bad(path, f"damaged ({text})")
        warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    return out


def _decode_png(path: Path, data: bytes, limit: _PixelLimit) -> tuple[Tensor, int, bool, int]:
    depth, ctype, has_trns, exif = _check_png(path, data, limit)
    orientation = _exif_orientation(exif) if exif else 1
    if depth == 16 and _torchvision_version() < (0, 21):
        raise InputError(f"{path} is a 16-bit PNG, which needs torchvision >= 0.21; upgrade "
                         "torchvision or convert the image to 16-bit TIFF")
    out = _torchvision_decode(path, data, rgb=ctype == 3)  # UNCHANGED turns a palette into gray
    alpha = ctype in (4, 6) or has_trns
    if out.shape[0] in (2, 4):
        out = out[:-1]
    if depth == 16:  # torch.uint16 from torchvision >= 0.21
        return out.to(torch.float32) / 65535.0, 16, alpha, orientation
    return out.to(torch.float32) / 255.0, 8, alpha, orientation


def _torchvision_version() -> tuple[int, int]:
    import torchvision

    major, minor = torchvision.__version__.split(".")[:2]
    return int(major), int(minor)


def _decode_jpeg(path: Path, data: bytes, limit: _PixelLimit) -> tuple[Tensor, int, bool, int]:
    orientation, size = _jpeg_header(data)
    if size is not None:
        limit(*size)
    out = _torchvision_decode(path, data, rgb=False)
    if out.shape[0] not in (1, 3):  # CMYK/YCCK: let libjpeg convert to RGB
        out = _torchvision_decode(path, data, rgb=True)
    return out.to(torch.float32) / 255.0, 8, False, orientation


def _jpeg_header(data: bytes) -> tuple[int, tuple[int, int] | None]:
    """(orientation, (width, height)) from the JPEG header segments before the first scan.

    The orientation comes from the first APP1 "Exif" segment (1 if none), the size from the
    start-of-frame segment (None if there is none or it defers the height to a DNL marker).
    """
    pos, orientation, size = 2, 1, None
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan: no more header segments
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            break
        body = data[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and body.startswith(b"Exif\x00\x00") and orientation == 1:
            orientation = _exif_orientation(body)
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and len(body) >= 5:
            height, width = struct.unpack(">HH", body[1:5])
            size = (width, height) if height else None
        pos += 2 + length
    return orientation, size


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


def _decode_pillow(path: Path, data: bytes, limit: _PixelLimit) -> tuple[Tensor, int, bool, int]:
    from PIL import Image

    try:
        with _without_pillow_bomb_check(), Image.open(io.BytesIO(data)) as img:  # open reads the header only
            limit(*img.size)
            img.load()
            orientation = _valid_orientation(img.getexif().get(_ORIENTATION_TAG, 1))
            alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
            img = img.convert("L" if img.mode in ("1", "L", "LA") else "RGB")
            array = np.asarray(img, dtype=np.float32) / 255.0
    except InputError:
        raise
    except Exception as err:  # Pillow raises OSError, ValueError, SyntaxError ...
        raise _bad(path, f"a damaged or unsupported image ({err})") from None
    array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    return torch.from_numpy(np.ascontiguousarray(array)), 8, alpha, orientation


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
    """Encode (H, W, C) uint8/uint16, C in (1, 3), as PNG with the Paeth filter on every row."""
    height, width, channels = array.shape
    depth = 8 * array.dtype.itemsize
    rows = np.ascontiguousarray(array.astype(f">u{array.dtype.itemsize}")).view(np.uint8)
    rows = rows.reshape(height, -1).astype(np.int16)
    bpp = channels * array.dtype.itemsize
    left = np.zeros_like(rows)
    left[:, bpp:] = rows[:, :-bpp]
    up = np.zeros_like(rows)
    up[1:] = rows[:-1]
    upleft = np.zeros_like(rows)
    upleft[1:, bpp:] = rows[:-1, :-bpp]
    guess = left + up - upleft
    dl, du, dul = np.abs(guess - left), np.abs(guess - up), np.abs(guess - upleft)
    pred = np.where((dl <= du) & (dl <= dul), left, np.where(du <= dul, up, upleft))
    filtered = ((rows - pred) % 256).astype(np.uint8)
    raw = np.concatenate([np.full((height, 1), 4, np.uint8), filtered], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, depth, 0 if channels == 1 else 2, 0, 0, 0)
    return (_PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


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
