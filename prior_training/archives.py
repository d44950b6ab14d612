"""Public clean-image datasets: where they come from, download + checksum + extraction.

Archives go to a cache directory, ``$SCOREDVI_DATA`` or ``~/.cache/scoredvi/datasets``.
A download is verified (md5 and/or sha256) before it is extracted; extraction goes to a
temporary folder renamed into place, so an interrupted or failed run leaves nothing
half-written that a later run would trust.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from torchvision.datasets.utils import download_url, extract_archive

from common.errors import InputError

DATA_ENV = "SCOREDVI_DATA"


@dataclass(frozen=True)
class ArchiveSpec:
    """One downloadable archive. ``image_dir`` is the image folder inside the extracted tree.

    ``url`` None means the archive cannot be downloaded (licence or format): the user places
    the extracted images at ``<cache>/<name>/<image_dir>`` and ``instructions`` says how.
    """

    name: str
    url: str | None
    image_dir: str
    md5: str | None = None
    sha256: str | None = None
    instructions: str = ""


DATASETS: dict[str, ArchiveSpec] = {
    "cbsd300": ArchiveSpec(
        name="cbsd300",
        url="https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/segbench/BSDS300-images.tgz",
        image_dir="BSDS300/images",
        sha256="a5f7d0e49fe135c75518a3543ced24470156fd69305ae77845dff2a5138652b4",
    ),
    "div2k": ArchiveSpec(
        name="div2k",
        url="http://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip",
        image_dir="DIV2K_train_HR",
        md5="bdc2d9338d4e574fe81bf7d158758658",
    ),
    "imagenet-val": ArchiveSpec(
        name="imagenet-val",
        url=None,
        image_dir="ILSVRC2012_img_val",
        instructions="ImageNet is not redistributable: download ILSVRC2012_img_val.tar from image-net.org "
        "(after accepting its terms) and extract its 50,000 JPEGs into",
    ),
    "waterloo": ArchiveSpec(
        name="waterloo",
        url=None,
        image_dir="exploration_database_and_code/pristine_images",
        instructions="the Waterloo Exploration Database ships as a .rar without a published checksum: download "
        "exploration_database_and_code.rar from ivc.uwaterloo.ca, extract it (unrar x) and place pristine_images/ in",
    ),
}


def cache_dir(override: Path | None = None) -> Path:
    """Where archives are cached: ``override``, else ``$SCOREDVI_DATA``, else ``~/.cache/scoredvi/datasets``."""
    if override is not None:
        return Path(override)
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else Path.home() / ".cache" / "scoredvi" / "datasets"


def _digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_archive(path: Path, spec: ArchiveSpec) -> None:
    """Raise :class:`InputError` when ``path`` does not have the checksums ``spec`` records."""
    for algorithm, expected in (("md5", spec.md5), ("sha256", spec.sha256)):
        if expected is not None and _digest(path, algorithm) != expected.lower():
            raise InputError(
                f"{path.name} from {spec.url} failed its {algorithm} check (corrupt or changed download); "
                "it was deleted, run again to retry"
            )


def dataset_images_dir(spec: ArchiveSpec, *, root: Path | None = None) -> Path:
    """The folder of clean images of ``spec`` inside the cache."""
    return cache_dir(root) / spec.name / spec.image_dir


def prepare_archive(spec: ArchiveSpec, *, root: Path | None = None) -> Path:
    """Make sure the images of ``spec`` are in the cache; return their folder.

    Downloads (``torchvision.datasets.utils.download_url``), verifies, extracts into a temporary
    folder and renames it into place. A failed check deletes the download.
    """
    target = cache_dir(root) / spec.name
    images = target / spec.image_dir
    if images.is_dir():
        return images
    if spec.url is None:
        raise InputError(f"dataset '{spec.name}' is not in the cache: {spec.instructions} {images}")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{spec.name}."))
    try:
        filename = spec.url.rstrip("/").rsplit("/", 1)[-1]
        try:
            download_url(spec.url, str(work), filename=filename)
        except Exception as err:  # urllib and http errors come in many types
            raise InputError(f"cannot download {spec.url} ({err}); check the network or place the archive's "
                             f"extracted images in {images}") from None
        verify_archive(work / filename, spec)
        extracted = work / "extracted"
        try:
            extract_archive(str(work / filename), str(extracted))
        except Exception as err:
            raise InputError(f"cannot extract {filename} ({err}); the archive is damaged, run again to retry") from None
        if not (extracted / spec.image_dir).is_dir():
            raise InputError(f"{filename} has no folder {spec.image_dir}; the archive layout changed, "
                             f"place the images in {images} by hand")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(extracted, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return images
