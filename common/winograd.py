"""3x3 convolutions through NNPACK's Winograd kernels, where they beat oneDNN (CPUs whose best kernels are AVX2).

A 3x3 convolution with stride 1 and padding 1 ("same" size) is computed by PyTorch on a CPU with oneDNN's
direct kernels. NNPACK (bundled with PyTorch's x86 and ARM builds) computes the same map with the Winograd
transform F(6x6, 3x3), about a third of the multiplications; float32 only, rounding differences of about
1e-5 of the output's scale. For the backward pass the input gradient is again a "same" 3x3 convolution,
of the output gradient with the weights flipped in space and their channel axes swapped,

    dL/dx = conv3x3(dL/dy, flip_hw(W)^T),

which NNPACK computes as well; the weight (and bias) gradient stays with PyTorch's kernels. On the 2-core
Zen 3 VM (AVX2, no AVX-512) this made a fast-preset step at 256x256 px several percent faster
(docs/performance.md, "Winograd convolutions"); on layers under 256x256 pixels or with fewer than 16
channels oneDNN was as fast or faster, so :func:`applies` leaves those alone.

:class:`Conv2d` is a drop-in ``nn.Conv2d`` (same parameters and state dict) that takes the NNPACK path inside
``with winograd(True):`` when :func:`applies`; everywhere else it is ``nn.Conv2d``. The choice is made per call
from the tensors' shapes, so it is the same on every run on one machine.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from contextvars import ContextVar

import torch
from torch import Tensor, nn

MIN_PIXELS = 256 * 256  # smaller maps: oneDNN as fast or faster (measured, see the module docstring)
MIN_CHANNELS = 16  # input and output channels; fewer: the transforms outweigh the saved multiplications

_ENABLED: ContextVar[bool] = ContextVar("winograd", default=False)


@functools.cache
def nnpack_ready() -> bool:
    """True when this PyTorch build has NNPACK and it initialised on this CPU (NNPACK needs the call)."""
    try:
        return bool(torch.backends.nnpack.is_available())
    except (AttributeError, RuntimeError):
        return False


def preferred(device: torch.device | str, *, dtype: torch.dtype) -> bool:
    """Whether ``auto`` turns the Winograd path on: a CPU whose best kernels PyTorch reports as AVX2 (no
    AVX-512: there oneDNN's kernels were not compared), float32 weights, NNPACK ready."""
    if torch.device(device).type != "cpu" or dtype != torch.float32:
        return False
    return torch.backends.cpu.get_cpu_capability() == "AVX2" and nnpack_ready()


@contextlib.contextmanager
def winograd(enabled: bool) -> Iterator[None]:
    """Inside the block, :class:`Conv2d` layers take the NNPACK path where :func:`applies` (``enabled``), or
    never (False). The gradients of a forward run inside follow the path chosen there."""
    token = _ENABLED.set(bool(enabled) and nnpack_ready())
    try:
        yield
    finally:
        _ENABLED.reset(token)


def applies(x: Tensor, weight: Tensor, conv: nn.Conv2d) -> bool:
    """The NNPACK path's rule: a float32 CPU tensor (N, Cin, H, W) with H x W >= :data:`MIN_PIXELS`, a 3x3
    kernel with stride 1, padding 1, no dilation or groups, Cin and Cout >= :data:`MIN_CHANNELS`."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32 and x.dim() == 4
            and conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and x.shape[-1] * x.shape[-2] >= MIN_PIXELS and min(weight.shape[0], weight.shape[1]) >= MIN_CHANNELS
            and not torch._C._functorch.is_batchedtensor(x))


def _nnpack(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return torch._nnpack_spatial_convolution(x.contiguous(), weight.contiguous(), bias, [1, 1])


class _WinogradConv3x3(torch.autograd.Function):
    """y = conv3x3(x, W) + b with NNPACK forward and input gradient, PyTorch's kernels for dW and db."""

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return _nnpack(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: Tensor) -> None:  # noqa: ANN001 - autograd ctx
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # noqa: ANN001
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = _nnpack(grad, weight.flip(2, 3).transpose(0, 1), None)
        want_weight, want_bias = ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]
        grad_w = grad_b = None
        if want_weight or want_bias:
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if ctx.has_bias else None, [1, 1], [1, 1], [1, 1], False, [0, 0],
                1, [False, want_weight, want_bias])
        return grad_x, grad_w, grad_b


def conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` through NNPACK (forward and input gradient); the caller has
    checked :func:`applies`."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return _WinogradConv3x3.apply(x, weight, bias)
    return _nnpack(x, weight, bias)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that computes 3x3 "same" convolutions through NNPACK inside ``with winograd(True):``
    where :func:`applies` (same parameters, state dict and results up to float32 rounding)."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # noqa: A002
        if _ENABLED.get() and applies(input, weight, self):
            return conv3x3(input, weight, bias)
        return super()._conv_forward(input, weight, bias)


__all__ = ["MIN_CHANNELS", "MIN_PIXELS", "Conv2d", "applies", "conv3x3", "nnpack_ready", "preferred", "winograd"]
