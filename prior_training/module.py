"""GaussianDenoiser: trains a BF-DnCNN as a blind MMSE Gaussian denoiser (method.md section 1-2)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import make_grid

from common.bfdncnn import BFDnCNN
from common.errors import InputError
from common.prior_files import load_prior
from prior_training.sampler import SIGMA_MAX, PatchSampler


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
    """Blind Gaussian denoising: clean patches in [0,1], AWGN with sigma ~ U[0, sigma_max]/255
    drawn per patch and added on the device, MSE loss, Adam with cosine decay.

    Training batches come either as clean patches (the DataLoader pipeline; noise is added here) or,
    with the device pipeline, as a step index: the batch of step ``global_step`` is then drawn from the
    datamodule's :class:`~prior_training.sampler.PatchSampler`, moved to this module's device at fit start.

    Validation: PSNR at each of ``val_sigmas`` (0-255 scale) on held-out images with noise
    fixed by a seed, logged as ``val/psnr_<sigma>`` and their mean ``val/psnr``.

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
        sigma_max: float = SIGMA_MAX,
        lr: float = 1e-3,
        lr_final_fraction: float = 0.01,
        val_sigmas: tuple[float, ...] = (15.0, 25.0, 50.0),
        grid_sigma: float = 25.0,
        init_prior: Path | None = None,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.denoiser = BFDnCNN(channels=channels, depth=depth, features=features)
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

    def add_noise(self, clean: Tensor) -> Tensor:
        """``clean + sigma * n`` with sigma ~ U[0, sigma_max]/255 per patch, n ~ N(0, I)."""
        sigma = torch.rand(clean.shape[0], 1, 1, 1, device=clean.device, dtype=clean.dtype)
        return clean + sigma * (self.hparams.sigma_max / 255.0) * torch.randn_like(clean)

    def on_fit_start(self) -> None:
        """Device pipeline: move the datamodule's uint8 store to the device Lightning put this module on."""
        self.setup_layout()
        datamodule = getattr(self.trainer, "datamodule", None)
        sampler = getattr(datamodule, "sampler", None)
        self.patch_sampler = sampler.to(self.device) if isinstance(sampler, PatchSampler) else None
        if self.patch_sampler is not None:
            self.patch_sampler.channels_last = self.use_channels_last

    def setup_layout(self) -> None:
        """Resolve ``channels_last`` for this module's device and convert the weights to that layout."""
        wanted = self.hparams.channels_last
        self.use_channels_last = self.device.type == "cuda" if wanted is None else bool(wanted)
        if self.use_channels_last:
            self.denoiser.to(memory_format=torch.channels_last)

    def training_batch(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        """(noisy, clean) of a training batch: drawn by the sampler for a step index (0-d tensor), else
        the noise is added to the clean patches of the loader."""
        if batch.ndim == 0:
            if self.patch_sampler is None:
                raise RuntimeError("a step-index batch needs the device pipeline's sampler (PatchDataModule)")
            # each DDP rank its own batch: key step * world + rank (one process: the step, as before)
            patches = self.patch_sampler.sample(self.global_step * self.trainer.world_size + self.global_rank)
            return patches.noisy, patches.clean
        return self.add_noise(batch), batch

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        noisy, clean = self.training_batch(batch)
        loss = F.mse_loss(self(noisy), clean)
        self.log("train/mse", loss, prog_bar=True)
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

    def on_validation_epoch_end(self) -> None:
        self.val_psnr = {key.removeprefix("val/psnr_"): float(value)
                         for key, value in self.trainer.callback_metrics.items() if key.startswith("val/psnr_")}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["val_psnr"] = dict(self.val_psnr)
        checkpoint["steps_before"] = self.steps_before

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = adam_for(self.parameters(), lr=self.hparams.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=total, eta_min=self.hparams.lr * self.hparams.lr_final_fraction)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
