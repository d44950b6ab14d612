"""GaussianDenoiser speed options: channels-last layout and the choice of Adam implementation."""

from __future__ import annotations

import torch

from prior_training.module import GaussianDenoiser, adam_for


def test_channels_last_layout_gives_the_same_denoising() -> None:
    torch.manual_seed(0)
    plain = GaussianDenoiser(depth=4, features=8).eval()
    last = GaussianDenoiser(depth=4, features=8, channels_last=True).eval()
    last.load_state_dict(plain.state_dict())
    last.setup_layout()
    assert last.use_channels_last and not plain.use_channels_last
    weight = last.denoiser.conv_layers[1].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    noisy = torch.rand(2, 3, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(last(noisy), plain(noisy), rtol=1e-5, atol=1e-6)


def test_channels_last_defaults_to_cuda_only() -> None:
    module = GaussianDenoiser(depth=3, features=4)
    module.setup_layout()  # on the CPU
    assert not module.use_channels_last


def test_adam_is_fused_only_for_cuda_parameters_and_updates_like_plain_adam() -> None:
    weights = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.zeros(2))]
    optimiser = adam_for(weights, lr=0.1)
    assert not optimiser.defaults["fused"]
    reference = torch.optim.Adam([torch.nn.Parameter(w.detach().clone()) for w in weights], lr=0.1)
    for params in (weights, reference.param_groups[0]["params"]):
        sum((p * torch.arange(1.0, p.numel() + 1)).sum() for p in params).backward()
    optimiser.step()
    reference.step()
    for mine, theirs in zip(weights, reference.param_groups[0]["params"]):
        torch.testing.assert_close(mine, theirs)
