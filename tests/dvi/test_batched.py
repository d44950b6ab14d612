"""Several images fitted at once (vmapped nets, one prior call for all samples) equal one-at-a-time fits."""

import dataclasses

import pytest
import torch

import dvi.fitting.module
from common.prior_files import load_prior
from dvi.fitting.fit import build_module, fit_image, fit_images
from dvi.method.elbo import Hyperpriors, l4_assignment_kl, l5_dirichlet_kl, negative_elbo
from dvi.method.nets import OmegaNet, PhiNet, XNet, ZNet
from dvi.method.noise_level import NoiseClass, NoiseLevel
from dvi.method.score import expected_log_prior_surrogate
from dvi.method.variational import StackedNets, seeded_nets
from tests.dvi.test_fit import SMALL, noisy_pair

SIZES = dict(channels=3, components=2, unet_base=8, unet_depth=2, aux_layers=3, aux_features=8)


def test_stacked_nets_equal_separate_nets_outputs_and_gradients():
    nets = [net.double() for net in seeded_nets([0, 1, 2], **SIZES)]  # float64: differences are the batching's, not rounding
    stacked = StackedNets([net.double() for net in seeded_nets([0, 1, 2], **SIZES)])
    y = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    out = stacked(y)
    for b, net in enumerate(nets):
        single = net(y[b:b + 1])
        for key in single._fields:
            torch.testing.assert_close(getattr(out, key)[b:b + 1], getattr(single, key))
    (sum(v.square().sum() for v in out)).backward()
    for b, net in enumerate(nets):
        net.zero_grad()
        (sum(v.square().sum() for v in net(y[b:b + 1]))).backward()
        grads = dict(net.named_parameters())
        for name in ("x_net.net.inc.0.weight", "z_net.net.0.weight", "phi_net.net.3.weight"):
            stacked_grad = stacked.stacked[name.replace(".", "__")].grad[b]
            torch.testing.assert_close(stacked_grad, grads[name].grad)


def test_nets_of_different_seeds_differ_and_unstack_round_trips():
    stacked = StackedNets(seeded_nets([0, 1], **SIZES))
    weight = stacked.stacked["x_net__net__inc__0__weight"]
    assert not torch.equal(weight[0], weight[1])
    y = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(stacked.unstacked(1)(y).mu, seeded_nets([1], **SIZES)[0](y).mu)


def test_batched_surrogate_gradient_equals_per_image_gradient():
    mu = torch.randn(2, 2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    log_var = (torch.rand(2, 2, 3, 8, 8, dtype=torch.float64) * -3).requires_grad_()
    residual = [lambda x: 0.3 * x + 0.1 * x.square(), lambda x: x.tanh()]

    def generators():
        return [torch.Generator().manual_seed(s) for s in (11, 12)]

    together = expected_log_prior_surrogate(mu, log_var, residual, samples=3, generators=generators())
    g_mu, g_lv = torch.autograd.grad(together.sum(), [mu, log_var])
    for b, generator in enumerate(generators()):
        alone = expected_log_prior_surrogate(mu[b:b + 1], log_var[b:b + 1], residual, samples=3, generators=[generator])
        a_mu, a_lv = torch.autograd.grad(alone.sum(), [mu, log_var])
        torch.testing.assert_close(g_mu[b], a_mu[b])
        torch.testing.assert_close(g_lv[b], a_lv[b])


# explicit noise levels far apart: each image's lambda and beta0 must reach its own loss
DISTINCT = [NoiseLevel(delta=5.0, weight=0.5, noise_class=NoiseClass.LOW, beta0=0.005),
            NoiseLevel(delta=30.0, weight=2.0, noise_class=NoiseClass.HIGH, beta0=0.02)]


@pytest.mark.parametrize("levels", [None, DISTINCT], ids=["estimated", "distinct"])
def test_batched_fit_equals_sequential_fits(tiny_priors, levels):
    prior, _ = load_prior(tiny_priors[3], channels=3)
    # float64: in float32 Adam turns rounding-level differences of near-zero gradients into full steps
    settings = SMALL.replace(steps=6, precision="64-true")
    images = [noisy_pair(seed=s)[1].double() for s in (3, 5)]
    together = fit_images(images, [prior, prior], settings, noise=levels)
    for index, (image, batched) in enumerate(zip(images, together)):
        alone = fit_image(image, [prior, prior], settings, noise=None if levels is None else levels[index])
        torch.testing.assert_close(batched.denoised, alone.denoised, rtol=0, atol=1e-8)
        torch.testing.assert_close(batched.variance, alone.variance, rtol=1e-6, atol=1e-12)
        assert batched.batch == 2 and alone.batch == 1 and batched.noise == alone.noise


def test_a_diverging_image_does_not_disturb_the_others(tiny_priors, monkeypatch):
    """Image 1's loss is NaN on its first attempt: image 0 is unaffected, image 1 is refitted with seed + 1."""
    prior, _ = load_prior(tiny_priors[3], channels=3)
    settings = SMALL.replace(steps=4, precision="64-true")
    images = [noisy_pair(seed=s)[1].double() for s in (3, 5)]
    alone = fit_image(images[0], [prior], settings)
    real = dvi.fitting.module.negative_elbo

    def nan_for_second_image(**kwargs):  # the loss is computed for all images of the batch in one call
        terms = real(**kwargs)
        hit = torch.tensor([torch.equal(y, images[1]) and torch.initial_seed() == settings.runtime.seed for y in kwargs["y"]])
        return dataclasses.replace(terms, total=torch.where(hit, float("nan"), terms.total))

    monkeypatch.setattr(dvi.fitting.module, "negative_elbo", nan_for_second_image)
    first, second = fit_images(images, [prior], settings)
    torch.testing.assert_close(first.denoised, alone.denoised, rtol=0, atol=1e-8)
    assert first.restarts == 0 and second.restarts == 1 and second.seed == settings.runtime.seed + 1
    assert torch.isfinite(second.denoised).all()


def test_images_of_different_shapes_are_refused(tiny_priors):
    prior, _ = load_prior(tiny_priors[3], channels=3)
    with pytest.raises(ValueError, match="one shape"):
        fit_images([torch.rand(3, 64, 64), torch.rand(3, 64, 72)], [prior], SMALL)



@pytest.mark.parametrize("images", [1, 2])
def test_stacked_nets_run_in_the_input_dtype_under_autocast(images):
    """Under bf16 autocast the variational nets stay in float32 (cuDNN's batch-norm backward under vmap
    refuses bf16 activations with float32 running statistics) and equal the float32 result."""
    stacked = StackedNets(seeded_nets(list(range(images)), **SIZES))
    y = torch.rand(images, 3, 16, 16)
    plain = stacked(y)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixed = stacked(y)
    for key, value in mixed._asdict().items():
        assert value.dtype == torch.float32, key
        torch.testing.assert_close(value, getattr(plain, key))


def test_stacked_batch_norm_running_statistics_are_each_images_own():
    nets = [net.double() for net in seeded_nets([0, 1, 2], **SIZES)]
    stacked = StackedNets([net.double() for net in seeded_nets([0, 1, 2], **SIZES)])
    y = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    for _ in range(2):  # two training-mode passes update the running statistics twice
        stacked(y)
        for b, net in enumerate(nets):
            net(y[b:b + 1])
    for b, net in enumerate(nets):
        for name, buffer in net.named_buffers():
            torch.testing.assert_close(getattr(stacked, f"stacked_buffer__{name.replace('.', '__')}")[b], buffer)



def test_priors_are_stored_in_the_autocast_dtype_with_the_same_result(tiny_priors, monkeypatch):
    """Under bf16 autocast the first step casts the frozen priors to bf16 once; the step's loss and
    gradients equal those of autocast casting the float32 weights at every call."""
    prior, _ = load_prior(tiny_priors[3], channels=3)
    y = torch.rand(2, 3, 32, 32)

    def one_step(keep_float32: bool) -> tuple[torch.Tensor, list[torch.Tensor], torch.dtype]:
        module = dvi.fitting.module.standalone(build_module(SMALL, [prior, prior], y, seeds=[0, 1]), device="cpu")
        if keep_float32:
            monkeypatch.setattr(module, "_priors_in_autocast_dtype", lambda: None)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            loss = module.training_step(0, 0)["loss"]
        loss.backward()
        return loss.detach(), [p.grad for p in module.nets.parameters()], next(module.priors.parameters()).dtype

    cast_once, per_call = one_step(False), one_step(True)
    assert cast_once[2] == torch.bfloat16 and per_call[2] == torch.float32
    torch.testing.assert_close(cast_once[0], per_call[0], rtol=0, atol=0)
    for a, b in zip(cast_once[1], per_call[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_one_component_builds_no_z_or_omega_net_because_their_gradients_are_exactly_zero():
    """K = 1: the Z-net's softmax over one logit is 1 and the Dirichlet over one weight is a point mass, so with
    the two nets present their gradients are exactly zero and the loss equals the one with pi = d_hat = 1."""
    sizes = {**SIZES, "components": 1}
    (net,) = seeded_nets([4], **sizes)
    assert net.z_net is None and net.omega_net is None
    y = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    maps = net.double()(y)
    assert torch.equal(maps.pi, torch.ones_like(maps.mu)) and torch.equal(maps.d_hat, torch.ones_like(maps.mu))

    aux = dict(channels=3, components=1, layers=3, features=8)
    z_net, omega_net = ZNet(**aux).double(), OmegaNet(**aux).double()
    hyper = Hyperpriors(alpha0=1.0, beta0=0.02, d=1.0)
    expected = torch.randn_like(maps.mu)
    common = dict(y=y, mu=maps.mu, log_var=maps.log_var, log_alpha=maps.log_alpha, log_beta=maps.log_beta,
                  expected_log_prior=expected, weight=1.0, hyper=hyper)
    pi, d_hat = z_net(y), omega_net(y)
    with_nets = negative_elbo(**common, pi=pi, d_hat=d_hat)
    without = negative_elbo(**common, pi=maps.pi, d_hat=maps.d_hat)
    torch.testing.assert_close(with_nets.total, without.total, rtol=0, atol=1e-12)
    l4, l5 = l4_assignment_kl(pi, d_hat), l5_dirichlet_kl(d_hat, hyper)  # what negative_elbo skips at K = 1
    assert torch.count_nonzero(l4) == 0 and torch.count_nonzero(l5) == 0
    (with_nets.total.sum() + l4.sum() + l5.sum()).backward()
    for name, parameter in [*z_net.named_parameters(), *omega_net.named_parameters()]:
        assert parameter.grad is not None and torch.count_nonzero(parameter.grad) == 0, name
    # the X- and Phi-nets start from the same weights as when the two nets were built after them
    torch.manual_seed(4)
    x_net = XNet(channels=3, components=1, base=8, depth=2)
    phi_net = PhiNet(**aux)
    torch.testing.assert_close(dict(net.x_net.named_parameters()), dict(x_net.double().named_parameters()))
    torch.testing.assert_close(dict(net.phi_net.named_parameters()), dict(phi_net.double().named_parameters()))
