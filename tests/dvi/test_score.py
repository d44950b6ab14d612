"""The score-gradient unit against the analytic Gaussian-prior case (method.md section 3)."""

import torch

from dvi.method.score import ScoreGradient, expected_log_prior_surrogate, prior_scores


def test_forward_is_identity_and_backward_multiplies_by_score():
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    score = torch.randn(4, 5, dtype=torch.float64)
    out = ScoreGradient.apply(x, score)
    torch.testing.assert_close(out, x)
    g = torch.randn(4, 5, dtype=torch.float64)
    (grad,) = torch.autograd.grad(out, x, g)
    torch.testing.assert_close(grad, g * score)


def test_per_sample_gradient_equals_gradient_of_smoothed_gaussian_log_density():
    """For fixed eps, d/d(mu, log_var) of the surrogate == d/d(mu, log_var) of log N(x_m; 0, s2 + sigma2_detached)."""
    torch.manual_seed(0)
    s2 = 0.3
    shape = (1, 2, 3, 4, 4)
    mu = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    log_var = (torch.rand(shape, dtype=torch.float64) * -3).requires_grad_()
    generator = torch.Generator().manual_seed(5)
    sigma2 = log_var.detach().exp()
    residual = [lambda x, k=k: x - x * s2 / (s2 + sigma2[0, k]) for k in range(2)]
    surrogate = expected_log_prior_surrogate(mu, log_var, residual, samples=3, generators=[generator])
    g_mu, g_lv = torch.autograd.grad(surrogate.sum(), [mu, log_var])

    eps = torch.randn((3, *shape[1:]), dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    x = mu + log_var.exp().sqrt() * eps
    exact = (-0.5 * x.square() / (s2 + sigma2)).mean(0, keepdim=True)
    e_mu, e_lv = torch.autograd.grad(exact.sum(), [mu, log_var])
    torch.testing.assert_close(g_mu, e_mu)
    torch.testing.assert_close(g_lv, e_lv)


def test_monte_carlo_gradient_matches_closed_form_expectation():
    """E_q log N(x; 0, s2 + c) = -0.5 (mu^2 + sigma2) / (s2 + c) + const, c = sigma2 detached."""
    torch.manual_seed(1)
    s2 = 0.5
    mu = torch.tensor([[[[[0.7]]]]], dtype=torch.float64, requires_grad=True)
    log_var = torch.tensor([[[[[-1.2]]]]], dtype=torch.float64, requires_grad=True)
    c = log_var.detach().exp()
    residual = [lambda x: x - x * s2 / (s2 + c[0, 0])]
    surrogate = expected_log_prior_surrogate(mu.expand(1, 1, 1, 1, 1), log_var, residual, samples=400000)
    g_mu, g_lv = torch.autograd.grad(surrogate.sum(), [mu, log_var])
    sigma2 = log_var.exp()
    closed = -0.5 * (mu.square() + sigma2) / (s2 + c)
    e_mu, e_lv = torch.autograd.grad(closed.sum(), [mu, log_var])
    torch.testing.assert_close(g_mu, e_mu, rtol=0.01, atol=0)
    torch.testing.assert_close(g_lv, e_lv, rtol=0.01, atol=0)


def test_priors_see_all_samples_of_a_component_in_one_call_without_autograd():
    calls = []

    def residual(x):
        calls.append((tuple(x.shape), torch.is_grad_enabled()))
        return 0.5 * x

    samples = torch.randn(5, 3, 2, 6, 6)
    scores = prior_scores(samples, torch.full((1, 3, 2, 6, 6), 0.25), [residual, residual, residual])
    assert calls == [((5, 2, 6, 6), False)] * 3
    torch.testing.assert_close(scores, -0.5 * samples / 0.25)
