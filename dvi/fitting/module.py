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
from dvi.method.elbo import Hyperpriors, LossTerms, negative_elbo
from dvi.method.score import expected_log_prior_surrogate
from dvi.method.variational import StackedNets, seeded_nets

NOISE_STREAM = 1_000_003  # offset of the Monte-Carlo noise seed from the initialisation seed


class FitSteps(Dataset):
    """The T optimisation steps of a fit, as a dataset of step numbers: one batch per step.

    The noisy images themselves live on the module (:class:`ScoreDVI`'s ``noisy`` buffer), moved to the
    device once, so a step carries no image from the host (on a GPU a per-step copy of a pageable
    host tensor would also make the host wait for the device).
    """

    def __init__(self, *, steps: int) -> None:
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> int:
        return index


def steps_loader(*, steps: int) -> DataLoader:
    """A DataLoader yielding the step numbers 0 .. ``steps`` - 1, one per batch."""
    return DataLoader(FitSteps(steps=steps), batch_size=None, shuffle=False, num_workers=0)


def pad_to_multiple(y: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Reflect-pad (N, C, H, W) at the bottom/right to multiples of ``multiple``; return the original size."""
    height, width = y.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        y = F.pad(y, (0, pad_w, 0, pad_h), mode="reflect")
    return y, (height, width)


def full_precision(x: Tensor) -> Tensor:
    """bf16/fp16 network outputs -> float32 for the loss; float32 and float64 stay as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class ScoreDVI(L.LightningModule):
    """Per-image variational inference with K score priors, for B same-sized images at once.

    Args:
        noisy: the B noisy images (B, C, H, W) in [0,1], fitted together (a buffer: moved to the device once).
        priors: K frozen BF-DnCNNs (component k uses ``priors[k % len(priors)]``); folded to
            plain conv/ReLU stacks, so they have no train/eval state and take no gradients.
        seeds: one per image; image b's nets are initialised from
            ``torch.manual_seed(seeds[b])`` and its Monte-Carlo noise comes from its own generator,
            so a batch of B fits computes what B one-image fits with those seeds compute.
        weights: lambda(y) per image. hypers: alpha0, beta0, d per image. deltas: per image, logged.
        components: K. mc_samples: M samples per component and step. ema: weight of the old
        average in the output EMA. unet_base, unet_depth, aux_layers, aux_features: network sizes.
        log_every: scalars are logged every this many steps, on the steps Lightning writes them (set the
            Trainer's ``log_every_n_steps`` to the same value); each log waits for the device.
        image_every: TensorBoard images every this many steps (0: none).
        check_every: every this many steps the fit stops if no image's loss is finite any more.
        channels_last: run the priors (most of the work) in NHWC memory layout.
    Images are in [0,1]. The nets stay in training mode (batch norm on the one image), as in the reference.
    """

    def __init__(
        self,
        priors: Sequence[BFDnCNN],
        noisy: Tensor,
        *,
        seeds: Sequence[int] = (0,),
        weights: Sequence[float] = (1.0,),
        hypers: Sequence[Hyperpriors] = (Hyperpriors(),),
        deltas: Sequence[float] = (float("nan"),),
        components: int = 3,
        mc_samples: int = 5,
        lr: float = 1e-3,
        ema: float = 0.9,
        unet_base: int = 64,
        unet_depth: int = 4,
        aux_layers: int = 5,
        aux_features: int = 32,
        image_every: int = 50,
        log_every: int = 1,
        check_every: int = 50,
        channels_last: bool = True,
        clean: Tensor | None = None,
    ) -> None:
        super().__init__()
        if not len(noisy) == len(seeds) == len(weights) == len(hypers) == len(deltas):
            raise ValueError(f"seeds, weights, hypers and deltas need one entry per image ({len(noisy)}), got "
                             f"{len(seeds)}, {len(weights)}, {len(hypers)}, {len(deltas)}")
        self.save_hyperparameters(ignore=["priors", "noisy", "clean", "hypers"])
        self.seeds = list(seeds)
        self.priors = nn.ModuleList(prior.folded().requires_grad_(False) for prior in priors)
        self.nets = StackedNets(seeded_nets(self.seeds, channels=noisy.shape[1], components=components,
                                            unet_base=unet_base, unet_depth=unet_depth, aux_layers=aux_layers,
                                            aux_features=aux_features))
        self.register_buffer("noisy", noisy, persistent=False)
        self.register_buffer("clean", clean, persistent=False)
        # per-image lambda, hyperparameters and delta on the device, so neither the loss nor the logging needs a
        # host-to-device copy; float64 here (exact), the nets' dtype from on_fit_start
        stacked = Hyperpriors.stack(hypers, dtype=torch.float64)
        for name, value in (("weight", torch.tensor(list(weights), dtype=torch.float64)), ("alpha0", stacked.alpha0),
                            ("beta0", stacked.beta0), ("dirichlet", stacked.d),
                            ("delta", torch.tensor(list(deltas), dtype=torch.float64))):
            self.register_buffer(f"hyper_{name}", value, persistent=False)
        self.register_buffer("finite", torch.ones(len(self.seeds), dtype=torch.bool), persistent=False)
        self.generators: list[torch.Generator] = []
        self.mean_ema: Tensor | None = None
        self.var_ema: Tensor | None = None
        self.mean_sigma = torch.full((len(self.seeds),), float("nan"))

    def forward(self, y: Tensor) -> dict[str, Tensor]:
        """All variational outputs (B, K, C, H, W) for y (B, C, H, W), H and W padded to the U-Net's multiple."""
        return self.nets(y)

    def on_fit_start(self) -> None:
        dtype = next(self.nets.parameters()).dtype  # float64 under "64-true", else float32
        for name in ("weight", "alpha0", "beta0", "dirichlet", "delta"):
            setattr(self, f"hyper_{name}", getattr(self, f"hyper_{name}").to(dtype))
        if self.hparams.channels_last:  # NHWC convolutions: faster on CPUs (oneDNN) and GPUs (tensor cores)
            self.priors.to(memory_format=torch.channels_last)
        # each image's Monte-Carlo noise: its own stream, on the device, apart from the init stream
        self.generators = [torch.Generator(device=self.device).manual_seed(seed + NOISE_STREAM) for seed in self.seeds]

    def training_step(self, batch: int, batch_idx: int) -> Tensor:
        """One step of the fit of all B images (``batch`` is only the step number: the images are ``noisy``)."""
        y = self.noisy
        self._priors_in_autocast_dtype()
        padded, (height, width) = pad_to_multiple(y, 2 ** self.hparams.unet_depth)
        out = {key: full_precision(value[..., :height, :width]) for key, value in self(padded).items()}
        surrogate = expected_log_prior_surrogate(out["mu"], out["log_var"], self.priors,
                                                 samples=self.hparams.mc_samples, generators=self.generators)
        hyper = Hyperpriors(alpha0=self.hyper_alpha0, beta0=self.hyper_beta0, d=self.hyper_dirichlet)
        terms = negative_elbo(y=full_precision(y), **out, expected_log_prior=surrogate, weight=self.hyper_weight,
                              hyper=hyper)
        totals = terms.total
        self.finite &= torch.isfinite(totals)
        step = self.global_step
        if (step + 1) % self.hparams.check_every == 0 and not bool(self.finite.any()):
            raise FloatingPointError(f"the loss became {totals.tolist()} by step {step}")
        self._update_output(out)
        # on the steps Lightning writes its logs ((step + 1) % log_every_n_steps == 0), so what it writes is fresh
        if (step + 1) % self.hparams.log_every == 0:
            self._log_step(terms)
        if self.hparams.image_every and (step + 1) % self.hparams.image_every == 0:
            self._log_images(y, out)
        return totals.sum()

    def _priors_in_autocast_dtype(self) -> None:
        """Under autocast, store the frozen priors in its dtype (once): autocast would otherwise cast every
        prior weight again at every step (60 casts per step for K = 3), to the same values."""
        device = self.noisy.device.type
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            first = next(self.priors.parameters(), None)
            if first is not None and first.dtype != dtype:
                self.priors.to(dtype)

    @torch.no_grad()
    def _update_output(self, out: dict[str, Tensor]) -> None:
        """EMA of mu_bar = sum_k pi_k mu_k and var_bar = sum_k pi_k^2 sigma2_k (initialised with y and var_bar)."""
        pi = out["pi"]
        mean = (pi * out["mu"]).sum(1)
        var = (pi.square() * out["log_var"].exp()).sum(1)
        if self.mean_ema is None:
            self.mean_ema, self.var_ema = full_precision(self.noisy), var
        a = self.hparams.ema
        self.mean_ema = a * self.mean_ema + (1 - a) * mean
        self.var_ema = a * self.var_ema + (1 - a) * var
        self.mean_sigma_t = (0.5 * out["log_var"]).exp().flatten(1).mean(1)
        self.last_components = {"mu": out["mu"].detach(), "pi": pi.detach()}

    def _log_step(self, terms: LossTerms) -> None:
        """Scalars averaged over the B images (B = 1: the image's own values)."""
        def mean(name: str) -> Tensor:
            return getattr(terms, name).mean()

        values = {"loss/total": mean("total"), "loss/L1": mean("l1"), "loss/L2_closed": mean("l2_closed"),
                  "loss/L3": mean("l3"), "loss/L4": mean("l4"), "loss/L5": mean("l5"),
                  "fit/mean_sigma": self.mean_sigma_t.mean(), "fit/lambda": self.hyper_weight.mean(),
                  "fit/delta": self.hyper_delta.mean()}
        if self.clean is not None:
            mse = (self.mean_ema.clamp(0, 1) - self.clean).square().flatten(1).mean(1)
            values["fit/psnr"] = (-10 * torch.log10(mse.clamp_min(1e-12))).mean()
        self.log_dict(values, on_step=True, on_epoch=False, batch_size=1)

    def _log_images(self, y: Tensor, out: dict[str, Tensor]) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_image"):
            return
        step = self.global_step
        for b in range(len(self.seeds)):
            tag = "" if len(self.seeds) == 1 else f"/{b}"
            experiment.add_image(f"image/noisy{tag}", y[b].float().clamp(0, 1), step)
            experiment.add_image(f"image/estimate{tag}", self.mean_ema[b].clamp(0, 1), step)
            var = self.var_ema[b]
            experiment.add_image(f"image/uncertainty{tag}", (var / var.max().clamp_min(1e-12)).sqrt(), step)
            for k in range(out["pi"].shape[1]):
                experiment.add_image(f"pi/component_{k}{tag}", out["pi"][b, k], step)
            if self.clean is not None:
                experiment.add_scalar(f"fit/ssim{tag}", ssim(self.mean_ema[b], self.clean[b]), step)

    def on_train_end(self) -> None:
        self.mean_sigma = self.mean_sigma_t.detach().cpu()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """One Adam over the stacked weights: element-wise, so equal to one Adam per image. The fused
        implementation updates all weights in a few kernels (the loop one launches about ten per weight)."""
        return torch.optim.Adam(self.nets.parameters(), lr=self.hparams.lr, fused=True)


def standalone(module: ScoreDVI, *, device: str | torch.device) -> ScoreDVI:
    """``module`` on ``device``, ready for ``training_step`` calls without a Trainer (benchmarks, memory probes)."""
    module = module.to(device)
    module.log_dict = lambda *args, **kwargs: None  # no Trainer to log to
    module.on_fit_start()
    return module
