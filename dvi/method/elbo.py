"""The negative ELBO of ScoreDVI, per element (method.md section 3, "Loss").

Shapes: every map is (N, K, C, H, W); k is dim 1. ``psi`` = digamma, ``lnG`` = log-gamma.
Each ``l*`` function returns the per-element value summed over k, shaped (N, C, H, W).
The N images may have their own hyperparameters: a :class:`Hyperpriors` field (and the prior
weight lambda) is either one number for all or a tensor of N values, one per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Hyperpriors:
    """Gamma(alpha0, beta0) on the noise precision, Dirichlet(d, ..., d) on the mixture weights.

    Each field is a number, or a tensor of N values (one per image of a batch; :meth:`stack`).
    """

    alpha0: float | Tensor = 1.0
    beta0: float | Tensor = 0.02
    d: float | Tensor = 1.0

    @staticmethod
    def stack(hypers: Sequence[Hyperpriors], *, dtype: torch.dtype = torch.float32) -> Hyperpriors:
        """One :class:`Hyperpriors` whose fields are (N,) tensors, from N per-image ones."""
        def field(name: str) -> Tensor:
            return torch.tensor([float(getattr(h, name)) for h in hypers], dtype=dtype)

        return Hyperpriors(alpha0=field("alpha0"), beta0=field("beta0"), d=field("d"))


def per_image(value: float | Tensor, like: Tensor) -> Tensor:
    """``value`` broadcastable against maps (N, K, C, H, W) like ``like``: a 0-dim tensor for a number
    (made on the device by a fill, no host-to-device copy), (N, 1, 1, 1, 1) for N per-image values."""
    if isinstance(value, Tensor):
        value = value.to(like.device, like.dtype)  # no copy when it is there already (the module's buffers)
        return value.reshape(-1, 1, 1, 1, 1) if value.dim() else value
    return torch.full((), value, dtype=like.dtype, device=like.device)


def l1_likelihood(y: Tensor, mu: Tensor, sigma2: Tensor, pi: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """L1 = sum_k pi_k [0.5 ((mu_k - y)^2 + sigma2_k) alpha_k/beta_k - 0.5 (psi(alpha_k) - log beta_k)]."""
    y = y.unsqueeze(1)
    expected_sq = (mu - y).square() + sigma2
    return (pi * (0.5 * expected_sq * alpha / beta - 0.5 * (torch.digamma(alpha) - beta.log()))).sum(1)


def l2_closed_form(log_var: Tensor, pi: Tensor) -> Tensor:
    """The closed-form part of L2: sum_k pi_k (-0.5 log sigma2_k) (the negative entropy up to a constant)."""
    return (pi * (-0.5 * log_var)).sum(1)


def l2_prior(log_var: Tensor, pi: Tensor, expected_log_prior: Tensor) -> Tensor:
    """L2 = sum_k pi_k [-0.5 log sigma2_k - E_q log p_k(x_k)], with the score-unit surrogate for E_q log p_k.

    ``pi`` is not detached (reference behaviour): Z-net also receives the surrogate's gradient.
    """
    return (pi * (-0.5 * log_var - expected_log_prior)).sum(1)


def l3_precision_kl(alpha: Tensor, beta: Tensor, pi: Tensor, hyper: Hyperpriors) -> Tensor:
    """L3 = sum_k pi_k KL(Gamma(alpha_k, beta_k) || Gamma(alpha0, beta0)) (rate parameterisation)."""
    a0, b0 = per_image(hyper.alpha0, alpha), per_image(hyper.beta0, alpha)
    kl = ((alpha - a0) * torch.digamma(alpha) - torch.lgamma(alpha) + torch.lgamma(a0)
          + a0 * (beta.log() - b0.log()) + b0 * alpha / beta - alpha)
    return (pi * kl).sum(1)


def l4_assignment_kl(pi: Tensor, d_hat: Tensor) -> Tensor:
    """L4 = sum_k pi_k [log pi_k - psi(d^_k) + psi(sum_j d^_j)]."""
    expected_log_w = torch.digamma(d_hat) - torch.digamma(d_hat.sum(1, keepdim=True))
    return (pi * (pi.clamp_min(1e-12).log() - expected_log_w)).sum(1)


def l5_dirichlet_kl(d_hat: Tensor, hyper: Hyperpriors) -> Tensor:
    """L5 = KL(Dir(d^) || Dir(d)) with d = (hyper.d, ..., hyper.d)."""
    k = d_hat.shape[1]
    total = d_hat.sum(1)
    d = per_image(hyper.d, d_hat)
    cross = ((d_hat - d) * (torch.digamma(d_hat) - torch.digamma(total).unsqueeze(1))).sum(1)
    log_norm = torch.lgamma(k * d) - k * torch.lgamma(d)  # log B(d) of the prior, per image
    return cross + torch.lgamma(total) - torch.lgamma(d_hat).sum(1) - (log_norm[:, 0] if log_norm.dim() else log_norm)


@dataclass(frozen=True)
class LossTerms:
    """Per-image means of the terms, each (N,); ``total`` = L1 + lambda*L2 + L3 + L4 + L5 (the one to minimise)."""

    total: Tensor
    l1: Tensor
    l2_closed: Tensor
    l3: Tensor
    l4: Tensor
    l5: Tensor


def negative_elbo(*, y: Tensor, mu: Tensor, log_var: Tensor, pi: Tensor, log_alpha: Tensor, log_beta: Tensor,
                  d_hat: Tensor, expected_log_prior: Tensor, weight: float | Tensor, hyper: Hyperpriors) -> LossTerms:
    """Assemble L = L1 + lambda(y) L2 + L3 + L4 + L5 for each of the N images y (N, C, H, W), averaged
    over its C*H*W elements; ``weight`` is lambda, one number or (N,) per image, like ``hyper``'s fields."""
    sigma2, alpha, beta = log_var.exp(), log_alpha.exp(), log_beta.exp()

    def image_mean(x: Tensor) -> Tensor:
        return x.flatten(1).mean(1)

    l1 = image_mean(l1_likelihood(y, mu, sigma2, pi, alpha, beta))
    l2 = image_mean(l2_prior(log_var, pi, expected_log_prior))
    l3 = image_mean(l3_precision_kl(alpha, beta, pi, hyper))
    if pi.shape[1] == 1:  # one component: pi = 1 and Dir(d^) is a point mass, so L4 = L5 = 0 for any d^
        l4 = l5 = torch.zeros_like(l1)
    else:
        l4 = image_mean(l4_assignment_kl(pi, d_hat))
        l5 = image_mean(l5_dirichlet_kl(d_hat, hyper))
    total = l1 + weight * l2 + l3 + l4 + l5
    return LossTerms(total=total, l1=l1, l2_closed=image_mean(l2_closed_form(log_var, pi)).detach(), l3=l3, l4=l4,
                     l5=l5)
