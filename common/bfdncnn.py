"""BF-DnCNN: the bias-free blind Gaussian denoiser used as a score prior (method.md section 2)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class BiasFreeBatchNorm2d(nn.Module):
    """Batch norm without mean subtraction and without additive offset (Mohan et al., ICLR 2020).

    ``y = x / sd * gamma`` per channel. In training ``sd`` is the batch standard deviation over
    (N, H, W) (plus ``eps`` inside the square root) and the running estimate is updated with
    ``momentum``; in eval the running ``sd`` is used. Both are positively homogeneous:
    scaling ``x`` by ``a > 0`` scales ``y`` by ``a`` in eval mode.
    """

    def __init__(self, features: int, *, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        # small initial scales keep the residual near zero at the start (as DnCNN's BN initialisation)
        init = torch.randn(1, features, 1, 1) * (2.0 / (9.0 * features)) ** 0.5
        self.gamma = nn.Parameter(init.clamp(-0.025, 0.025))
        self.register_buffer("running_sd", torch.ones(1, features, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            sd = torch.sqrt(x.var(dim=(0, 2, 3), keepdim=True, unbiased=False) + self.eps)
            with torch.no_grad():
                self.running_sd.lerp_(sd.detach().to(self.running_sd.dtype), self.momentum)
        else:
            sd = self.running_sd
        return x / sd * self.gamma

    def scale(self) -> Tensor:
        """The fixed per-channel factor ``gamma / running_sd`` this layer applies in eval mode."""
        return (self.gamma / self.running_sd).flatten()


class BFDnCNN(nn.Module):
    """Bias-free DnCNN: residual blind Gaussian denoiser ``G(y) = y - R(y)``.

    ``depth`` 3x3 convolutions without biases, ``features`` channels: conv+ReLU, then
    ``depth - 2`` x (conv, bias-free batch norm, ReLU), then a conv back to ``channels``.
    Input and output are images in [0,1] (any scale works: the map is bias-free, so
    ``G(a*y) = a*G(y)`` for ``a > 0`` in eval mode). Trained for sigma in [0, 100]/255.
    """

    def __init__(self, *, channels: int = 3, depth: int = 20, features: int = 64) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if depth < 3:
            raise ValueError(f"depth must be at least 3, got {depth}")
        if features < 1:
            raise ValueError(f"features must be at least 1, got {features}")
        self.channels, self.depth, self.features = channels, depth, features
        widths = [channels] + [features] * (depth - 1) + [channels]
        self.conv_layers = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i + 1], 3, padding=1, bias=False) for i in range(depth)
        )
        self.norms = nn.ModuleList(BiasFreeBatchNorm2d(features) for _ in range(depth - 2))

    def residual(self, y: Tensor) -> Tensor:
        """The predicted noise ``R(y)`` (same shape as ``y``)."""
        x = torch.relu(self.conv_layers[0](y))
        for conv, norm in zip(self.conv_layers[1:-1], self.norms):
            x = torch.relu(norm(conv(x)))
        return self.conv_layers[-1](x)

    def forward(self, y: Tensor) -> Tensor:
        """Denoise ``y`` (N, C, H, W): returns ``y - R(y)``."""
        return y - self.residual(y)

    def folded(self) -> nn.Sequential:
        """The eval-mode network as a plain conv/ReLU stack computing ``R(y)``.

        In eval the bias-free batch norm is a fixed per-channel scale, so it is folded into the
        preceding convolution's weights. The result has no state to update and is cheaper.
        """
        layers: list[nn.Module] = []
        for index, conv in enumerate(self.conv_layers):
            weight = conv.weight.detach().clone()
            if 0 < index < self.depth - 1:
                weight = weight * self.norms[index - 1].scale().detach().view(-1, 1, 1, 1)
            folded = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1, bias=False)
            folded.weight = nn.Parameter(weight, requires_grad=False)
            layers.append(folded)
            if index < self.depth - 1:
                layers.append(nn.ReLU(inplace=True))
        return nn.Sequential(*layers)


def reference_key_map(depth: int = 20) -> dict[str, str]:
    """Map the reference ScoreDVI state-dict keys to :class:`BFDnCNN` keys.

    Reference layout (method.md section 2): ``conv_layers.{0..depth-1}.weight``,
    ``running_sd.{0..depth-3}`` and ``gammas.{0..depth-3}`` (each shaped 1 x features x 1 x 1).
    """
    mapping = {f"conv_layers.{i}.weight": f"conv_layers.{i}.weight" for i in range(depth)}
    for i in range(depth - 2):
        mapping[f"running_sd.{i}"] = f"norms.{i}.running_sd"
        mapping[f"gammas.{i}"] = f"norms.{i}.gamma"
    return mapping


def is_reference_state_dict(state: dict[str, Tensor]) -> bool:
    """True when ``state`` uses the reference key layout (``gammas.*`` / ``running_sd.*``)."""
    return any(key.startswith("gammas.") for key in state) and not any(
        key.startswith("norms.") for key in state
    )


def bfdncnn_from_reference(state: dict[str, Tensor]) -> BFDnCNN:
    """Build a :class:`BFDnCNN` from a reference-format state dict, inferring its shape."""
    state = {key.removeprefix("module."): value for key, value in state.items()}
    depth = sum(1 for key in state if key.startswith("conv_layers.") and key.endswith(".weight"))
    first = state["conv_layers.0.weight"]
    model = BFDnCNN(channels=int(first.shape[1]), depth=depth, features=int(first.shape[0]))
    mapping = reference_key_map(depth)
    unknown = sorted(set(state) - set(mapping))
    if unknown:
        raise KeyError(f"unexpected keys in reference state dict: {unknown[:5]}")
    converted = {mapping[key]: value.reshape(model.state_dict()[mapping[key]].shape)
                 for key, value in state.items()}
    model.load_state_dict(converted, strict=True)
    return model
