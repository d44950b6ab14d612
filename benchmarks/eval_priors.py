"""Gaussian-denoising PSNR of the shipped priors on the held-out split, recorded in the manifest.

For every prior in ``checkpoints/MANIFEST.json``: centre crops of the held-out images (RGB priors:
the RGB test photos; gray priors: their BT.601 luma), AWGN at sigma 15 / 25 / 50 (0-255 scale)
with fixed seeds, PSNR (published convention, unclipped noisy input to the prior) averaged over
images. Written to each entry as ``heldout_psnr`` with the crop size and image count.

    python -m benchmarks.eval_priors --heldout data/prior_groups [--crop 256]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from common.images import list_images
from common.metrics import psnr
from common.prior_files import (
    default_checkpoint_dir,
    load_prior,
    read_manifest,
    update_manifest_entry,
)
from prior_training.data import CenterCropDataset

SIGMAS = (15.0, 25.0, 50.0)


@torch.no_grad()
def heldout_psnr(model: torch.nn.Module, images: list[torch.Tensor]) -> dict[str, float]:
    """Mean PSNR of ``model`` per sigma on ``images`` ((C, H, W) in [0,1]) and of the noisy inputs."""
    scores: dict[str, float] = {}
    for sigma in SIGMAS:
        denoised, noisy_scores = [], []
        for index, clean in enumerate(images):
            generator = torch.Generator().manual_seed(10_000 * index + int(sigma))
            noisy = clean + sigma / 255 * torch.randn(clean.shape, generator=generator)
            denoised.append(psnr(model(noisy[None])[0], clean))
            noisy_scores.append(psnr(noisy, clean))
        scores[f"{sigma:g}"] = round(sum(denoised) / len(denoised), 3)
        scores[f"noisy_{sigma:g}"] = round(sum(noisy_scores) / len(noisy_scores), 3)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heldout", type=Path, default=Path("data/prior_groups"),
                        help="folder holding test-rgb/ and test-gray/ (made by scripts/train_priors.py)")
    parser.add_argument("--checkpoints", type=Path, default=default_checkpoint_dir())
    parser.add_argument("--crop", type=int, default=256)
    args = parser.parse_args()
    table = Table(title=f"Held-out Gaussian denoising PSNR (dB), {args.crop}x{args.crop} centre crops, "
                        f"{platform.machine()} CPU")
    for column in ("prior", "steps", "images", *(f"sigma {s:g}" for s in SIGMAS)):
        table.add_column(column, justify="right")
    for name, entry in sorted(read_manifest(args.checkpoints).items()):
        channels = entry["channels"]
        folder = args.heldout / ("test-gray" if channels == 1 else "test-rgb")
        crops = CenterCropDataset(list_images(folder), channels=channels, crop=args.crop)
        images = [crops[i] for i in range(len(crops))]
        model, _ = load_prior(args.checkpoints / name, channels=channels)
        scores = heldout_psnr(model, images)
        update_manifest_entry(args.checkpoints / name, heldout_psnr=scores,
                              heldout_set=f"{len(images)} held-out photos ({folder.name}), {args.crop}px centre crops")
        table.add_row(name, str(entry["steps"]), str(len(images)),
                      *(f"{scores[f'{s:g}']:.2f} (noisy {scores[f'noisy_{s:g}']:.2f})" for s in SIGMAS))
    Console().print(table)


if __name__ == "__main__":
    main()
