"""Where a stage-2 fit makes the host wait for the GPU: CUDA's sync debug mode over the step loop.

Runs a short real fit (Lightning Trainer, default configuration unless overridden) on a synthetic
image with ``torch.cuda.set_sync_debug_mode("warn")`` switched on from the third step to the end of
training, records the Python stack of every synchronising call, and prints how many there were per
step and where they come from (innermost frame in this repository, and in Lightning/torch).
A step loop that never waits should show syncs only on logging steps (steps 9, 19, ... for ``--log-every 10``),
and, with the step recorded as a CUDA graph (``--cuda-graphs``, auto on a GPU), on the capture step (step 3).

    python -m benchmarks.step_syncs --size 128 --steps 30 --log-every 10
"""

from __future__ import annotations

import argparse
import collections
import traceback
import warnings
from pathlib import Path

import lightning as L
import torch
from rich.console import Console
from rich.table import Table

from common.bfdncnn import BFDnCNN
from dvi.config import Config
from dvi.fitting.fit import fit_image
from dvi.method.noise_level import analyse_noise

ROOT = str(Path(__file__).resolve().parents[1])


class SyncRecorder(L.Callback):
    """Switches CUDA's sync debug mode to "warn" from step ``start`` and records each sync's stack and step."""

    def __init__(self, *, start: int) -> None:
        self.start, self.step = start, -1
        self.syncs: list[tuple[int, str, str]] = []

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: object, index: int) -> None:
        self.step = index
        if index == self.start and torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("default")

    def record(self, message: warnings.WarningMessage | object, *args: object) -> None:
        if "synchronizing" not in str(message):
            return
        frames = traceback.extract_stack()[:-2]
        ours = [f for f in frames if f.filename.startswith(ROOT) and "benchmarks" not in f.filename]
        theirs = [f for f in frames if not f.filename.startswith(ROOT)]
        where = lambda f: f"{Path(f.filename).name}:{f.lineno} {f.name}"  # noqa: E731
        self.syncs.append((self.step, where(ours[-1]) if ours else "-", where(theirs[-1]) if theirs else "-"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--cuda-graphs", choices=("auto", "true", "false"), default="auto")
    args = parser.parse_args()
    torch.manual_seed(0)
    image = (0.5 + 0.1 * torch.randn(3, args.size, args.size)).clamp(0, 1)
    priors = [BFDnCNN(channels=3).eval() for _ in range(3)]
    settings = Config().replace(steps=args.steps, log_every=args.log_every, image_every=0, progress=False,
                                precision=args.precision, restart_sigma=10.0,
                                cuda_graphs={"auto": "auto", "true": True, "false": False}[args.cuda_graphs])
    recorder = SyncRecorder(start=2)
    shown = warnings.showwarning
    warnings.simplefilter("always")
    warnings.showwarning = recorder.record
    try:
        fit_image(image, priors, settings, noise=analyse_noise(image), callbacks=[recorder])
    finally:
        warnings.showwarning = shown
    if not torch.cuda.is_available():
        print("no CUDA device: the fit ran on the CPU, where there is nothing to wait for "
              "(sync debug mode is CUDA-only)")
    per_step = collections.Counter(step for step, _, _ in recorder.syncs)
    watched = args.steps - recorder.start
    logging = sum(1 for s in range(recorder.start, args.steps) if (s + 1) % args.log_every == 0)
    print(f"{len(recorder.syncs)} synchronisations in {watched} steps ({logging} of them logging steps); "
          f"steps with any: {sorted(per_step)}")
    table = Table(title="where the host waits (innermost frame here / in a library)")
    for column in ("count", "this repository", "library"):
        table.add_column(column)
    for (ours, theirs), count in collections.Counter((o, t) for _, o, t in recorder.syncs).most_common(15):
        table.add_row(str(count), ours, theirs)
    Console().print(table)


if __name__ == "__main__":
    main()
