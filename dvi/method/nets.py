"""The four variational networks of ScoreDVI (method.md section 3).

Each takes the noisy image y (N, C, H, W) in [0,1] and returns maps shaped (N, K, C, H, W):
one value per mixture component k and per element (pixel and channel).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dvi.config import Nets

NETS = Nets()  # default sizes (dvi/config.py)

LOG_MIN, LOG_MAX = math.log(1e-8), math.log(1e4)


def clamp_log(x: Tensor) -> Tensor:
    """Clamp a log-output to [log 1e-8, log 1e4] before it is exponentiated (method.md section 3)."""
    return x.clamp(LOG_MIN, LOG_MAX)


def split_components(x: Tensor, *, maps: int, components: int, channels: int) -> tuple[Tensor, ...]:
    """(N, maps*K*C, H, W) -> ``maps`` tensors of (N, K, C, H, W)."""
    n, _, h, w = x.shape
    return tuple(x.view(n, maps, components, channels, h, w).unbind(1))


def conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class DoubleConv(nn.Sequential):
    """(conv 3x3 - BN - ReLU) x 2."""

    def __init__(self, cin: int, cout: int, *, mid: int | None = None) -> None:
        super().__init__(*conv_bn_relu(cin, mid or cout), *conv_bn_relu(mid or cout, cout))


class UNet(nn.Module):
    """U-Net with ``depth`` max-pool downsamplings, bilinear upsampling and skip concatenation.

    Widths ``base * 2**i``; the bottom doubles no further (bilinear variant), so base 64,
    depth 4 has about 13.4 M parameters for C=3, K=3. H and W must be multiples of 2**depth.
    """

    def __init__(self, cin: int, cout: int, *, base: int = NETS.unet_width, depth: int = NETS.unet_depth) -> None:
        super().__init__()
        widths = [base * 2**i for i in range(depth)] + [base * 2 ** (depth - 1)]
        self.inc = DoubleConv(cin, widths[0])
        self.downs = nn.ModuleList(DoubleConv(widths[i], widths[i + 1]) for i in range(depth))
        ups = []
        for i in reversed(range(depth)):
            # the input is the skip (widths[i]) plus the upsampled path, which has widths[i] too
            ups.append(DoubleConv(2 * widths[i], widths[max(i - 1, 0)]))
        self.ups = nn.ModuleList(ups)
        self.outc = nn.Conv2d(widths[0], cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for up in self.ups:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            x = up(torch.cat([skip, x], dim=1))
        return self.outc(x)


class DnCNN(nn.Sequential):
    """Small DnCNN with biases: conv+ReLU, (layers-2) x (conv, BN, ReLU), conv."""

    def __init__(self, cin: int, cout: int, *, layers: int = NETS.aux_layers, features: int = NETS.aux_features) -> None:
        body: list[nn.Module] = [nn.Conv2d(cin, features, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(layers - 2):
            body += [nn.Conv2d(features, features, 3, padding=1), nn.BatchNorm2d(features), nn.ReLU(inplace=True)]
        body.append(nn.Conv2d(features, cout, 3, padding=1))
        super().__init__(*body)


class XNet(nn.Module):
    """X-net: posterior mean ``mu_k`` and clamped log-variance ``log sigma2_k`` of each component."""

    def __init__(self, *, channels: int = 3, components: int = 3, base: int = NETS.unet_width,
                 depth: int = NETS.unet_depth) -> None:
        super().__init__()
        self.channels, self.components = channels, components
        self.net = UNet(channels, 2 * components * channels, base=base, depth=depth)

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_var = split_components(self.net(y), maps=2, components=self.components, channels=self.channels)
        return mu, clamp_log(log_var)


class PhiNet(nn.Module):
    """Phi-net: clamped ``log alpha^_k`` and ``log beta^_k`` of the Gamma posterior of the noise precision."""

    def __init__(self, *, channels: int = 3, components: int = 3, layers: int = NETS.aux_layers,
                 features: int = NETS.aux_features) -> None:
        super().__init__()
        self.channels, self.components = channels, components
        self.net = DnCNN(channels, 2 * components * channels, layers=layers, features=features)

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        log_alpha, log_beta = split_components(self.net(y), maps=2, components=self.components, channels=self.channels)
        return clamp_log(log_alpha), clamp_log(log_beta)


class ZNet(nn.Module):
    """Z-net: mixture weights ``pi_k`` (softmax over k of its logits)."""

    def __init__(self, *, channels: int = 3, components: int = 3, layers: int = NETS.aux_layers,
                 features: int = NETS.aux_features) -> None:
        super().__init__()
        self.channels, self.components = channels, components
        self.net = DnCNN(channels, components * channels, layers=layers, features=features)

    def forward(self, y: Tensor) -> Tensor:
        (logits,) = split_components(self.net(y), maps=1, components=self.components, channels=self.channels)
        return torch.softmax(logits, dim=1)


class OmegaNet(nn.Module):
    """Omega-net: Dirichlet concentration ``d^_k = exp(clamped log d^_k)``."""

    def __init__(self, *, channels: int = 3, components: int = 3, layers: int = NETS.aux_layers,
                 features: int = NETS.aux_features) -> None:
        super().__init__()
        self.channels, self.components = channels, components
        self.net = DnCNN(channels, components * channels, layers=layers, features=features)

    def forward(self, y: Tensor) -> Tensor:
        (log_d,) = split_components(self.net(y), maps=1, components=self.components, channels=self.channels)
        return clamp_log(log_d).exp()
