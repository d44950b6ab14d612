"""The K prior forwards of one stage-2 step (63 % of a fast-preset step at 256x256 on a CPU, see
docs/performance.md), timed in the ways issue 18 asks about, side by side in one process:

- ``nchw``: what a step did before channels_last (the folded BF-DnCNNs of dvi/fitting/module.py,
  ``W x`` per 3x3 convolution, one call per component);
- ``nhwc``: the same in channels_last memory layout (the ``--channels-last`` default);
- ``grouped``: the K components in one call, each layer one grouped convolution of the K priors'
  stacked weights (``groups=K``; the same function, checked to 1e-4);
- ``compiled``: ``torch.compile`` (inductor, C++ on a CPU) of each folded prior, NHWC; its compile
  time is printed apart from the time per call.

Prior weights do not change the cost; the shipped RGB priors are used.

    python -m benchmarks.prior_forward --sizes 64 256 --samples 1
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from benchmarks.machine import cpu_description
from benchmarks.timing import seconds_per_step
from common.prior_files import default_prior_paths, load_priors


def grouped(folded: Sequence[nn.Sequential]) -> nn.Sequential:
    """One net computing all K folded priors at once on (N, K*C, H, W): each 3x3 convolution becomes a
    grouped one (``groups=K``) whose k-th group holds prior k's weights; ReLUs stay element-wise."""
    layers: list[nn.Module] = []
    for parts in zip(*folded):
        if isinstance(parts[0], nn.Conv2d):
            weight = torch.cat([conv.weight for conv in parts])  # type: ignore[union-attr]
            conv = nn.Conv2d(weight.shape[1] * len(parts), weight.shape[0], 3, padding=1, bias=False,
                             groups=len(parts))
            conv.weight = nn.Parameter(weight, requires_grad=False)
            layers.append(conv)
        else:
            layers.append(parts[0])
    return nn.Sequential(*layers)


def variants(folded: Sequence[nn.Sequential], x: Tensor) -> dict[str, Callable[[], Tensor]]:
    """Each variant as a function returning the K outputs stacked (N, K, C, H, W) for samples x (N, K, C, H, W)."""
    nhwc = [nn.Sequential(*prior).to(memory_format=torch.channels_last) for prior in folded]
    together = grouped(folded).to(memory_format=torch.channels_last)
    flat = x.flatten(1, 2).contiguous(memory_format=torch.channels_last)
    parts = [x[:, k].contiguous() for k in range(x.shape[1])]
    parts_nhwc = [part.contiguous(memory_format=torch.channels_last) for part in parts]

    def separate(nets: Sequence[nn.Module], inputs: Sequence[Tensor]) -> Callable[[], Tensor]:
        return lambda: torch.stack([net(part) for net, part in zip(nets, inputs)], dim=1)

    return {"nchw": separate(folded, parts), "nhwc": separate(nhwc, parts_nhwc),
            "grouped": lambda: together(flat).view_as(x),
            "compiled": separate([torch.compile(net) for net in nhwc], parts_nhwc)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--samples", type=int, default=1, help="Monte-Carlo samples M per component (fast preset: 1)")
    parser.add_argument("--steps", type=int, default=3, help="timed calls per variant")
    args = parser.parse_args()
    print(cpu_description(), f"torch {torch.__version__}")
    folded = [prior.folded().requires_grad_(False) for prior in load_priors(default_prior_paths(3), channels=3)]
    table = Table(title=f"K = {len(folded)} prior forwards of one step, M = {args.samples}, float32")
    for column in ("size", "variant", "ms/call", "vs nchw", "first call s", "max |diff|"):
        table.add_column(column, justify="right")
    with torch.inference_mode():
        for size in args.sizes:
            x = torch.rand(args.samples, len(folded), 3, size, size)
            calls = variants(folded, x)
            reference = calls["nchw"]()
            times = {}
            for name, call in calls.items():
                start = time.perf_counter()
                out = call()  # the first call: compiles the compiled variant
                first = time.perf_counter() - start
                times[name] = seconds_per_step(call, device="cpu", steps=args.steps)
                table.add_row(str(size), name, f"{1000 * times[name]:.0f}", f"{times[name] / times['nchw']:.2f}",
                              f"{first:.1f}", f"{(out - reference).abs().max().item():.1e}")
    Console().print(table)


if __name__ == "__main__":
    main()
