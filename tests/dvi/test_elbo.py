"""L1..L5 against torch.distributions on random inputs."""

import math

import torch
from torch.distributions import Categorical, Dirichlet, Gamma, Normal, kl_divergence

from dvi.method.elbo import (
    Hyperpriors,
    l1_likelihood,
    l2_closed_form,
    l3_precision_kl,
    l4_assignment_kl,
    l5_dirichlet_kl,
    negative_elbo,
)

torch.manual_seed(0)
K, C, H, W = 3, 2, 4, 5


def positive(*shape, low=0.3, high=4.0):
    return torch.rand(*shape, dtype=torch.float64) * (high - low) + low


def simplex():
    return torch.softmax(torch.randn(1, K, C, H, W, dtype=torch.float64), dim=1)


def test_l3_is_pi_weighted_gamma_kl():
    alpha, beta, pi = positive(1, K, C, H, W), positive(1, K, C, H, W), simplex()
    hyper = Hyperpriors(alpha0=1.3, beta0=0.02)
    expected = (pi * kl_divergence(Gamma(alpha, beta), Gamma(torch.tensor(1.3, dtype=torch.float64),
                                                                torch.tensor(0.02, dtype=torch.float64)))).sum(1)
    torch.testing.assert_close(l3_precision_kl(alpha, beta, pi, hyper), expected)


def test_l5_is_dirichlet_kl():
    d_hat = positive(1, K, C, H, W)
    hyper = Hyperpriors(d=1.5)
    p = Dirichlet(d_hat.movedim(1, -1))
    q = Dirichlet(torch.full_like(d_hat.movedim(1, -1), 1.5))
    torch.testing.assert_close(l5_dirichlet_kl(d_hat, hyper), kl_divergence(p, q))


def test_l4_is_negative_entropy_minus_expected_log_weight():
    pi, d_hat = simplex(), positive(1, K, C, H, W)
    negative_entropy = -Categorical(probs=pi.movedim(1, -1)).entropy()
    # E_Dir[log w_k] by Monte Carlo
    w = Dirichlet(d_hat.movedim(1, -1)).sample((200000,)).clamp_min(1e-300)
    expected_log_w = w.log().mean(0).movedim(-1, 1)
    expected = negative_entropy - (pi * expected_log_w).sum(1)
    torch.testing.assert_close(l4_assignment_kl(pi, d_hat), expected, rtol=0, atol=0.02)


def test_l1_is_expected_gaussian_negative_log_likelihood():
    y = torch.rand(1, C, H, W, dtype=torch.float64)
    mu = y.unsqueeze(1) + 0.1 * torch.randn(1, K, C, H, W, dtype=torch.float64)
    sigma2 = positive(1, K, C, H, W, low=0.001, high=0.02)
    alpha, beta, pi = positive(1, K, C, H, W, low=2, high=6), positive(1, K, C, H, W, low=0.01, high=0.05), simplex()
    n = 200000
    x = Normal(mu, sigma2.sqrt()).sample((n,))
    tau = Gamma(alpha, beta).sample((n,))
    nll = -Normal(x, tau.rsqrt()).log_prob(y.unsqueeze(1)) - 0.5 * math.log(2 * math.pi)
    expected = (pi * nll.mean(0)).sum(1)
    got = l1_likelihood(y, mu, sigma2, pi, alpha, beta)
    torch.testing.assert_close(got, expected, rtol=0.01, atol=0.02)


def test_l2_closed_part_is_negative_gaussian_entropy_up_to_constant():
    mu, log_var, pi = torch.randn(1, K, C, H, W, dtype=torch.float64), torch.randn(1, K, C, H, W, dtype=torch.float64), simplex()
    entropy = Normal(mu, (0.5 * log_var).exp()).entropy()
    expected = (pi * (-entropy + 0.5 * math.log(2 * math.pi * math.e))).sum(1)
    torch.testing.assert_close(l2_closed_form(log_var, pi), expected)


def test_total_combines_terms_with_prior_weight():
    y = torch.rand(1, C, H, W, dtype=torch.float64)
    args = dict(y=y, mu=torch.randn(1, K, C, H, W, dtype=torch.float64), log_var=torch.randn(1, K, C, H, W, dtype=torch.float64),
                pi=simplex(), log_alpha=torch.randn(1, K, C, H, W, dtype=torch.float64),
                log_beta=torch.randn(1, K, C, H, W, dtype=torch.float64), d_hat=positive(1, K, C, H, W),
                expected_log_prior=torch.randn(1, K, C, H, W, dtype=torch.float64), hyper=Hyperpriors())
    one, two = negative_elbo(weight=1.0, **args), negative_elbo(weight=2.0, **args)
    l2 = (args["pi"] * (-0.5 * args["log_var"] - args["expected_log_prior"])).sum(1).mean().reshape(1)
    torch.testing.assert_close(two.total - one.total, l2)
    torch.testing.assert_close(one.total, one.l1 + l2 + one.l3 + one.l4 + one.l5)


def test_a_batch_with_per_image_hyperparameters_equals_separate_images():
    """N images in one call, each with its own lambda, alpha0, beta0 and d, give what N one-image calls give."""
    n = 3
    maps = dict(mu=torch.randn(n, K, C, H, W, dtype=torch.float64),
                log_var=torch.randn(n, K, C, H, W, dtype=torch.float64),
                pi=torch.softmax(torch.randn(n, K, C, H, W, dtype=torch.float64), dim=1),
                log_alpha=torch.randn(n, K, C, H, W, dtype=torch.float64),
                log_beta=torch.randn(n, K, C, H, W, dtype=torch.float64), d_hat=positive(n, K, C, H, W),
                expected_log_prior=torch.randn(n, K, C, H, W, dtype=torch.float64))
    y = torch.rand(n, C, H, W, dtype=torch.float64)
    hypers = [Hyperpriors(alpha0=1.0, beta0=0.005, d=1.0), Hyperpriors(alpha0=1.7, beta0=0.01, d=0.5),
              Hyperpriors(alpha0=0.8, beta0=0.02, d=2.0)]
    weights = [0.5, 1.0, 2.0]
    batch = negative_elbo(y=y, **maps, weight=torch.tensor(weights, dtype=torch.float64),
                          hyper=Hyperpriors.stack(hypers, dtype=torch.float64))
    for i in range(n):
        alone = negative_elbo(y=y[i:i + 1], **{k: v[i:i + 1] for k, v in maps.items()}, weight=weights[i],
                              hyper=hypers[i])
        for name in ("total", "l1", "l2_closed", "l3", "l4", "l5"):
            torch.testing.assert_close(getattr(batch, name)[i:i + 1], getattr(alone, name), msg=name)
    assert batch.total.shape == (n,)
