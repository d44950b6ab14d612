"""Fit ScoreDVI to one noisy image (or B same-sized ones at once): restart rule, NaN recovery (method.md
sections 3-4). Every setting comes from one :class:`dvi.config.Config`."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor

from common.bfdncnn import BFDnCNN
from common.errors import InputError
from common.trainer import build_trainer, check_accelerator, resolve_precision
from dvi.config import Config
from dvi.fitting.module import Posterior, PosteriorAverage, ScoreDVI, steps_loader
from dvi.fitting.ranks import fit_strategy
from dvi.method.elbo import Hyperpriors
from dvi.method.noise_level import MIN_SIDE, NoiseLevel, analyse_noise
from dvi.method.variational import VariationalNets


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
    step_path: str = "eager"  # which step ran (dvi.fitting.module.ScoreDVI.step_path); a tiled fit: its last tile's


def build_module(config: Config, priors: Sequence[BFDnCNN], noisy: Tensor, *, seeds: Sequence[int],
                 noises: Sequence[NoiseLevel] | None = None, beta0s: Sequence[float] | None = None,
                 clean: Tensor | None = None) -> ScoreDVI:
    """The ScoreDVI module for ``config`` fitting the images ``noisy`` (B, C, H, W), one seed each
    (noise levels default to lambda 1; beta0 to ``config.method.beta0``, or the hyperprior default when auto)."""
    count = len(seeds)
    beta0s = beta0s or [config.method.beta0 or Hyperpriors().beta0] * count
    return ScoreDVI(config, priors, noisy, seeds=seeds, weights=[n.weight for n in noises] if noises else [1.0] * count,
                    beta0s=beta0s, deltas=[n.delta for n in noises] if noises else [math.nan] * count, clean=clean)


def fit_precision(config: Config) -> str | int:
    """The Lightning precision a fit runs at: ``config.runtime.precision``, where ``auto`` is bf16-mixed on a
    GPU with bfloat16 and on a CPU with native bfloat16 (AVX512-BF16/AMX: the priors 1.6x faster at
    256x256 on the 2-core CPU, PSNR within the run-to-run spread; docs/performance.md), else 16-mixed on older GPUs
    and 32-true on other CPUs. Only the priors run in the half type; the variational nets and the loss
    stay in float32."""
    return resolve_precision(config.runtime.precision, accelerator=config.runtime.device, cpu_bf16=True)


def _train_once(noisy: Tensor, priors: Sequence[BFDnCNN], config: Config, *, noises: Sequence[NoiseLevel],
                beta0s: Sequence[float], seeds: Sequence[int], name: str | None, clean: Tensor | None,
                callbacks: Sequence[Callback] = ()) -> tuple[Posterior, str]:
    """One Lightning run fitting the images ``noisy`` (B, C, H, W) together; returns what it produced and which
    step ran (:attr:`dvi.fitting.module.ScoreDVI.step_path`)."""
    average = PosteriorAverage()
    steps, runtime = config.method.steps, config.runtime
    trainer = build_trainer(stage="dvi", name=name, precision=fit_precision(config), accelerator=runtime.device,
                            seed=seeds[0], max_steps=steps, max_epochs=1, enable_checkpointing=False,
                            log_every_n_steps=config.log_interval, progress_bar=runtime.progress,
                            num_sanity_val_steps=0, callbacks=[average, *callbacks],
                            benchmark=True,  # fixed shapes: cuDNN picks its fastest convs once
                            strategy=fit_strategy(runtime.device))  # a torchrun rank's own GPU
    module = build_module(config, priors, noisy, seeds=seeds, noises=noises, beta0s=beta0s, clean=clean)
    module.progress_description = f"{name or 'fit'} step"  # the bar: "<image> step 37/100 ... loss" (not epochs)
    if trainer.logger is not None:
        trainer.logger.log_hyperparams({"delta": noises[0].delta, "lambda": noises[0].weight, "beta0": beta0s[0],
                                        "seed": seeds[0], "images": len(seeds),
                                        "noise_class": noises[0].noise_class.name, "steps": steps,
                                        "precision": str(trainer.precision)})
    try:
        trainer.fit(module, train_dataloaders=steps_loader(steps=steps))
    except SIGTERMException:  # Lightning's has no exit code (status 0); give it the shell's 128 + 15
        raise SIGTERMException(128 + signal.SIGTERM) from None
    return average.posterior(), module.step_path


def variational_nets(config: Config, *, channels: int) -> VariationalNets:
    """One image's four variational nets at ``config``'s sizes (freshly initialised)."""
    nets = config.nets
    with torch.random.fork_rng(devices=[]):  # the global random state stays untouched
        return VariationalNets(channels=channels, components=config.method.components, unet_base=nets.unet_width,
                               unet_depth=nets.unet_depth, aux_layers=nets.aux_layers, aux_features=nets.aux_features)


def smallest_side(config: Config) -> int:
    """The smallest image side (px) a fit at ``config`` accepts (the one size rule of stage 2): the noise-level
    estimate's ``MIN_SIDE``, and more than the U-Net's ``2 ** --unet-depth`` (padded to a multiple of that, the
    image must leave at least 2 values per channel at the bottleneck for its batch norm)."""
    return max(2 ** config.nets.unet_depth + 1, MIN_SIDE)


def size_problem(shape: Sequence[int], config: Config | None = None, *, what: str = "the image") -> str:
    """Why an image of ``shape`` (..., H, W) is too small for ``config`` ("" when it is not); ``config`` None:
    only the noise-level estimate's rule (``estimate-noise``)."""
    height, width = int(shape[-2]), int(shape[-1])
    smallest = MIN_SIDE if config is None else smallest_side(config)
    if min(height, width) >= smallest:
        return ""
    needs = ("the noise-level estimate needs" if config is None
             else f"the noise-level estimate and --unet-depth {config.nets.unet_depth} need")
    return (f"{what} is {width}x{height} pixels, too small: {needs} at least {smallest}x{smallest}; "
            "use a larger image" + ("" if config is None or smallest == MIN_SIDE else " or a smaller --unet-depth"))


def check_size(noisy: Tensor, config: Config | None, *, what: str = "the image") -> None:
    """Refuse an image (C, H, W) smaller than the noise estimator and the U-Net need (:func:`size_problem`)."""
    problem = size_problem(noisy.shape, config, what=what)
    if problem:
        raise InputError(problem)


def noise_level(image: Tensor, config: Config) -> NoiseLevel:
    """The noise level of ``image`` (C, H, W) in [0,1] and lambda, class and beta0 at ``config``'s noise classes."""
    check_size(image, None)
    classes = config.method.noise
    return analyse_noise(image, low=classes.low, high=classes.high, gamma=classes.gamma)


def fit_images(noisy: Sequence[Tensor], priors: Sequence[BFDnCNN], config: Config = Config(), *,
               clean: Sequence[Tensor] | None = None, name: str | None = None,
               noise: Sequence[NoiseLevel] | None = None, callbacks: Sequence[Callback] = ()) -> list[FitResult]:
    """Denoise B same-sized images (C, H, W) in [0,1] concurrently; each fit is independent of the others.

    Image b uses seed ``config.runtime.seed`` like a one-image fit, so the results equal B separate calls
    of :func:`fit_image` up to floating-point rounding. Per image: restart once from fresh weights
    (seed + 1) when its mean sigma ends above ``config.method.restart_sigma``; a NaN/inf loss retries once
    with seed + 1, then raises :class:`InputError`. ``noise`` skips the noise-level estimate; ``callbacks``
    (Lightning callbacks) join every run's Trainer.
    """
    shapes = {tuple(image.shape) for image in noisy}
    if len(shapes) != 1:
        raise ValueError(f"images fitted together must have one shape, got {sorted(shapes)}")
    check_accelerator(config.runtime.device)
    for image in noisy:
        check_size(image, config)
    method, seed = config.method, config.runtime.seed
    levels = list(noise) if noise is not None else [noise_level(image, config) for image in noisy]
    beta0s = [level.beta0 if method.beta0 is None else method.beta0 for level in levels]
    count = len(noisy)
    seeds, restarts, nan_retried = [seed] * count, [0] * count, [False] * count
    results: list[FitResult | None] = [None] * count
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    while pending := [i for i in range(count) if results[i] is None]:
        attempt = name
        if name is not None and any(seeds[i] != seed for i in pending):
            attempt = f"{name}-seed{seeds[pending[0]]}" if len(pending) == 1 else f"{name}-retry"
        try:
            posterior, step_path = _train_once(torch.stack([noisy[i] for i in pending]), priors, config,
                                    noises=[levels[i] for i in pending], beta0s=[beta0s[i] for i in pending],
                                    seeds=[seeds[i] for i in pending], name=attempt,
                                    clean=None if clean is None else torch.stack([clean[i] for i in pending]),
                                    callbacks=callbacks)
            finite, sigmas = posterior.finite.tolist(), posterior.mean_sigma.tolist()
        except FloatingPointError:
            finite, sigmas, posterior, step_path = [False] * len(pending), [math.nan] * len(pending), None, ""
        for j, i in enumerate(pending):
            if not finite[j]:
                if nan_retried[i]:
                    raise InputError(f"the fit diverged twice (loss not finite, seed {seeds[i]}); "
                                     f"try another --seed or a smaller --lr (now {method.lr:g})")
                nan_retried[i], seeds[i] = True, seeds[i] + 1
            elif sigmas[j] > method.restart_sigma and restarts[i] == 0:
                restarts[i], seeds[i] = 1, seeds[i] + 1
            else:
                assert posterior is not None
                results[i] = FitResult(
                    denoised=posterior.mean[j].clamp(0, 1).cpu(), variance=posterior.variance[j].cpu(),
                    noise=levels[i], beta0=beta0s[i], mean_sigma=sigmas[j], seconds=math.nan,
                    peak_memory_mb=math.nan, restarts=restarts[i] + int(nan_retried[i]), seed=seeds[i],
                    component_means=posterior.component_means[j].cpu(),
                    component_weights=posterior.component_weights[j].cpu(), batch=count, step_path=step_path)
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else math.nan
    seconds = time.perf_counter() - start
    return [replace(result, seconds=seconds, peak_memory_mb=peak) for result in results]


def fit_image(noisy: Tensor, priors: Sequence[BFDnCNN], config: Config = Config(), *,
              clean: Tensor | None = None, name: str | None = None, noise: NoiseLevel | None = None,
              callbacks: Sequence[Callback] = ()) -> FitResult:
    """Denoise ``noisy`` (C, H, W) in [0,1] with K priors; returns the EMA posterior mean and variance."""
    return fit_images([noisy], priors, config, clean=None if clean is None else [clean], name=name,
                      noise=None if noise is None else [noise], callbacks=callbacks)[0]
