"""The Python API of stage 2, and the command line's only entry into the method.

    from dvi import denoise
    result = denoise(image, preset="fast", steps=50)   # image: (C,H,W), (H,W,C) or (H,W) in [0,1], or a path
    result.image, result.variance, result.delta, result.lambda_, result.beta0, result.restarts, result.seconds

Options are those of :class:`dvi.config.Config` by their flat names (``steps``, ``beta0``, ``seed``,
``device``, ... : the command-line option without ``--``, dashes as underscores), applied on top of
``preset`` (a shipped preset, ``reference`` or ``fast``) or of a whole ``config``. Images are float
intensities in [0, 1]; ``delta`` is the estimated noise standard deviation on the 0-255 scale.
A bad value raises :class:`common.errors.InputError` naming the option.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from common.errors import InputError
from common.images import MAX_PIXELS, read_image
from common.metrics import score
from common.prior_files import PriorFormat, prior_loader
from common.prior_sets import FULL_SET
from dvi.config import PRESETS, Config, load_preset
from dvi.fitting.fit import FitResult, check_size, noise_level
from dvi.fitting.large import fit_many
from dvi.method.noise_level import NoiseLevel

ImageLike = np.ndarray | Tensor | str | Path


def make_config(*, preset: str = "reference", config: Config | None = None, **overrides: Any) -> Config:
    """``config`` (default: the shipped ``preset``) with ``overrides`` by flat name (None values ignored).

    A ``config`` that is not a :class:`Config`, a ``preset`` that is not a name, or an unknown option name is
    an :class:`InputError` naming it (not a TypeError from deep inside)."""
    if config is not None and not isinstance(config, Config):
        hint = f" (for the shipped preset use preset={config!r})" if config in PRESETS else ""
        raise InputError(f"config must be a dvi.config.Config, not {type(config).__name__}{hint}")
    if not isinstance(preset, str):
        raise InputError(f"preset must be one of {', '.join(PRESETS)}, not {type(preset).__name__}")
    return (config if config is not None else load_preset(preset)).replace(**overrides)


def prior_list(priors: str | Path | Sequence[str | Path] | None) -> list[Path] | None:
    """``priors=`` as a list of paths: one path (a string or a Path) is one prior file, not its characters."""
    if priors is None:
        return None
    if isinstance(priors, (str, Path)):
        return [Path(priors)]
    try:
        items = list(priors)
    except TypeError:
        raise InputError(f"priors must be a list of prior files, not {type(priors).__name__}") from None
    wrong = [item for item in items if not isinstance(item, (str, Path))]
    if wrong or not items:
        raise InputError(f"priors must be a non-empty list of prior file paths, not {priors!r}")
    return [Path(item) for item in items]


@dataclass(frozen=True)
class Layout:
    """How the caller holds an image: ``kind`` "numpy" or "torch", ``axes`` "CHW", "HWC" or "HW"."""

    kind: str
    axes: str
    dtype: str = "float32"  # the caller's float type (numpy's name: float16, float32, float64, bfloat16)

    def to_caller(self, chw: Tensor) -> np.ndarray | Tensor:
        """A (C, H, W) CPU tensor in the caller's layout, container and float type (fits run in float32; the
        result is cast back, so float64 in gives float64 out)."""
        out = chw[0] if self.axes == "HW" else chw.permute(1, 2, 0) if self.axes == "HWC" else chw
        if self.kind == "numpy":
            return out.numpy().astype(self.dtype)
        return out.to(getattr(torch, self.dtype))


def pixel_limit(config: Config) -> int | None:
    """``--max-pixels`` as :func:`common.images.read_image` takes it: auto is ``MAX_PIXELS``, 0 is no limit (None)."""
    limit = config.runtime.max_pixels
    return MAX_PIXELS if limit is None else limit or None


def as_chw(image: ImageLike, *, max_pixels: int | None = MAX_PIXELS, what: str = "image") -> tuple[Tensor, Layout]:
    """``image`` as a float (C, H, W) CPU tensor in [0, 1] and the layout to give results back in.

    A path is read with :func:`common.images.read_image` (at most ``max_pixels``; results come back as
    numpy (H, W, C), or (H, W) for gray). ``what`` names the argument in error messages. A 3-D array is (C, H, W) when its first axis has 1 or 3 entries and its last does not,
    else (H, W, C) when its last has 1 or 3; a 2-D array is one gray channel."""
    if isinstance(image, (str, Path)):
        pixels = read_image(Path(image), max_pixels=max_pixels).pixels
        return pixels, Layout("numpy", "HW" if pixels.shape[0] == 1 else "HWC")
    kind = "torch" if isinstance(image, Tensor) else "numpy"
    if kind == "numpy":
        if not isinstance(image, np.ndarray):
            raise InputError(f"{what} must be a numpy array, a torch tensor or a path, not {type(image).__name__}")
        if not np.issubdtype(image.dtype, np.floating):
            raise InputError(f"{what} must hold floats in [0, 1], not {image.dtype} (divide by 255 or 65535 first)")
        dtype = str(image.dtype)
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    else:
        if not image.is_floating_point():
            raise InputError(f"{what} must hold floats in [0, 1], not {image.dtype}")
        dtype = str(image.dtype).removeprefix("torch.")
        tensor = image.detach().to("cpu", torch.float32)
    if tensor.ndim == 2:
        axes, chw = "HW", tensor[None]
    elif tensor.ndim == 3 and tensor.shape[0] in (1, 3) and tensor.shape[-1] not in (1, 3):
        axes, chw = "CHW", tensor
    elif tensor.ndim == 3 and tensor.shape[-1] in (1, 3):
        axes, chw = "HWC", tensor.permute(2, 0, 1)
    else:
        raise InputError(f"{what} must be (C, H, W), (H, W, C) or (H, W) with 1 or 3 channels, not {tuple(tensor.shape)}")
    if not torch.isfinite(chw).all():
        raise InputError(f"{what} contains NaN or infinite values")
    if chw.min() < 0 or chw.max() > 1:
        raise InputError(f"{what} values must lie in [0, 1], not [{float(chw.min()):g}, {float(chw.max()):g}]")
    return chw.contiguous(), Layout(kind, axes, dtype)


@dataclass(frozen=True)
class Denoised:
    """One denoised image, in the caller's layout and type (see :func:`as_chw`).

    ``image``: the posterior mean in [0, 1]; ``variance``: the per-element posterior variance var_bar ([0,1]
    scale squared); ``delta``: estimated noise std (0-255 scale); ``lambda_``: the prior weight; ``beta0``:
    the Gamma hyperprior rate used; ``restarts``: refits (restart rule and NaN retries); ``seconds``: the fit's
    wall time (shared by the images of a batch); ``fit``: the full :class:`dvi.fitting.fit.FitResult` (C, H, W).
    """

    image: np.ndarray | Tensor
    variance: np.ndarray | Tensor
    delta: float
    lambda_: float
    beta0: float
    restarts: int
    seconds: float
    fit: FitResult


def priors_loader(priors: Sequence[str | Path] | None = None, *, prior_format: str = "auto",  # noqa: ANN201
                  prior_set: str = FULL_SET, components: int | None = None):
    """``channels -> priors``: the first ``components`` (None: all) of the given prior files, or of the shipped
    ``prior_set`` for the channel count."""
    try:
        fmt = PriorFormat(prior_format)
    except ValueError:
        raise InputError(f"--prior-format must be one of {', '.join(f.value for f in PriorFormat)}, "
                         f"not {prior_format!r}") from None
    return prior_loader(None if priors is None else [Path(p) for p in priors], prior_format=fmt, prior_set=prior_set,
                        components=components)


def denoise_images(images: Sequence[Tensor], config: Config, *, priors: Sequence[str | Path] | None = None,
                   prior_format: str = "auto", names: Sequence[str | None] | None = None,
                   cleans: Sequence[Tensor | None] | None = None,
                   progress: bool = True) -> Iterator[tuple[int, FitResult]]:
    """Fit every image (C, H, W) in [0, 1]; yield ``(index, result)`` as each finishes (in groups, not in order).

    Same-sized images are fitted ``config.runtime.batch`` at a time, large ones in tiles
    (:func:`dvi.fitting.large.fit_many`); every prior file is checked before the first fit."""
    load = priors_loader(prior_list(priors), prior_format=prior_format, prior_set=config.method.prior_set,
                         components=config.method.components)
    for image in images:
        check_size(image, config)  # every image before the first fit (not after the first is published)
    for channels in sorted({image.shape[0] for image in images}):
        load(channels)  # a bad prior file fails before the first fit
    names = list(names) if names is not None else [None] * len(images)
    yield from fit_many(list(images), load, config, names=names, cleans=cleans, progress=progress)


def denoise(image: ImageLike, *, preset: str = "reference", config: Config | None = None,
            priors: Sequence[str | Path] | None = None, prior_format: str = "auto", name: str | None = None,
            **overrides: Any) -> Denoised:
    """Denoise one image (see the module doc); ``name`` names its TensorBoard run under ``runs/dvi/``."""
    chosen = make_config(preset=preset, config=config, **overrides)
    pixels, layout = as_chw(image, max_pixels=pixel_limit(chosen))
    [(_, result)] = list(denoise_images([pixels], chosen, priors=priors, prior_format=prior_format, names=[name],
                                        progress=chosen.runtime.progress))
    return Denoised(image=layout.to_caller(result.denoised), variance=layout.to_caller(result.variance),
                    delta=result.noise.delta, lambda_=result.noise.weight, beta0=result.beta0,
                    restarts=result.restarts, seconds=result.seconds, fit=result)


@dataclass(frozen=True)
class Evaluation:
    """:func:`evaluate`'s result: the denoised image and its scores against the reference (PSNR in dB on
    [0, 1] intensities; ``psnr_8bit`` of the 8-bit rounded estimate; ``noisy_psnr`` of the input)."""

    denoised: Denoised
    psnr: float
    ssim: float
    psnr_8bit: float
    noisy_psnr: float


def evaluate(noisy: ImageLike, clean: ImageLike, **options: Any) -> Evaluation:
    """Denoise ``noisy`` (see :func:`denoise`, same ``options``) and score it against ``clean``."""
    limit = pixel_limit(make_config(preset=options.get("preset", "reference"), config=options.get("config"),
                                    max_pixels=options.get("max_pixels")))
    reference, _ = as_chw(clean, max_pixels=limit, what="clean image")
    pixels, _ = as_chw(noisy, max_pixels=limit, what="noisy image")
    if reference.shape != pixels.shape:
        raise InputError(f"noisy image is {tuple(pixels.shape)} (C, H, W) but clean is {tuple(reference.shape)}")
    result = denoise(noisy, **options)
    after, before = score(result.fit.denoised, reference), score(pixels, reference)
    return Evaluation(denoised=result, psnr=after.psnr, ssim=after.ssim, psnr_8bit=after.psnr_8bit,
                      noisy_psnr=before.psnr)


def estimate_noise(image: ImageLike, *, preset: str = "reference", config: Config | None = None,
                   **overrides: Any) -> NoiseLevel:
    """The noise level delta (0-255 scale) of ``image`` and the class, lambda and beta0 derived from it."""
    chosen = make_config(preset=preset, config=config, **overrides)
    return noise_level(as_chw(image, max_pixels=pixel_limit(chosen))[0], chosen)
