"""A stage-2 step with NNPACK's Winograd convolutions (--winograd, common/winograd.py)."""

import torch

from common.prior_files import load_prior
from common.winograd import MIN_PIXELS
from dvi.config import Config
from dvi.fitting.fit import build_module
from dvi.fitting.module import standalone
from tests.common.test_winograd import needs_nnpack

SIDE = int(MIN_PIXELS**0.5)


@needs_nnpack
def test_a_fit_step_with_winograd_equals_the_native_step_up_to_rounding(tiny_priors):
    """One step of the module at MIN_PIXELS (what --winograd true changes): same loss and weight gradients up to
    float32 rounding, the Winograd path in the graph; --winograd false keeps the native one."""
    config = Config().replace(components=1, mc_samples=1, unet_width=16, unet_depth=2, aux_layers=3, aux_features=16,
                              precision="32-true", device="cpu", progress=False)
    y = torch.rand(1, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    results = {}
    for flag in (False, True):
        module = standalone(build_module(config.replace(winograd=flag), [load_prior(tiny_priors[3], channels=3)[0]], y, seeds=[0]), device="cpu")
        assert module.winograd is flag
        terms, _ = module.loss_terms()
        seen, stack = set(), [terms.total.grad_fn]
        while stack:  # every node of the backward graph
            node = stack.pop()
            if node is not None and node not in seen:
                seen.add(node)
                stack.extend(next_node for next_node, _ in node.next_functions)
        kinds = {type(node).__name__ for node in seen}
        assert ("_WinogradConv3x3Backward" in kinds) is flag
        terms.total.sum().backward()
        results[flag] = terms.total.detach(), {name: p.grad.clone() for name, p in module.nets.named_parameters()
                                               if p.grad is not None}
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-4, atol=0)
    scale = max(grad.abs().max().item() for grad in results[False][1].values())
    assert results[True][1].keys() == results[False][1].keys()
    for name, grad in results[False][1].items():  # (biases before a batch norm have rounding-only gradients)
        torch.testing.assert_close(results[True][1][name], grad, rtol=0, atol=1e-3 * scale)
