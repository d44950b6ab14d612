"""The score-gradient unit: a gradient for E_q[log p_k(x)] from a denoiser (method.md section 3).

By Tweedie/Miyasawa, ``G(x) - x = sigma2 * grad log p_sigma(x)`` for an MMSE Gaussian denoiser
``G`` at noise variance ``sigma2``. The unit passes samples ``x_m = mu + sigma * eps`` through
unchanged and, in backward, multiplies the incoming gradient by ``(G(x_m) - x_m) / sigma2``
(``sigma2`` detached). Through the reparameterisation, autograd then yields the paper's Eq. 5
gradients of ``E_q log p`` w.r.t. ``mu`` and ``sigma2``. The surrogate's *value* is meaningless.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Residual = Callable[[Tensor], Tensor]


class ScoreGradient(torch.autograd.Function):
    """``forward(x, score) = x``; ``backward(g) = (g * score, None)``. ``score`` carries no gradient."""

    @staticmethod
    def forward(ctx, samples: Tensor, score: Tensor) -> Tensor:  # noqa: ANN001 - autograd ctx
        ctx.save_for_backward(score)
        return samples.view_as(samples)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        (score,) = ctx.saved_tensors
        return grad_output * score, None


@torch.no_grad()
def prior_residuals(samples: Tensor, residuals: Sequence[Residual]) -> Tensor:
    """``G_k(x) - x`` for samples (S, K, C, H, W): ``residuals[k % len(residuals)]`` is the k-th
    prior's noise predictor ``R = x - G(x)``; it sees all S samples of component k in one batched
    call and never builds an autograd graph.
    """
    components = samples.shape[1]
    out = torch.empty_like(samples)
    for k in range(components):
        out[:, k] = -residuals[k % len(residuals)](samples[:, k]).to(samples.dtype)
    return out


def prior_scores(samples: Tensor, sigma2: Tensor, residuals: Sequence[Residual]) -> Tensor:
    """``(G_k(x) - x) / sigma2_k`` for samples (M, K, C, H, W) and variances (1 or M, K, C, H, W)."""
    return prior_residuals(samples, residuals) / sigma2.detach()


def expected_log_prior_surrogate(mu: Tensor, log_var: Tensor, residuals: Sequence[Residual], *, samples: int,
                                 generators: Sequence[torch.Generator] | None = None) -> Tensor:
    """Stand-in for ``E_q[log p_k(x_k)]`` per element, shaped like ``mu`` (B, K, C, H, W).

    Its value is the Monte-Carlo mean of the samples (meaningless); its gradient w.r.t. ``mu`` and
    ``log_var`` is the M-sample estimate of the true gradient (Eq. 5). The B images are
    independent; ``generators`` (one per image) make image b's noise draws independent of the
    others, so a batch of B fits draws what B separate fits would. All B*M samples of a
    component go through its prior in one call.
    """
    batch, rest = mu.shape[0], mu.shape[1:]
    if generators is None:
        eps = torch.randn((batch, samples, *rest), device=mu.device, dtype=mu.dtype)
    else:
        eps = torch.stack([torch.randn((samples, *rest), device=mu.device, dtype=mu.dtype, generator=g)
                           for g in generators])
    sigma2 = log_var.exp().unsqueeze(1)
    draws = mu.unsqueeze(1) + sigma2.sqrt() * eps
    score = prior_residuals(draws.detach().flatten(0, 1), residuals).view_as(draws) / sigma2.detach()
    return ScoreGradient.apply(draws, score).mean(dim=1)
