"""Noise levels and per-patch loss weights of stage-1 training (docs/priors.md, "The light-noise recipe").

ScoreDVI divides a prior's residual ``D(z) - z`` by the posterior variance, which is small on lightly
noisy photos (docs/method.md section 3), so what a prior does to an almost clean image decides stage 2
there. The BF-CNN recipe (sigma ~ U[0, 100], plain MSE) hardly trains that regime: 2 % of its patches
have sigma below 2, and their squared errors are ~1/1000 of those at sigma 50. Two typed settings
reach it; sigma is on the 0-255 scale throughout this docstring (the tensors hold sigma / 255):

* the noise-level distribution, a mixture of the uniform and a log-uniform law::

      p(sigma) = (1 - f) U[0, sigma_max] + f LogU[sigma_floor, sigma_max]

  (``f = light_fraction``; ``f = 0`` is the BF-CNN recipe). The log-uniform part puts as many patches
  in [0.1, 1] as in [10, 100];
* the per-patch loss weight ``w(sigma)`` of the weighted MSE of a batch of patches ``b``::

      L = sum_b w(sigma_b) * mse_b / sum_b w(sigma_b),     mse_b = ||D(y_b) - x_b||^2 / (C p^2)

  with ``w = 1`` (``mse``, the BF-CNN loss), ``w = 1 / (sigma + c)`` (``inverse_sigma``) or
  ``w = 1 / (sigma^2 + c^2)`` (``inverse_variance``), ``c = weight_offset`` (0-255 scale). A denoiser's
  error grows with sigma, so ``1/sigma``-like weights bring the errors at every noise level to comparable
  size (a change of ``d`` dB at any sigma then weighs about the same). The normalisation by ``sum w``
  keeps the loss on the MSE scale whatever the weights;
* or, ``log_mse``, the mean log error of the patches (a mean PSNR, up to sign and scale)::

      L = mean_b ln(mse_b + (c / 255)^2)

  whose gradient weighs each patch by ``1 / (mse_b + (c/255)^2)``, its own inverse error: a change of ``d``
  dB weighs the same at every noise level and for every patch, up to the cap ``20 log10(255 / c)`` dB
  (``c = weight_offset``; 0.5 caps at 54 dB), which keeps flat, already faithful patches from taking over.
  The noise-level law then alone decides how the training's attention is shared over sigma.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

SIGMA_MAX = 100.0  # noise levels of training, [0, SIGMA_MAX] on the 0-255 scale (BF-CNN)
Weighting = Literal["mse", "inverse_sigma", "inverse_variance", "log_mse"]
WEIGHTINGS: tuple[Weighting, ...] = get_args(Weighting)


@dataclass(frozen=True)
class NoiseRecipe:
    """The noise-level law and the loss weighting of one training run (equations: module docstring).

    The defaults are the light-noise recipe every shipped prior was trained with (f = 0.3, ``log_mse`` with
    c = 0.5; chosen by measurement, docs/priors.md "The light-noise recipe"); ``light_fraction=0`` with
    ``loss_weighting="mse"`` is the BF-CNN recipe.

    Args:
        sigma_max: largest sigma (0-255 scale); both parts of the mixture end there.
        light_fraction: ``f``, the share of patches whose sigma is log-uniform, in [0, 1].
        sigma_floor: smallest sigma of the log-uniform part (0-255 scale), in (0, sigma_max).
        loss_weighting: ``mse``, ``inverse_sigma``, ``inverse_variance`` or ``log_mse``.
        weight_offset: ``c`` of the weights (0-255 scale), > 0 so that sigma 0 has a finite weight (``log_mse``: the
            error floor, in RMS on the 0-255 scale).
    """

    sigma_max: float = SIGMA_MAX
    light_fraction: float = 0.3
    sigma_floor: float = 0.1
    loss_weighting: Weighting = "log_mse"
    weight_offset: float = 0.5

    def __post_init__(self) -> None:
        if not math.isfinite(self.sigma_max) or self.sigma_max < 0:
            raise ValueError(f"sigma_max must be a finite number >= 0, not {self.sigma_max}")
        if not 0.0 <= self.light_fraction <= 1.0:
            raise ValueError(f"light_fraction must be in [0, 1], not {self.light_fraction}")
        if self.light_fraction > 0 and not 0.0 < self.sigma_floor < self.sigma_max:
            raise ValueError(f"sigma_floor must be in (0, sigma_max = {self.sigma_max:g}), not {self.sigma_floor}")
        if self.loss_weighting not in WEIGHTINGS:
            raise ValueError(f"loss_weighting must be one of {', '.join(WEIGHTINGS)}, not {self.loss_weighting!r}")
        if not math.isfinite(self.weight_offset) or self.weight_offset <= 0:
            raise ValueError(f"weight_offset must be a finite number > 0, not {self.weight_offset}")

    def draw(self, count: int, *, generator: torch.Generator | None = None,
             device: torch.device | str = "cpu") -> Tensor:
        """``count`` noise levels from the mixture, on the 0-1 scale (divide by 255 done), float32."""
        uniform = torch.rand(count, generator=generator, device=device) * self.sigma_max
        if self.light_fraction == 0:  # the BF-CNN law: one draw, the same sequence as before this option
            return uniform / 255.0
        light = torch.rand(count, generator=generator, device=device) < self.light_fraction
        log_low, log_high = math.log(self.sigma_floor), math.log(self.sigma_max)
        u = torch.rand(count, generator=generator, device=device)
        log_uniform = torch.exp(log_low + u * (log_high - log_low))
        return torch.where(light, log_uniform, uniform) / 255.0

    def weights(self, sigma: Tensor) -> Tensor:
        """``w(sigma)`` per patch for noise levels on the 0-1 scale (unnormalised; ``log_mse`` weighs by the error
        instead, see :meth:`loss`, and gives 1 here)."""
        s, c = sigma * 255.0, self.weight_offset
        if self.loss_weighting == "inverse_sigma":
            return 1.0 / (s + c)
        if self.loss_weighting == "inverse_variance":
            return 1.0 / (s * s + c * c)
        return torch.ones_like(s)

    def loss(self, estimate: Tensor, clean: Tensor, sigma: Tensor) -> Tensor:
        """The weighted MSE ``L`` of (B, C, p, p) estimates against clean patches, ``sigma`` (B,) on the 0-1 scale."""
        per_patch = (estimate.float() - clean.float()).pow(2).flatten(1).mean(1)
        if self.loss_weighting == "mse":
            return per_patch.mean()
        if self.loss_weighting == "log_mse":
            return torch.log(per_patch + (self.weight_offset / 255.0) ** 2).mean()
        weight = self.weights(sigma.float())
        return (weight * per_patch).sum() / weight.sum()

    def describe(self) -> str:
        """One line for the prior's metadata and MANIFEST.json."""
        law = (f"sigma ~ U[0,{self.sigma_max:g}]" if self.light_fraction == 0 else
               f"sigma ~ {1 - self.light_fraction:g} U[0,{self.sigma_max:g}] + {self.light_fraction:g} "
               f"LogU[{self.sigma_floor:g},{self.sigma_max:g}]")
        weight = {"mse": "plain MSE", "inverse_sigma": f"MSE weighted 1/(sigma+{self.weight_offset:g})",
                  "inverse_variance": f"MSE weighted 1/(sigma^2+{self.weight_offset:g}^2)",
                  "log_mse": f"mean ln(MSE + ({self.weight_offset:g}/255)^2)"}[self.loss_weighting]
        return f"{law} (0-255 scale), {weight}"
