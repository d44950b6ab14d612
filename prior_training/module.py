"""GaussianDenoiser: trains a BF-DnCNN as a blind MMSE Gaussian denoiser (method.md section 1-2)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchvision.utils import make_grid

from common.bfdncnn import BFDnCNN
from common.errors import InputError
from common.prior_files import load_prior
from prior_training.noise import NoiseRecipe, Weighting
from prior_training.sampler import PatchSampler

RECIPE = NoiseRecipe()  # the defaults of the noise options below
VAL_SIGMAS = (0.0, 1.0, 2.0, 5.0, 15.0, 25.0, 50.0)  # 0-255 scale; 0 feeds the clean image itself


def batch_psnr(estimate: Tensor, reference: Tensor) -> Tensor:
    """PSNR in dB per image of (N, C, H, W) tensors in [0,1] (estimate clipped to [0,1])."""
    mse = (estimate.clamp(0, 1) - reference).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def adam_for(parameters: Iterable[Tensor], *, lr: float) -> torch.optim.Adam:
    """Adam; the fused CUDA implementation (one kernel for all parameters) when every parameter is on a
    CUDA device, the default (foreach) one elsewhere. Same update either way."""
    parameters = list(parameters)
    fused = bool(parameters) and all(p.device.type == "cuda" for p in parameters)
    return torch.optim.Adam(parameters, lr=lr, fused=fused or None)


class GaussianDenoiser(L.LightningModule):
    """Blind Gaussian denoising: clean patches in [0,1], AWGN with a noise level drawn per patch and added
    on the device, a (weighted) MSE loss, Adam with cosine decay.

    The noise levels and the loss weights follow :class:`~prior_training.noise.NoiseRecipe` (equations in
    prior_training/noise.py): ``sigma_max``, ``light_fraction``, ``sigma_floor`` (0-255 scale) set
    ``p(sigma) = (1 - f) U[0, sigma_max] + f LogU[sigma_floor, sigma_max]``; ``loss_weighting`` and
    ``weight_offset`` set the loss: ``L = sum_b w_b mse_b / sum_b w_b`` with ``w_b = w(sigma_b)``, or
    ``log_mse``'s ``L = mean_b ln(mse_b + (c/255)^2)``. The defaults are the shipped priors' light-noise recipe
    (NoiseRecipe); ``light_fraction 0`` with ``loss_weighting mse`` is the BF-CNN recipe.

    Training batches come either as clean patches (the DataLoader pipeline; noise is added here) or,
    with the device pipeline, as a step index: the batch of step ``global_step`` is then drawn from the
    datamodule's :class:`~prior_training.sampler.PatchSampler`, moved to this module's device at fit start.

    Validation: PSNR at each of ``val_sigmas`` (0-255 scale; 0 feeds the clean image) on held-out images
    with noise fixed by a seed, logged as ``val/psnr_<sigma>`` and their mean ``val/psnr``; and
    ``val/worst_change = min_sigma (psnr_sigma - target_sigma)``, the checkpoint criterion: the worst
    noise level decides, not the mean. ``val_targets`` (dB, one per sigma) default to the PSNRs of the
    sanity validation before the first step (without one: the first validation), so a fine-tune is judged by
    its worst change from where it started (set them for a run from scratch, whose start is the identity).

    Speed options (numerics unchanged): ``channels_last`` (None: on CUDA devices) stores weights and
    batches channels-last, the layout cuDNN's and oneDNN's fastest convolution kernels use; Adam is the
    fused (single-kernel) implementation when every parameter is on a CUDA device (see :func:`adam_for`).
    ``torch.compile`` is not used: it has not been measured to pay for this network.
    """

    def __init__(
        self,
        *,
        channels: int = 3,
        depth: int = 20,
        features: int = 64,
        sigma_max: float = RECIPE.sigma_max,
        light_fraction: float = RECIPE.light_fraction,
        sigma_floor: float = RECIPE.sigma_floor,
        loss_weighting: Weighting = RECIPE.loss_weighting,
        weight_offset: float = RECIPE.weight_offset,
        lr: float = 1e-3,
        lr_final_fraction: float = 0.01,
        val_sigmas: tuple[float, ...] = VAL_SIGMAS,
        val_targets: tuple[float, ...] | None = None,
        grid_sigma: float = 25.0,
        init_prior: Path | None = None,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        try:
            self.noise = NoiseRecipe(sigma_max=sigma_max, light_fraction=light_fraction, sigma_floor=sigma_floor,
                                     loss_weighting=loss_weighting, weight_offset=weight_offset)
        except ValueError as err:  # NoiseRecipe's messages start with the field's name, which is the option's
            raise InputError(f"--model.{err}") from None
        if val_targets is not None and len(val_targets) != len(val_sigmas):
            raise InputError(f"--model.val_targets needs one PSNR per --model.val_sigmas value ({len(val_sigmas)}), "
                             f"not {len(val_targets)}")
        self.val_targets: tuple[float, ...] | None = None if val_targets is None else tuple(map(float, val_targets))
        self._val_scores: dict[float, list[float]] = {}
        try:
            self.denoiser = BFDnCNN(channels=channels, depth=depth, features=features)
        except ValueError as err:  # BFDnCNN's messages start with the argument's name, which is the option's
            raise InputError(f"--model.{err}") from None
        self.steps_before = 0
        self.val_psnr: dict[str, float] = {}  # of the last validation; empty before the first one
        self.patch_sampler: PatchSampler | None = None
        self.use_channels_last = False  # resolved at fit start from ``channels_last`` and the device
        if init_prior is not None:
            self._start_from(Path(init_prior))

    def _start_from(self, path: Path) -> None:
        """Continue from an exported prior file (weights and norms; the optimiser starts afresh)."""
        prior, meta = load_prior(path, channels=self.hparams.channels)
        if (prior.depth, prior.features) != (self.hparams.depth, self.hparams.features):
            raise InputError(f"--model.init_prior {path} is a {prior.depth}-layer, {prior.features}-feature net; "
                             f"set --model.depth {prior.depth} --model.features {prior.features}")
        self.denoiser.load_state_dict(prior.state_dict())
        self.steps_before = meta.steps

    def forward(self, noisy: Tensor) -> Tensor:
        if self.use_channels_last:
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        return self.denoiser(noisy)

    def add_noise(self, clean: Tensor) -> tuple[Tensor, Tensor]:
        """``(clean + sigma * n, sigma)`` with sigma (0-1 scale) drawn per patch from the noise recipe, n ~ N(0, I)."""
        sigma = self.noise.draw(clean.shape[0], device=clean.device).to(clean.dtype)
        return clean + sigma.view(-1, 1, 1, 1) * torch.randn_like(clean), sigma

    def on_fit_start(self) -> None:
        """Device pipeline: move the datamodule's uint8 store to the device Lightning put this module on."""
        self.setup_layout()
        datamodule = getattr(self.trainer, "datamodule", None)
        sampler = getattr(datamodule, "sampler", None)
        self.patch_sampler = sampler.to(self.device) if isinstance(sampler, PatchSampler) else None
        if self.patch_sampler is not None:
            self.patch_sampler.channels_last = self.use_channels_last
            self.patch_sampler.noise = self.noise

    def setup_layout(self) -> None:
        """Resolve ``channels_last`` for this module's device and convert the weights to that layout."""
        wanted = self.hparams.channels_last
        self.use_channels_last = self.device.type == "cuda" if wanted is None else bool(wanted)
        if self.use_channels_last:
            self.denoiser.to(memory_format=torch.channels_last)

    def training_batch(self, batch: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(noisy, clean, sigma) of a training batch: drawn by the sampler for a step index (0-d tensor), else
        the noise is added to the clean patches of the loader; sigma (B,) on the 0-1 scale."""
        if batch.ndim == 0:
            if self.patch_sampler is None:
                raise RuntimeError("a step-index batch needs the device pipeline's sampler (PatchDataModule)")
            # each DDP rank its own batch: key step * world + rank (one process: the step, as before)
            patches = self.patch_sampler.sample(self.global_step * self.trainer.world_size + self.global_rank)
            return patches.noisy, patches.clean, patches.sigma
        noisy, sigma = self.add_noise(batch)
        return noisy, batch, sigma

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        noisy, clean, sigma = self.training_batch(batch)
        loss = self.noise.loss(self(noisy), clean, sigma)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _fixed_noise(self, clean: Tensor, *, sigma: float, seed: int) -> Tensor:
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(clean.shape, generator=generator).to(clean)
        return clean + sigma / 255.0 * noise

    def _evaluate(self, clean: Tensor, batch_idx: int, *, prefix: str) -> None:
        scores = []
        for sigma in self.hparams.val_sigmas:
            noisy = self._fixed_noise(clean, sigma=sigma, seed=1000 * batch_idx + int(sigma))
            denoised = self(noisy)
            psnr = batch_psnr(denoised, clean).mean()
            scores.append(psnr)
            if prefix == "val":
                self._val_scores.setdefault(float(sigma), []).append(float(psnr))
            self.log(f"{prefix}/psnr_{sigma:g}", psnr, batch_size=clean.shape[0])
            if batch_idx == 0 and sigma == self.hparams.grid_sigma and prefix == "val":
                self._log_grid(noisy, denoised, clean)
        self.log(f"{prefix}/psnr", torch.stack(scores).mean(), prog_bar=True, batch_size=clean.shape[0])

    def _log_grid(self, noisy: Tensor, denoised: Tensor, clean: Tensor) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_image"):
            return
        grid = make_grid(torch.cat([noisy[:1], denoised[:1], clean[:1]]).clamp(0, 1).float(), nrow=3)
        experiment.add_image("val/noisy_denoised_clean", grid, self.global_step)

    def validation_step(self, clean: Tensor, batch_idx: int) -> None:
        self._evaluate(clean, batch_idx, prefix="val")

    def test_step(self, clean: Tensor, batch_idx: int) -> None:
        self._evaluate(clean, batch_idx, prefix="test")

    def on_validation_epoch_start(self) -> None:
        self._val_scores = {}

    def on_validation_epoch_end(self) -> None:
        """Mean PSNR per sigma of this validation; the sanity check before training sets the default
        targets; ``val/worst_change`` against them (the checkpoint criterion)."""
        means = {sigma: sum(values) / len(values) for sigma, values in self._val_scores.items() if values}
        sigmas = [float(sigma) for sigma in self.hparams.val_sigmas]
        if len(means) != len(sigmas):
            return  # a partial validation (e.g. a limited sanity check): nothing to compare
        if self.val_targets is None and self.trainer.state.fn == "fit":  # the sanity check, else the first validation
            self.val_targets = tuple(means[sigma] for sigma in sigmas)
        if self.trainer.sanity_checking:
            return
        self.val_psnr = {f"{sigma:g}": value for sigma, value in means.items()}
        if self.val_targets is not None:
            worst = min(means[sigma] - target for sigma, target in zip(sigmas, self.val_targets))
            self.log("val/worst_change", worst, prog_bar=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["val_psnr"] = dict(self.val_psnr)
        checkpoint["steps_before"] = self.steps_before
        checkpoint["val_targets"] = None if self.val_targets is None else list(self.val_targets)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        targets = checkpoint.get("val_targets")
        if self.val_targets is None and targets is not None:
            self.val_targets = tuple(float(value) for value in targets)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = adam_for(self.parameters(), lr=self.hparams.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=total, eta_min=self.hparams.lr * self.hparams.lr_final_fraction)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
