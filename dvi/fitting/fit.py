"""Fit ScoreDVI to one noisy image: settings, restart rule, NaN recovery (method.md sections 3-4)."""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from common.bfdncnn import BFDnCNN
from common.errors import InputError
from common.trainer import build_trainer, resolve_precision
from dvi.method.elbo import Hyperpriors
from dvi.fitting.module import ScoreDVI, steps_loader
from dvi.method.noise_level import MIN_SIDE, NoiseLevel, analyse_noise
from dvi.method.variational import VariationalNets


@dataclass(frozen=True)
class FitSettings:
    """How one image is fitted. Defaults are the reference configuration.

    ``beta0`` None picks 0.005 / 0.01 / 0.02 from the noise class (``--beta0 auto``).
    ``restart_sigma``: when the mean of sigma_k (intensity units, [0,1] scale) after the run
    exceeds it, the fit is restarted once from fresh weights (reference rule).
    ``channels_last``: run the priors in NHWC layout (a whole step 1.38x faster on a 2-core CPU at 128x128).
    ``log_every``: scalars go to TensorBoard every this many steps; each log makes the host wait
    for the device, so GPU runs want 10 or more.
    ``precision``: a Lightning precision, or ``auto`` (:func:`fit_precision`).
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
    log_every: int = 10
    channels_last: bool = True
    progress_bar: bool = True

    @property
    def log_interval(self) -> int:
        """Steps between scalar logs: ``log_every``, or the whole fit when it is shorter (the module computes
        the scalars on the steps the Trainer writes them, so both take this one value)."""
        return min(self.log_every, self.steps)


# CPU preset, chosen by measurement (README, Measured figures): one Monte-Carlo sample, a U-Net of a
# quarter of the work, 100 steps at three times the learning rate (3e-3 beat 2e-3 in 15 of 16 fits, 8 dev
# crops x 2 seeds, by 2.2 dB on the mean, and 4e-3 by 0.1-0.3 dB on the mean), and no restart (after 100
# steps sigma is still above the reference's 0.05 by design; only a fit that did not move at all is restarted).
FAST = FitSettings(steps=100, mc_samples=1, unet_base=32, lr=3e-3, restart_sigma=1.0)


class Preset(enum.Enum):
    """Named starting configurations; options given explicitly on the command line override them.

    REFERENCE: the reference implementation's settings (:class:`FitSettings` defaults).
    FAST: for CPUs, chosen by measurement (README, "Fast preset").
    """

    REFERENCE = "reference"
    FAST = "fast"

    @property
    def settings(self) -> FitSettings:
        return FAST if self is Preset.FAST else FitSettings()


@dataclass(frozen=True)
class FitResult:
    """Denoised image (C, H, W) in [0,1], its uncertainty var_bar (C, H, W), and what happened.

    ``seconds`` and ``peak_memory_mb`` are those of the whole batch of ``batch`` images fitted together.
    """

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
    batch: int = 1


def build_module(settings: FitSettings, priors: Sequence[BFDnCNN], noisy: Tensor, *, seeds: Sequence[int],
                 noises: Sequence[NoiseLevel] | None = None, beta0s: Sequence[float] | None = None,
                 clean: Tensor | None = None) -> ScoreDVI:
    """The ScoreDVI module for ``settings`` fitting the images ``noisy`` (B, C, H, W), one seed each
    (noise levels default to lambda 1)."""
    count = len(seeds)
    beta0s = beta0s or [settings.beta0 or Hyperpriors().beta0] * count
    return ScoreDVI(priors, noisy, seeds=seeds, weights=[n.weight for n in noises] if noises else [1.0] * count,
                    hypers=[Hyperpriors(alpha0=settings.alpha0, beta0=b, d=settings.dirichlet) for b in beta0s],
                    deltas=[n.delta for n in noises] if noises else [math.nan] * count,
                    components=settings.components, mc_samples=settings.mc_samples, lr=settings.lr, ema=settings.ema,
                    unet_base=settings.unet_base, unet_depth=settings.unet_depth, aux_layers=settings.aux_layers,
                    aux_features=settings.aux_features, image_every=settings.image_every,
                    log_every=settings.log_interval, channels_last=settings.channels_last, clean=clean)


def fit_precision(settings: FitSettings) -> str | int:
    """The Lightning precision a fit runs at: ``settings.precision``, where ``auto`` is bf16-mixed on a
    GPU with bfloat16 and on a CPU with native bfloat16 (AVX512-BF16/AMX: the priors 1.6x faster at
    256x256 on the 2-core CPU, PSNR within the run-to-run spread; README), else 16-mixed on older GPUs
    and 32-true on other CPUs. Only the priors run in the half type; the variational nets and the loss
    stay in float32."""
    return resolve_precision(settings.precision, accelerator=settings.accelerator, cpu_bf16=True)


def _train_once(noisy: Tensor, priors: Sequence[BFDnCNN], settings: FitSettings, *, noises: Sequence[NoiseLevel],
                beta0s: Sequence[float], seeds: Sequence[int], name: str | None, clean: Tensor | None,
                callbacks: Sequence[Callback] = ()) -> ScoreDVI:
    """One Lightning run fitting the images ``noisy`` (B, C, H, W) together."""
    trainer = build_trainer(stage="dvi", name=name, precision=fit_precision(settings),
                            accelerator=settings.accelerator, seed=seeds[0], max_steps=settings.steps, max_epochs=1,
                            enable_checkpointing=False, log_every_n_steps=settings.log_interval,
                            progress_bar=settings.progress_bar, num_sanity_val_steps=0, callbacks=list(callbacks),
                            benchmark=True)  # fixed shapes: cuDNN picks its fastest convs once
    module = build_module(settings, priors, noisy, seeds=seeds, noises=noises, beta0s=beta0s, clean=clean)
    if trainer.logger is not None:
        trainer.logger.log_hyperparams({"delta": noises[0].delta, "lambda": noises[0].weight, "beta0": beta0s[0],
                                        "seed": seeds[0], "images": len(seeds),
                                        "noise_class": noises[0].noise_class.name, "steps": settings.steps,
                                        "precision": str(trainer.precision)})
    trainer.fit(module, train_dataloaders=steps_loader(steps=settings.steps))
    return module


def variational_nets(settings: FitSettings, *, channels: int) -> VariationalNets:
    """One image's four variational nets at ``settings``' sizes (freshly initialised)."""
    with torch.random.fork_rng(devices=[]):  # the global random state stays untouched
        return VariationalNets(channels=channels, components=settings.components, unet_base=settings.unet_base,
                               unet_depth=settings.unet_depth, aux_layers=settings.aux_layers,
                               aux_features=settings.aux_features)


def check_size(noisy: Tensor, settings: FitSettings) -> None:
    """Refuse an image (C, H, W) smaller than the noise estimator and the U-Net need."""
    smallest = max(2 ** settings.unet_depth, MIN_SIDE)
    if min(noisy.shape[-2:]) < smallest:
        raise InputError(f"the image is {noisy.shape[-1]}x{noisy.shape[-2]} pixels; ScoreDVI needs at least "
                         f"{smallest}x{smallest} (noise-level estimate and U-Net)")


def fit_images(noisy: Sequence[Tensor], priors: Sequence[BFDnCNN], settings: FitSettings = FitSettings(), *,
               clean: Sequence[Tensor] | None = None, name: str | None = None,
               noise: Sequence[NoiseLevel] | None = None, callbacks: Sequence[Callback] = ()) -> list[FitResult]:
    """Denoise B same-sized images (C, H, W) in [0,1] concurrently; each fit is independent of the others.

    Image b uses seed ``settings.seed`` like a one-image fit, so the results equal B separate calls
    of :func:`fit_image` up to floating-point rounding. Per image: restart once from fresh weights
    (seed + 1) when its mean sigma ends above ``settings.restart_sigma``; a NaN/inf loss retries once
    with seed + 1, then raises :class:`InputError`. ``noise`` skips the noise-level estimate; ``callbacks``
    (Lightning callbacks) join every run's Trainer.
    """
    shapes = {tuple(image.shape) for image in noisy}
    if len(shapes) != 1:
        raise ValueError(f"images fitted together must have one shape, got {sorted(shapes)}")
    for image in noisy:
        check_size(image, settings)
    levels = list(noise) if noise is not None else [analyse_noise(image) for image in noisy]
    beta0s = [level.beta0 if settings.beta0 is None else settings.beta0 for level in levels]
    count = len(noisy)
    seeds, restarts, nan_retried = [settings.seed] * count, [0] * count, [False] * count
    results: list[FitResult | None] = [None] * count
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    while pending := [i for i in range(count) if results[i] is None]:
        attempt = name
        if name is not None and any(seeds[i] != settings.seed for i in pending):
            attempt = f"{name}-seed{seeds[pending[0]]}" if len(pending) == 1 else f"{name}-retry"
        try:
            module = _train_once(torch.stack([noisy[i] for i in pending]), priors, settings,
                                 noises=[levels[i] for i in pending], beta0s=[beta0s[i] for i in pending],
                                 seeds=[seeds[i] for i in pending], name=attempt,
                                 clean=None if clean is None else torch.stack([clean[i] for i in pending]),
                                 callbacks=callbacks)
            finite, mean_sigma = module.finite.cpu().tolist(), module.mean_sigma.tolist()
        except FloatingPointError:
            finite, mean_sigma, module = [False] * len(pending), [math.nan] * len(pending), None
        for j, i in enumerate(pending):
            if not finite[j]:
                if nan_retried[i]:
                    raise InputError(f"the fit diverged twice (loss not finite, seed {seeds[i]}); "
                                     "try another --seed or a smaller --beta0")
                nan_retried[i], seeds[i] = True, seeds[i] + 1
            elif mean_sigma[j] > settings.restart_sigma and restarts[i] == 0:
                restarts[i], seeds[i] = 1, seeds[i] + 1
            else:
                results[i] = FitResult(
                    denoised=module.mean_ema[j].clamp(0, 1).cpu(), variance=module.var_ema[j].cpu(), noise=levels[i],
                    beta0=beta0s[i], mean_sigma=mean_sigma[j], seconds=math.nan, peak_memory_mb=math.nan,
                    restarts=restarts[i] + int(nan_retried[i]), seed=seeds[i],
                    component_means=module.last_components["mu"][j].cpu(),
                    component_weights=module.last_components["pi"][j].cpu(), batch=count)
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else math.nan
    seconds = time.perf_counter() - start
    return [replace(result, seconds=seconds, peak_memory_mb=peak) for result in results]


def fit_image(noisy: Tensor, priors: Sequence[BFDnCNN], settings: FitSettings = FitSettings(), *,
              clean: Tensor | None = None, name: str | None = None, noise: NoiseLevel | None = None,
              callbacks: Sequence[Callback] = ()) -> FitResult:
    """Denoise ``noisy`` (C, H, W) in [0,1] with K priors; returns the EMA posterior mean and variance."""
    return fit_images([noisy], priors, settings, clean=None if clean is None else [clean], name=name,
                      noise=None if noise is None else [noise], callbacks=callbacks)[0]


def settings_with(settings: FitSettings, **changes: object) -> FitSettings:
    """A copy of ``settings`` with ``changes`` applied (None values are ignored)."""
    return replace(settings, **{key: value for key, value in changes.items() if value is not None})
