"""The four variational networks of one image, and B independent copies of them run as one (method.md section 3).

:class:`VariationalNets` maps one noisy image y (N, C, H, W) in [0,1] to the variational
parameters of its posterior. :class:`StackedNets` holds B such sets with independent weights
(one per image) and evaluates all B with ``torch.func.vmap``: one batched call per layer
instead of B. The B fits stay independent: every weight only ever sees its own image, and
since Adam is element-wise, one optimiser over the stacked weights equals B optimisers.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from dvi.config import Nets
from dvi.method.nets import OmegaNet, PhiNet, XNet, ZNet

NETS = Nets()  # default sizes (dvi/config.py)


class Maps(NamedTuple):
    """The variational parameters of the posterior, each (N, K, C, H, W): component means ``mu`` and clamped
    log-variances ``log_var`` (X-net), clamped log shape ``log_alpha`` and rate ``log_beta`` of the Gamma
    posterior of the noise precision (Phi-net), mixture weights ``pi`` (Z-net), Dirichlet concentrations
    ``d_hat`` (Omega-net); the keyword arguments of :func:`dvi.method.elbo.negative_elbo` (``._asdict()``)."""

    mu: Tensor
    log_var: Tensor
    log_alpha: Tensor
    log_beta: Tensor
    pi: Tensor
    d_hat: Tensor


class VariationalNets(nn.Module):
    """X-, Phi-, Z- and Omega-net of one image; outputs are (N, K, C, H, W) maps.

    With one component (K = 1) the Z- and Omega-nets are not built: the softmax over one logit is 1 whatever
    the Z-net says, so ``pi`` = 1 and its gradient is exactly zero, and the Dirichlet over one weight is a point
    mass, so L4 = L5 = 0 for any ``d_hat`` (dvi/method/elbo.py) and the Omega-net's gradient is exactly zero too.
    The fit is the same (the X- and Phi-nets are initialised and updated as with the two nets present: Adam
    leaves a weight with zero gradient unchanged); ``pi`` and ``d_hat`` are returned as ones.
    """

    def __init__(self, *, channels: int = 3, components: int = 3, unet_base: int = NETS.unet_width,
                 unet_depth: int = NETS.unet_depth, aux_layers: int = NETS.aux_layers,
                 aux_features: int = NETS.aux_features) -> None:
        super().__init__()
        self.x_net = XNet(channels=channels, components=components, base=unet_base, depth=unet_depth)
        aux = dict(channels=channels, components=components, layers=aux_layers, features=aux_features)
        self.phi_net = PhiNet(**aux)
        self.z_net, self.omega_net = (ZNet(**aux), OmegaNet(**aux)) if components > 1 else (None, None)

    def forward(self, y: Tensor) -> Maps:
        mu, log_var = self.x_net(y)
        log_alpha, log_beta = self.phi_net(y)
        if self.z_net is None or self.omega_net is None:  # K = 1: the weight is 1 (class docstring)
            ones = torch.ones_like(mu)
            return Maps(mu=mu, log_var=log_var, log_alpha=log_alpha, log_beta=log_beta, pi=ones, d_hat=ones)
        return Maps(mu=mu, log_var=log_var, log_alpha=log_alpha, log_beta=log_beta, pi=self.z_net(y),
                    d_hat=self.omega_net(y))


def _escape(name: str) -> str:
    return name.replace(".", "__")


class StackedNets(nn.Module):
    """B independent :class:`VariationalNets` with their weights stacked along a leading dimension.

    ``forward(y)`` takes y (B, C, H, W), image b going through net b (with its own batch-norm
    statistics, as a batch of one), and returns maps (B, K, C, H, W).
    """

    def __init__(self, nets: Sequence[VariationalNets]) -> None:
        super().__init__()
        params, buffers = stack_module_state(list(nets))
        self.names = list(params)
        self.buffer_names = list(buffers)
        self.stacked = nn.ParameterDict({_escape(k): nn.Parameter(v.detach().clone()) for k, v in params.items()})
        for key, value in buffers.items():
            self.register_buffer(f"stacked_buffer__{_escape(key)}", value.clone())
        self._template = [copy.deepcopy(nets[0]).to("meta")]  # a list keeps it out of the module tree

    def train(self, mode: bool = True) -> StackedNets:
        self._template[0].train(mode)
        return super().train(mode)

    @property
    def count(self) -> int:
        return self.stacked[_escape(self.names[0])].shape[0]

    def _state(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        params = {k: self.stacked[_escape(k)] for k in self.names}
        buffers = {k: getattr(self, f"stacked_buffer__{_escape(k)}") for k in self.buffer_names}
        return params, buffers

    def forward(self, y: Tensor) -> Maps:
        """Maps of all B images, computed in ``y``'s dtype with autocast off: under ``vmap`` cuDNN's
        batch-norm backward refuses bf16 activations with float32 running statistics (seen on an H100),
        and the variational nets are a small part of the work (the priors keep autocast)."""
        with torch.autocast(device_type=y.device.type, enabled=False):
            return self._forward(y)

    def _forward(self, y: Tensor) -> Maps:
        template = self._template[0]
        params, buffers = self._state()
        if self.count == 1:  # no vmap needed: views of the stacked weights without their leading dimension
            # (squeeze, not v[0]: the backward of a view is a view, that of indexing a zero-filled copy per weight)
            one = {k: v.squeeze(0) for k, v in params.items()}, {k: v.squeeze(0) for k, v in buffers.items()}
            return functional_call(template, one, (y,))

        def call(p: dict[str, Tensor], b: dict[str, Tensor], image: Tensor) -> tuple[Tensor, ...]:
            return tuple(functional_call(template, (p, b), (image.unsqueeze(0),)))

        return Maps(*(value.squeeze(1) for value in vmap(call)(params, buffers, y)))

    def unstacked(self, index: int) -> VariationalNets:
        """A plain :class:`VariationalNets` holding copy ``index`` of the weights (for inspection/tests)."""
        net = copy.deepcopy(self._template[0]).to_empty(device=self.stacked[_escape(self.names[0])].device)
        params, buffers = self._state()
        state = {k: v[index].detach().clone() for k, v in {**params, **buffers}.items()}
        net.load_state_dict(state)
        return net


def seeded_nets(seeds: Sequence[int], **sizes: int) -> list[VariationalNets]:
    """One :class:`VariationalNets` per seed, initialised from ``torch.manual_seed(seed)`` (global RNG untouched)."""
    nets = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            nets.append(VariationalNets(**sizes))
    return nets
