"""Stage-1 training throughput: patches/s of the default 20-layer BF-DnCNN on 64x64 patches.

One training step = AWGN on the device, forward, MSE, backward, Adam step (GaussianDenoiser).
CPU always (float32, and bf16-mixed where the CPU has native bfloat16); on a CUDA GPU also 32-true,
16-mixed and bf16-mixed (autocast).

    python -m benchmarks.prior_throughput [--batch 16] [--steps 5] [--threads N]
"""

from __future__ import annotations

import argparse
import platform

import torch
from rich.console import Console
from rich.table import Table

from benchmarks.timing import AUTOCAST, autocast, seconds_per_step
from common.trainer import cpu_has_native_bf16
from prior_training.module import GaussianDenoiser


def patches_per_second(*, device: str, precision: str, batch: int, steps: int, patch: int) -> float:
    """Timed steps after two warm-up steps; synchronises the GPU before reading the clock."""
    torch.manual_seed(0)
    module = GaussianDenoiser().to(device).train()
    optimiser = torch.optim.Adam(module.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device, enabled=precision == "16-mixed")
    clean = torch.rand(batch, 3, patch, patch, device=device)

    def step() -> None:
        with autocast(precision, device=device):
            loss = torch.nn.functional.mse_loss(module(module.add_noise(clean)), clean)
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()

    return batch / seconds_per_step(step, device=device, steps=steps, warmup=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--gpu-steps", type=int, default=50)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    table = Table(title=f"BF-DnCNN (20 layers, 64 features) training on {args.patch}x{args.patch} patches, "
                        f"batch {args.batch}, torch {torch.__version__}")
    for column in ("device", "precision", "patches/s"):
        table.add_column(column, justify="right")
    cpu_precisions = ["32-true", "bf16-mixed"] if cpu_has_native_bf16() else ["32-true"]
    for precision in [] if args.skip_cpu else cpu_precisions:
        rate = patches_per_second(device="cpu", precision=precision, batch=args.batch, steps=args.steps,
                                  patch=args.patch)
        table.add_row(f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
                      precision, f"{rate:.1f}")
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for precision in AUTOCAST:
            if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
                continue
            rate = patches_per_second(device="cuda", precision=precision, batch=args.batch * 8,
                                      steps=args.gpu_steps, patch=args.patch)
            table.add_row(name, precision, f"{rate:.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
