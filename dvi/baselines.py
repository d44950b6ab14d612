"""Classical denoisers that ``dvi evaluate`` scores beside ScoreDVI, for comparison.

Every baseline gets the same noise level: the toolkit's own estimate ``delta`` of the noisy image
(:func:`dvi.method.noise_level.estimate_noise_level`, docs/method.md section 4; 0-255 scale), passed on
as the standard deviation ``sigma = delta / 255`` on the [0, 1] intensity scale. None sees the clean image.
Real noise is signal dependent and correlated, so this one white-noise sigma is the baselines' handicap as
much as ScoreDVI's: they are run as a user would run them, not tuned per image.

* ``noisy``: the input itself (the score to beat);
* ``nlm``: scikit-image's non-local means (``denoise_nl_means``, fast mode, 5x5 patches searched over 13x13,
  filter strength ``h = 0.8 sigma`` as scikit-image's own examples use it);
* ``wavelet``: scikit-image's ``denoise_wavelet`` with BayesShrink soft thresholds (colour images in YCbCr);
* ``bm3d``: BM3D from the ``bm3d`` package (``bm3d_rgb`` for colour, ``bm3d`` for gray, ``sigma_psd = sigma``).
  It is an optional extra (``pip install -e '.[baselines]'``): its licence allows non-commercial use only,
  so it is never installed by default; asking for it without it is one :class:`InputError` line.

Images are float32 tensors (C, H, W) in [0, 1], C = 1 or 3, on the CPU; outputs are clipped to [0, 1].
"""

from __future__ import annotations  # the array types are annotations only: numpy and torch load on use

import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from common.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

SCOREDVI = "scoredvi"
BASELINES = ("noisy", "nlm", "wavelet", "bm3d")
METHODS = (SCOREDVI, *BASELINES)  # the choices of ``evaluate --methods``, in the order tables list them
DEFAULT_METHODS = (SCOREDVI,)  # ``evaluate`` without ``--methods``


@dataclass(frozen=True)
class BaselineSettings:
    """The baselines' fixed parameters (recorded in each row's ``config_id``)."""

    nlm_patch_size: int = 5
    nlm_patch_distance: int = 6
    nlm_h_factor: float = 0.8  # h = factor * sigma
    wavelet_method: str = "BayesShrink"
    wavelet_mode: str = "soft"


SETTINGS = BaselineSettings()


def check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    """``methods`` without repeats, in :data:`METHODS` order; an unknown name or a missing ``bm3d`` is an
    InputError of one line."""
    unknown = [name for name in methods if name not in METHODS]
    if unknown:
        raise InputError(f"--methods {unknown[0]!r} is not one of {', '.join(METHODS)}")
    if not methods:
        raise InputError(f"--methods needs at least one of {', '.join(METHODS)}")
    if "bm3d" in methods and importlib.util.find_spec("bm3d") is None:
        raise InputError("--methods bm3d needs the bm3d package (non-commercial licence, not installed by "
                         "default): pip install -e '.[baselines]', or leave bm3d out")
    return tuple(name for name in METHODS if name in methods)


def settings_record(method: str, settings: BaselineSettings = SETTINGS) -> dict[str, object]:
    """What determines a baseline's output, for its rows' ``config_id``: the method, its parameters and,
    for BM3D, the package version."""
    record: dict[str, object] = {"method": method}
    if method == "nlm":
        record.update({k: v for k, v in asdict(settings).items() if k.startswith("nlm_")})
    elif method == "wavelet":
        record.update({k: v for k, v in asdict(settings).items() if k.startswith("wavelet_")})
    elif method == "bm3d":
        from importlib.metadata import version

        record["bm3d"] = version("bm3d")
    return record


def denoise_baseline(method: str, noisy: Tensor, *, delta: float, settings: BaselineSettings = SETTINGS) -> Tensor:
    """``noisy`` (C, H, W) in [0, 1] denoised by baseline ``method`` at noise level ``delta`` (0-255 scale)."""
    if method not in BASELINES:
        raise ValueError(f"{method!r} is not a baseline ({', '.join(BASELINES)})")
    if not (math.isfinite(delta) and delta >= 0):
        raise ValueError(f"delta must be a finite noise level >= 0, got {delta}")
    import numpy as np
    import torch

    if method == "noisy":
        return noisy.clone()
    sigma = max(delta / 255.0, 1e-6)  # a zero sigma would make the filters divide by zero
    image = noisy.detach().to("cpu", torch.float64).numpy()
    colour = image.shape[0] == 3
    array = np.moveaxis(image, 0, -1) if colour else image[0]
    out = _FILTERS[method](array, sigma, colour, settings)
    out = np.moveaxis(out, -1, 0) if colour else out[None]
    return torch.from_numpy(np.clip(out, 0.0, 1.0).astype(np.float32))


def _nlm(array: np.ndarray, sigma: float, colour: bool, settings: BaselineSettings) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    return denoise_nl_means(array, h=settings.nlm_h_factor * sigma, sigma=sigma, fast_mode=True,
                            patch_size=settings.nlm_patch_size, patch_distance=settings.nlm_patch_distance,
                            channel_axis=-1 if colour else None)


def _wavelet(array: np.ndarray, sigma: float, colour: bool, settings: BaselineSettings) -> np.ndarray:
    from skimage.restoration import denoise_wavelet

    return denoise_wavelet(array, sigma=sigma, method=settings.wavelet_method, mode=settings.wavelet_mode,
                           rescale_sigma=True, channel_axis=-1 if colour else None, convert2ycbcr=colour)


def _bm3d(array: np.ndarray, sigma: float, colour: bool, settings: BaselineSettings) -> np.ndarray:
    import bm3d

    return bm3d.bm3d_rgb(array, sigma) if colour else bm3d.bm3d(array, sigma)


_FILTERS: dict[str, Callable[[np.ndarray, float, bool, BaselineSettings], np.ndarray]] = {
    "nlm": _nlm, "wavelet": _wavelet, "bm3d": _bm3d}
