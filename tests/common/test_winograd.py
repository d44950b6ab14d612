"""NNPACK's Winograd 3x3 convolutions (common/winograd.py): the same maps and gradients as nn.Conv2d, taken only
where the rule says."""

import pytest
import torch
from torch import nn

from common.winograd import MIN_CHANNELS, MIN_PIXELS, Conv2d, applies, nnpack_ready, preferred, winograd

needs_nnpack = pytest.mark.skipif(not nnpack_ready(), reason="this PyTorch build or CPU has no NNPACK")
SIDE = int(MIN_PIXELS**0.5)


def grads_of(conv: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
    conv.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    out = conv(x)
    out.backward(grad)
    return out.detach(), x.grad, conv.weight.grad, conv.bias.grad


@needs_nnpack
@pytest.mark.parametrize("cin,cout", [(16, 16), (32, 24)])
def test_winograd_path_matches_the_native_convolution_and_its_gradients(cin, cout):
    torch.manual_seed(0)
    conv = Conv2d(cin, cout, 3, padding=1)
    x = torch.randn(1, cin, SIDE, SIDE)
    grad = torch.randn(1, cout, SIDE, SIDE)
    native = grads_of(conv, x, grad)
    with winograd(True):
        out = conv(x.requires_grad_(True))
        assert type(out.grad_fn).__name__ == "_WinogradConv3x3Backward"
        fast = grads_of(conv, x, grad)
    for a, b in zip(fast[:2], native[:2]):  # the map and the input gradient: Winograd's, not oneDNN's, arithmetic
        assert not torch.equal(a, b)
        torch.testing.assert_close(a, b, rtol=0, atol=2e-4 * b.abs().max().item())
    for a, b in zip(fast[2:], native[2:]):  # the weight and bias gradients: PyTorch's kernels in both
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@needs_nnpack
def test_outside_the_block_or_when_disabled_the_native_convolution_runs():
    conv = Conv2d(16, 16, 3, padding=1)
    x = torch.randn(1, 16, SIDE, SIDE, requires_grad=True)
    assert type(conv(x).grad_fn).__name__ == "ConvolutionBackward0"
    with winograd(False):
        assert type(conv(x).grad_fn).__name__ == "ConvolutionBackward0"
    with winograd(True):
        with torch.no_grad():
            inference = conv(x)
        torch.testing.assert_close(inference, nn.functional.conv2d(x, conv.weight, conv.bias, padding=1),
                                   rtol=0, atol=1e-4)
    assert type(conv(x).grad_fn).__name__ == "ConvolutionBackward0"  # the block's setting does not leak


@pytest.mark.parametrize("change,expected", [
    ({}, True),
    ({"side": SIDE // 2}, False),  # fewer pixels than MIN_PIXELS
    ({"cin": MIN_CHANNELS - 1}, False),
    ({"cout": 3}, False),
    ({"stride": 2}, False),
    ({"kernel": 1, "padding": 0}, False),
    ({"dtype": torch.float64}, False),
    ({"dtype": torch.bfloat16}, False),
])
def test_rule_takes_only_large_float32_same_size_3x3_convolutions(change, expected):
    opts = {"side": SIDE, "cin": 16, "cout": 16, "stride": 1, "kernel": 3, "padding": 1, "dtype": torch.float32,
            **change}
    conv = nn.Conv2d(opts["cin"], opts["cout"], opts["kernel"], stride=opts["stride"], padding=opts["padding"])
    conv = conv.to(opts["dtype"])
    x = torch.zeros(1, opts["cin"], opts["side"], opts["side"], dtype=opts["dtype"])
    assert applies(x, conv.weight, conv) is expected


def test_auto_never_picks_winograd_off_the_cpu_or_outside_float32():
    assert not preferred("cuda", dtype=torch.float32)
    assert not preferred("cpu", dtype=torch.float64)
    assert preferred("cpu", dtype=torch.float32) == (torch.backends.cpu.get_cpu_capability() == "AVX2"
                                                      and nnpack_ready())
