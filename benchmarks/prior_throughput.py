"""Stage-1 training throughput: the bare network step against the real step with the device-resident sampler.

(a) ``bare``: forward, MSE, backward and Adam step of the default 20-layer, 64-feature BF-DnCNN on one
    preallocated random batch (noisy and clean fixed), timed in a plain loop: the network's own cost.
(b) ``pipeline``: ``lightning.Trainer.fit`` of :class:`~prior_training.module.GaussianDenoiser` on the
    device pipeline, as ``python -m prior_training fit`` trains: each step draws its batch (crops, D4,
    sigma, noise) from a :class:`~prior_training.sampler.PatchSampler` holding uint8 images on the device;
    the steps are timed by a callback (after warm-up steps, the device synchronised at both ends).

Each rate is the fastest of ``--repeats`` blocks of ``--steps`` steps, bare and pipeline blocks alternating. Both print patches/s and TFLOP/s; the FLOPs of one training step are counted once by
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls of forward and backward). The last
column is (b)/(a): the share of the network's speed the whole pipeline keeps (issue target >= 0.9).
Sampler images: ``--images`` random uint8 images of ``--image-size`` pixels a side (the speed of a draw
does not depend on their content), stored at the BF-CNN scales 1, 0.9, 0.8, 0.7.

    python -m benchmarks.prior_throughput [--batch 128] [--patch 50] [--steps 5] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.timing import AUTOCAST, autocast, seconds_per_step
from common.trainer import cpu_has_native_bf16, quiet_lightning
from prior_training.data import StepIndices
from prior_training.module import GaussianDenoiser, adam_for
from prior_training.sampler import BFCNN_SCALES, PatchSampler


def bare_step(module: GaussianDenoiser, *, device: str, precision: str, batch: int, patch: int) -> Callable[[], None]:
    """One training step on a fixed random batch (the network and optimiser only)."""
    optimiser = adam_for(module.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device, enabled=precision == "16-mixed")
    memory = torch.channels_last if module.use_channels_last else torch.contiguous_format
    clean = torch.rand(batch, 3, patch, patch, device=device).contiguous(memory_format=memory)
    noisy = clean + 0.2 * torch.randn_like(clean)

    def step() -> None:
        with autocast(precision, device=device):
            loss = F.mse_loss(module(noisy), clean)
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()

    return step


def step_flops(module: GaussianDenoiser, *, device: str, batch: int, patch: int) -> int:
    """FLOPs of one forward + backward on a ``batch`` of ``patch`` x ``patch`` RGB patches."""
    noisy = torch.rand(batch, 3, patch, patch, device=device)
    with FlopCounterMode(display=False) as counter:
        F.mse_loss(module(noisy), noisy).backward()
    module.zero_grad(set_to_none=True)
    return counter.get_total_flops()


class StepTimer(L.Callback):
    """Seconds per step of ``repeats`` blocks of ``steps`` training steps after ``warmup`` steps (the device
    synchronised at each block's ends); after each block, ``between()`` (a bare block, so that both
    measurements alternate and share whatever else the machine is doing) and its result is kept too."""

    def __init__(self, *, warmup: int, steps: int, repeats: int, between: Callable[[], float]) -> None:
        self.warmup, self.steps, self.repeats, self.between = warmup, steps, repeats, between
        self.start, self.blocks, self.between_blocks = 0.0, [], []

    def _sync(self, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # noqa: ANN001 - Lightning hook
        done = trainer.global_step - self.warmup
        if done >= 0 and done % self.steps == 0 and len(self.blocks) < self.repeats:
            self._sync(module)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        done = trainer.global_step - self.warmup
        if done > 0 and done % self.steps == 0 and len(self.blocks) < self.repeats:
            self._sync(module)
            self.blocks.append((time.perf_counter() - self.start) / self.steps)
            self.between_blocks.append(self.between())


class SamplerData(L.LightningDataModule):
    """The device pipeline's data side: a sampler for the module to move, a loader of step indices."""

    def __init__(self, sampler: PatchSampler, *, steps: int) -> None:
        super().__init__()
        self.sampler, self.steps = sampler, steps

    def train_dataloader(self) -> DataLoader:
        return DataLoader(StepIndices(self.steps), batch_size=None, num_workers=0)


def pipeline_seconds(*, device: str, precision: str, batch: int, patch: int, steps: int, warmup: int,
                     repeats: int, images: int, image_size: int, bare: Callable[[], float]) -> tuple[list[float], list[float]]:
    """Seconds per step of each block of ``steps`` steps of a real ``Trainer.fit`` on the device pipeline,
    and of the ``bare()`` block run after each."""
    generator = torch.Generator().manual_seed(0)
    pictures = [torch.randint(0, 256, (3, image_size, image_size), generator=generator, dtype=torch.uint8)
                for _ in range(images)]
    sampler = PatchSampler(pictures, patch_size=patch, batch_size=batch, scales=BFCNN_SCALES)
    timer = StepTimer(warmup=warmup, steps=steps, repeats=repeats, between=bare)
    total = warmup + steps * repeats
    trainer = L.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision=precision,
                        max_steps=total, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer], benchmark=True)
    trainer.fit(GaussianDenoiser(), datamodule=SamplerData(sampler, steps=total))
    return timer.blocks, timer.between_blocks


def measure(*, device: str, precision: str, batch: int, patch: int, steps: int, warmup: int, repeats: int,
            images: int, image_size: int) -> tuple[float, float, float]:
    """(patches/s bare, patches/s pipeline, FLOPs per step); each rate from the fastest of ``repeats`` blocks
    of ``steps`` steps (the least disturbed by other processes on a shared machine), the bare and pipeline
    blocks alternating."""
    torch.manual_seed(0)
    module = GaussianDenoiser().to(device).train()
    module.setup_layout()
    flops = step_flops(module, device=device, batch=batch, patch=patch)
    step = bare_step(module, device=device, precision=precision, batch=batch, patch=patch)
    for _ in range(warmup):
        step()
    pipeline, bare = pipeline_seconds(device=device, precision=precision, batch=batch, patch=patch, steps=steps,
                                      warmup=warmup, repeats=repeats, images=images, image_size=image_size,
                                      bare=lambda: seconds_per_step(step, device=device, steps=steps, warmup=0))
    return batch / min(bare), batch / min(pipeline), flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128, help="patches per step")
    parser.add_argument("--patch", type=int, default=50)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="blocks of --steps steps; the fastest counts")
    parser.add_argument("--images", type=int, default=32, help="images in the sampler's store")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--precision", nargs="*", default=None,
                        help="precisions to time (default: bf16-mixed and 32-true on a GPU; 32-true, plus "
                             "bf16-mixed on a CPU with native bf16)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_lightning()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.precision:
        precisions = args.precision
    elif device == "cuda":
        precisions = ["bf16-mixed", "32-true"] if torch.cuda.is_bf16_supported() else ["16-mixed", "32-true"]
    else:
        precisions = ["32-true", "bf16-mixed"] if cpu_has_native_bf16() else ["32-true"]
    name = torch.cuda.get_device_name() if device == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    table = Table(title=f"BF-DnCNN (20 layers, 64 features) training, batch {args.batch} of {args.patch}x"
                        f"{args.patch}, best of {args.repeats} x {args.steps} steps after {args.warmup}, torch {torch.__version__}, {name}")
    for column in ("precision", "bare patches/s", "bare TFLOP/s", "pipeline patches/s", "pipeline TFLOP/s",
                   "pipeline / bare"):
        table.add_column(column, justify="right")
    for precision in precisions:
        if precision not in AUTOCAST:
            parser.error(f"--precision {precision}: choose from {', '.join(AUTOCAST)}")
        bare, pipeline, flops = measure(device=device, precision=precision, batch=args.batch, patch=args.patch,
                                        steps=args.steps, warmup=args.warmup, repeats=args.repeats, images=args.images,
                                        image_size=args.image_size)
        per_patch = flops / args.batch / 1e12
        table.add_row(precision, f"{bare:.1f}", f"{bare * per_patch:.3f}", f"{pipeline:.1f}",
                      f"{pipeline * per_patch:.3f}", f"{pipeline / bare:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
