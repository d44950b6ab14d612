"""The inputs of a command, checked together before any fit: images (size, channels), their priors.

``denoise``, ``evaluate`` and ``estimate-noise`` read every image first and hand them here, so one bad image
of several is refused before the first fit writes anything, with the same wording from every command
(the size rule itself is :func:`dvi.fitting.fit.size_problem`). The prior helpers shared by ``denoise`` and
``evaluate`` (which files an image is fitted with, the note when components share them) live here too, so
that neither command module imports the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import InputError
from dvi.config import Config

if TYPE_CHECKING:
    from torch import Tensor


def prior_paths(priors: Sequence[Path] | None, channels: int, config: Config) -> list[Path]:
    """The prior files a ``channels``-channel image is fitted with (:func:`common.prior_files.chosen_prior_paths`
    for ``config``: the first K of ``--priors`` or of the shipped set of ``config.method.prior_set``)."""
    from common.prior_files import chosen_prior_paths

    return chosen_prior_paths(priors, channels, prior_set=config.method.prior_set,
                              components=config.method.components)


def announce_prior_reuse(priors: Sequence[Path] | None, channels: Iterable[int], config: Config) -> None:
    """One note line when the K components share fewer prior files (component k uses prior k mod count;
    :class:`dvi.fitting.module.ScoreDVI`), for ``--priors`` and for the shipped set of each channel count, and
    one when ``--priors`` names more files than K (the first K are used)."""
    components = config.method.components
    for count in sorted({len(prior_paths(priors, c, config)) for c in set(channels)}):
        if count < components:
            shared = f"{count} priors" if count > 1 else "1 prior"
            print(f"note: {components} components share {shared} (component k uses prior k mod {count})")
    if priors and len(priors) > components:  # the later files are not loaded (prior_paths)
        used = "1 component uses the first" if components == 1 else f"{components} components use the first {components}"
        print(f"note: {used} of the {len(priors)} --priors files")


def check_images(images: Sequence[tuple[Path, Tensor]], config: Config | None, *,
                 priors: Sequence[Path] | None = None, prior_format: str = "auto") -> None:
    """Refuse, before any fit, an image (``(path, pixels (C, H, W))``) too small for ``config`` (None: only the
    noise-level estimate's rule), and prior files that are missing, damaged or of the wrong channel count
    for any of the images (each channel count's priors are loaded once here)."""
    from dvi.api import priors_loader
    from dvi.fitting.fit import check_size

    for path, pixels in images:
        check_size(pixels, config, what=str(path))
    if config is None:
        return
    load = priors_loader(priors, prior_format=prior_format, prior_set=config.method.prior_set,
                         components=config.method.components)
    for channels in sorted({int(pixels.shape[0]) for _, pixels in images}):
        try:
            load(channels)
        except InputError as err:
            first = next(path for path, pixels in images if pixels.shape[0] == channels)
            raise InputError(f"{err} (for {first}, {channels} channel{'s' * (channels != 1)})") from None
