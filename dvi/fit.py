"""Fit ScoreDVI to one noisy image: settings, restart rule, NaN recovery (method.md sections 3-4)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from common.bfdncnn import BFDnCNN
from common.errors import InputError
from common.trainer import build_trainer
from dvi.elbo import Hyperpriors
from dvi.module import ScoreDVI, single_image_loader
from dvi.noise_level import MIN_SIDE, NoiseLevel, analyse_noise


@dataclass(frozen=True)
class FitSettings:
    """How one image is fitted. Defaults are the reference configuration.

    ``beta0`` None picks 0.005 / 0.01 / 0.02 from the noise class (``--beta0 auto``).
    ``restart_sigma``: when the mean of sigma_k (intensity units, [0,1] scale) after the run
    exceeds it, the fit is restarted once from fresh weights (reference rule).
    """

    steps: int = 400
    components: int = 3
    mc_samples: int = 5
    beta0: float | None = None
    alpha0: float = 1.0
    dirichlet: float = 1.0
    lr: float = 1e-3
    ema: float = 0.9
    seed: int = 0
    precision: str = "auto"
    accelerator: str = "auto"
    restart_sigma: float = 0.05
    unet_base: int = 64
    unet_depth: int = 4
    aux_layers: int = 5
    aux_features: int = 32
    image_every: int = 50
    progress_bar: bool = True


@dataclass(frozen=True)
class FitResult:
    """Denoised image (C, H, W) in [0,1], its uncertainty var_bar (C, H, W), and what happened."""

    denoised: Tensor
    variance: Tensor
    noise: NoiseLevel
    beta0: float
    mean_sigma: float
    seconds: float
    peak_memory_mb: float
    restarts: int
    seed: int
    component_means: Tensor
    component_weights: Tensor


def _train_once(noisy: Tensor, priors: Sequence[BFDnCNN], settings: FitSettings, *, noise: NoiseLevel,
                beta0: float, seed: int, name: str | None, clean: Tensor | None) -> ScoreDVI:
    trainer = build_trainer(stage="dvi", name=name, precision=settings.precision, accelerator=settings.accelerator,
                            seed=seed, max_steps=settings.steps, max_epochs=1, enable_checkpointing=False, log_every_n_steps=1,
                            progress_bar=settings.progress_bar, num_sanity_val_steps=0)
    module = ScoreDVI(priors, channels=noisy.shape[0], components=settings.components, mc_samples=settings.mc_samples,
                      weight=noise.weight, hyper=Hyperpriors(alpha0=settings.alpha0, beta0=beta0, d=settings.dirichlet),
                      lr=settings.lr, ema=settings.ema, unet_base=settings.unet_base, unet_depth=settings.unet_depth,
                      aux_layers=settings.aux_layers, aux_features=settings.aux_features,
                      image_every=settings.image_every, clean=None if clean is None else clean.unsqueeze(0),
                      delta=noise.delta)
    if trainer.logger is not None:
        trainer.logger.log_hyperparams({"delta": noise.delta, "lambda": noise.weight, "beta0": beta0, "seed": seed,
                                        "noise_class": noise.noise_class.name, "steps": settings.steps})
    trainer.fit(module, train_dataloaders=single_image_loader(noisy, steps=settings.steps))
    return module


def fit_image(noisy: Tensor, priors: Sequence[BFDnCNN], settings: FitSettings = FitSettings(), *,
              clean: Tensor | None = None, name: str | None = None) -> FitResult:
    """Denoise ``noisy`` (C, H, W) in [0,1] with K priors; returns the EMA posterior mean and variance.

    A NaN/inf loss restarts once with a new seed, then raises :class:`InputError`.
    """
    smallest = max(2 ** settings.unet_depth, MIN_SIDE)
    if min(noisy.shape[-2:]) < smallest:
        raise InputError(f"the image is {noisy.shape[-1]}x{noisy.shape[-2]} pixels; ScoreDVI needs at least "
                         f"{smallest}x{smallest} (noise-level estimate and U-Net)")
    noise = analyse_noise(noisy)
    beta0 = noise.beta0 if settings.beta0 is None else settings.beta0
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start, seed, restarts, nan_retried = time.perf_counter(), settings.seed, 0, False
    while True:
        try:
            attempt = name if seed == settings.seed or name is None else f"{name}-seed{seed}"
            module = _train_once(noisy, priors, settings, noise=noise, beta0=beta0, seed=seed, name=attempt,
                                 clean=clean)
        except FloatingPointError as err:
            if nan_retried:
                raise InputError(f"the fit diverged twice ({err}); try another --seed or a smaller --beta0") from None
            nan_retried, seed = True, seed + 1
            continue
        if module.mean_sigma > settings.restart_sigma and restarts == 0:
            restarts, seed = 1, seed + 1
            continue
        break
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else math.nan
    return FitResult(denoised=module.mean_ema[0].clamp(0, 1).cpu(), variance=module.var_ema[0].cpu(), noise=noise,
                     beta0=beta0, mean_sigma=module.mean_sigma, seconds=time.perf_counter() - start,
                     peak_memory_mb=peak, restarts=restarts + int(nan_retried), seed=seed,
                     component_means=module.last_components["mu"].cpu(), component_weights=module.last_components["pi"].cpu())


def settings_with(settings: FitSettings, **changes: object) -> FitSettings:
    """A copy of ``settings`` with ``changes`` applied (None values are ignored)."""
    return replace(settings, **{key: value for key, value in changes.items() if value is not None})
