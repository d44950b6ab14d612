"""The memory model follows the fit's precision: the priors' values take 2 bytes under bf16, the nets' stay float32."""

import pytest

from common.bfdncnn import BFDnCNN
from dvi.fitting.memory import SAFETY, fit_memory_bytes, net_value_bytes, prior_value_bytes
from tests.dvi.test_fit import SMALL


def test_prior_terms_halve_under_bf16_and_the_nets_do_not_change():
    priors = [BFDnCNN(channels=3, depth=4, features=16)]
    full, half = SMALL.replace(precision="32-true"), SMALL.replace(precision="bf16-mixed")
    assert (prior_value_bytes(full), prior_value_bytes(half), prior_value_bytes(SMALL.replace(precision="64-true"))) == (4, 2, 8)
    assert net_value_bytes(half) == net_value_bytes(full) == 4 and net_value_bytes(SMALL.replace(precision="64-true")) == 8
    side, images = 96, 3
    a = fit_memory_bytes(full, priors, channels=3, height=side, width=side, images=images)
    b = fit_memory_bytes(half, priors, channels=3, height=side, width=side, images=images)
    prior_weights = sum(p.numel() for p in priors[0].parameters())
    transient = SMALL.method.mc_samples * 3 * 16  # values per pixel: M samples x 3 maps of the widest layer
    # only the priors' share changes: 2 bytes less per value of their activations and weights
    assert a - b == pytest.approx(SAFETY * images * side * side * transient * 2 + prior_weights * 2, rel=1e-9)
