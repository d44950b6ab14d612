"""ScoreDVI LightningModule: one noisy image is a T-step "dataset" (method.md sections 3-4)."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from common.bfdncnn import BFDnCNN
from common.metrics import ssim
from dvi.elbo import Hyperpriors, negative_elbo
from dvi.nets import OmegaNet, PhiNet, XNet, ZNet
from dvi.score import expected_log_prior_surrogate


class RepeatedImage(Dataset):
    """The same noisy image (C, H, W) ``steps`` times: one batch per optimisation step."""

    def __init__(self, image: Tensor, *, steps: int) -> None:
        self.image, self.steps = image, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> Tensor:
        return self.image


def single_image_loader(image: Tensor, *, steps: int) -> DataLoader:
    """A DataLoader yielding (1, C, H, W) ``steps`` times."""
    return DataLoader(RepeatedImage(image, steps=steps), batch_size=1, shuffle=False, num_workers=0)


def pad_to_multiple(y: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Reflect-pad (N, C, H, W) at the bottom/right to multiples of ``multiple``; return the original size."""
    height, width = y.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        y = F.pad(y, (0, pad_w, 0, pad_h), mode="reflect")
    return y, (height, width)


class ScoreDVI(L.LightningModule):
    """Per-image variational inference with K score priors.

    Args:
        priors: K frozen BF-DnCNNs (component k uses ``priors[k % len(priors)]``); folded to
            plain conv/ReLU stacks, so they have no train/eval state and take no gradients.
        components: K. mc_samples: M samples per component and step.
        weight: lambda(y). hyper: alpha0, beta0, d. ema: weight of the old average in the output EMA.
        unet_base, unet_depth, aux_layers, aux_features: network sizes (defaults = reference).
    Images are in [0,1]. The nets stay in training mode (batch norm on the one image), as in the reference.
    """

    def __init__(
        self,
        priors: Sequence[BFDnCNN],
        *,
        channels: int = 3,
        components: int = 3,
        mc_samples: int = 5,
        weight: float = 1.0,
        hyper: Hyperpriors = Hyperpriors(),
        lr: float = 1e-3,
        ema: float = 0.9,
        unet_base: int = 64,
        unet_depth: int = 4,
        aux_layers: int = 5,
        aux_features: int = 32,
        image_every: int = 50,
        clean: Tensor | None = None,
        delta: float = float("nan"),
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["priors", "clean"])
        self.delta = delta
        self.priors = nn.ModuleList(prior.folded().requires_grad_(False) for prior in priors)
        self.x_net = XNet(channels=channels, components=components, base=unet_base, depth=unet_depth)
        aux = dict(channels=channels, components=components, layers=aux_layers, features=aux_features)
        self.phi_net, self.z_net, self.omega_net = PhiNet(**aux), ZNet(**aux), OmegaNet(**aux)
        self.hyper, self.weight = hyper, weight
        self.register_buffer("clean", clean, persistent=False)
        self.mean_ema: Tensor | None = None
        self.var_ema: Tensor | None = None
        self.mean_sigma = float("nan")

    def forward(self, y: Tensor) -> dict[str, Tensor]:
        """All variational outputs for y (N, C, H, W), H and W padded to the U-Net's multiple."""
        mu, log_var = self.x_net(y)
        log_alpha, log_beta = self.phi_net(y)
        return {"mu": mu, "log_var": log_var, "log_alpha": log_alpha, "log_beta": log_beta,
                "pi": self.z_net(y), "d_hat": self.omega_net(y)}

    def training_step(self, y: Tensor, batch_idx: int) -> Tensor:
        padded, (height, width) = pad_to_multiple(y, 2 ** self.hparams.unet_depth)
        out = {key: value[..., :height, :width] for key, value in self(padded).items()}
        surrogate = expected_log_prior_surrogate(out["mu"].float(), out["log_var"].float(), self.priors,
                                                 samples=self.hparams.mc_samples)
        terms = negative_elbo(y=y.float(), mu=out["mu"].float(), log_var=out["log_var"].float(), pi=out["pi"].float(),
                              log_alpha=out["log_alpha"].float(), log_beta=out["log_beta"].float(),
                              d_hat=out["d_hat"].float(), expected_log_prior=surrogate, weight=self.weight,
                              hyper=self.hyper)
        if not torch.isfinite(terms.total):
            raise FloatingPointError(f"the loss became {terms.total.item()} at step {self.global_step}")
        self._update_output(out)
        self._log_step(terms, y, out)
        return terms.total

    @torch.no_grad()
    def _update_output(self, out: dict[str, Tensor]) -> None:
        """EMA of mu_bar = sum_k pi_k mu_k and var_bar = sum_k pi_k^2 sigma2_k (initialised with y and var_bar)."""
        pi = out["pi"].float()
        mean = (pi * out["mu"].float()).sum(1)
        var = (pi.square() * out["log_var"].float().exp()).sum(1)
        if self.mean_ema is None:
            self.mean_ema, self.var_ema = self._initial_mean, var
        a = self.hparams.ema
        self.mean_ema = a * self.mean_ema + (1 - a) * mean
        self.var_ema = a * self.var_ema + (1 - a) * var
        self.mean_sigma_t = (0.5 * out["log_var"].float()).exp().mean()
        self.last_components = {"mu": out["mu"][0].float().detach(), "pi": pi[0].detach()}

    def on_train_batch_start(self, y: Tensor, batch_idx: int) -> None:
        if self.mean_ema is None:
            self._initial_mean = y.float().clone()

    def _log_step(self, terms, y: Tensor, out: dict[str, Tensor]) -> None:  # noqa: ANN001
        values = {"loss/total": terms.total, "loss/L1": terms.l1, "loss/L2_closed": terms.l2_closed,
                  "loss/L3": terms.l3, "loss/L4": terms.l4, "loss/L5": terms.l5,
                  "fit/mean_sigma": self.mean_sigma_t, "fit/lambda": self.weight, "fit/delta": self.delta}
        if self.clean is not None:
            mse = (self.mean_ema.clamp(0, 1) - self.clean).square().mean()
            values["fit/psnr"] = -10 * torch.log10(mse.clamp_min(1e-12))
        self.log_dict(values, on_step=True, on_epoch=False, batch_size=1)
        if self.hparams.image_every and self.global_step % self.hparams.image_every == 0:
            self._log_images(y, out)

    def _log_images(self, y: Tensor, out: dict[str, Tensor]) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_image"):
            return
        step = self.global_step
        experiment.add_image("image/noisy", y[0].float().clamp(0, 1), step)
        experiment.add_image("image/estimate", self.mean_ema[0].clamp(0, 1), step)
        var = self.var_ema[0]
        experiment.add_image("image/uncertainty", (var / var.max().clamp_min(1e-12)).sqrt(), step)
        for k in range(out["pi"].shape[1]):
            experiment.add_image(f"pi/component_{k}", out["pi"][0, k].float(), step)
        if self.clean is not None:
            experiment.add_scalar("fit/ssim", ssim(self.mean_ema[0], self.clean[0]), step)

    def on_train_end(self) -> None:
        self.mean_sigma = float(self.mean_sigma_t)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        nets = [self.x_net, self.phi_net, self.z_net, self.omega_net]
        return torch.optim.Adam([p for net in nets for p in net.parameters()], lr=self.hparams.lr)
