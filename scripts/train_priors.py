"""Train the six shipped priors (RGB and grayscale x corpus groups A, B, C) round-robin, resumable.

Each round gives every prior ``--minutes`` of training (Lightning ``max_time``; or ``--budget`` minutes
for all of them, split evenly, RGB first: photos are the main use), resuming from its ``last.ckpt``;
after each round the prior is exported into ``--out`` (default ``checkpoints/``, sha256 manifest).
Without a ``last.ckpt`` a prior starts from its exported file in ``--init`` (default ``--out``).
Run it again (next session) to keep improving them. Needs the corpus of scripts/build_corpus.py.

The default batches are the BF-CNN recipe's (Mohan et al., ICLR 2020): 50x50 patches, batch 128, the
training images at scales 1, 0.9, 0.8, 0.7, all 8 flips/rotations; the noise levels and the loss are stage 1's
defaults (the light-noise recipe, prior_training/noise.py; ``--light-fraction 0 --loss-weighting mse`` for
the BF-CNN's sigma ~ U[0, 100] and plain MSE); Adam 1e-3 with cosine decay to 1e-5 over ``--max-steps``;
batches come from the device-resident sampler (``--data.pipeline auto``). Set ``--max-steps`` to what the
time budget allows, so that the decay ends with the budget.

    python scripts/train_priors.py --corpus data/corpus --rounds 1 --minutes 15
    python scripts/train_priors.py --budget 60 --only A-rgb --out runs/candidates --init checkpoints --lr 2e-4
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from prior_training.noise import WEIGHTINGS, NoiseRecipe
from prior_training.sampler import BFCNN_SCALES

GROUPS = {"A": "animals (gcompris)", "B": "outdoor scenes (wallpapers, monuments)", "C": "objects, people, misc"}


@dataclass(frozen=True)
class Recipe:
    """Batch, data and precision settings of one training run (defaults: see the top).

    A batch is ``images_per_batch * patches_per_image`` patches of ``patch_size`` pixels;
    ``pipeline``/``scales``/``workers`` are PatchDataModule's; validation (and ``last.ckpt``) every
    ``val_every`` steps; ``precision`` a Lightning precision or ``auto``; ``quiet`` turns the progress bar
    off (for runs whose output goes to a log file); ``noise`` the noise-level law and loss weighting
    (prior_training/noise.py, ``--model.light_fraction`` etc.); ``tag`` names a separate run ``<key>-<tag>``;
    ``ema_decay`` validates, checkpoints and exports an exponential moving average of the weights
    (Lightning's EMAWeightAveraging, ``avg = decay * avg + (1 - decay) * w`` after each step);
    ``depth``/``features`` the BF-DnCNN's layers and channels (``--model.depth``/``--model.features``;
    None: stage 1's default, the 20 x 64 net), e.g. a light prior set for the fast preset.
    """

    patch_size: int = 50
    images_per_batch: int = 16
    patches_per_image: int = 8
    workers: int = 1
    val_every: int = 500
    pipeline: str = "auto"
    scales: tuple[float, ...] = BFCNN_SCALES
    precision: str = "auto"
    quiet: bool = False
    noise: NoiseRecipe = NoiseRecipe()
    tag: str = ""
    ema_decay: float | None = None
    depth: int | None = None
    features: int | None = None


def group_folders(corpus: Path, work: Path) -> dict[str, Path]:
    """Symlink folders ``work/<split-or-group>/<channels>`` from the corpus manifest.

    RGB groups leave out grayscale-only photos; grayscale groups use every photo of the group.
    """
    with open(corpus / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    folders: dict[str, Path] = {}
    for row in rows:
        name = row["group"] if row["split"] == "train" else "test"
        for channels in ("rgb", "gray"):
            if channels == "rgb" and row["gray_only"] == "1" and name != "test":
                continue
            folder = work / f"{name}-{channels}"
            folder.mkdir(parents=True, exist_ok=True)
            link = folder / Path(row["file"]).name
            if not link.exists():
                os.symlink((corpus / row["file"]).resolve(), link)
            folders[f"{name}-{channels}"] = folder
    return folders


def trained_seconds(checkpoint: Path) -> float:
    """Training time already spent, from the Timer state Lightning keeps in ``checkpoint`` (0 if none)."""
    from prior_training.checkpoints import read_checkpoint

    if not checkpoint.is_file():
        return 0.0
    state = read_checkpoint(checkpoint, option="last checkpoint").get("callbacks", {})
    timers = [value for key, value in state.items() if "Timer" in key]
    return float(timers[0]["time_elapsed"]["train"]) if timers else 0.0


def as_max_time(seconds: float) -> str:
    """Lightning's ``DD:HH:MM:SS`` form."""
    seconds = int(seconds)
    return f"{seconds // 86400:02d}:{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train_command(key: str, folders: dict[str, Path], *, minutes: float, runs: Path, max_steps: int,
                  exported: Path, lr: float | None = None, recipe: Recipe = Recipe()) -> tuple[list[str], Path]:
    """The ``prior_training fit`` command that resumes (or starts) one prior for ``minutes``, and its last checkpoint.

    Without a ``last.ckpt`` (e.g. a fresh checkout) but with an exported prior, training continues
    from the exported weights with a fresh optimiser; the exported step count keeps adding up.
    ``lr`` starts (or resumes) a separate run ``<key>-lr<lr>`` from the exported prior at that
    learning rate (a low-rate phase after the 1e-3 one). ``last.ckpt`` is written at every
    validation and when the round's time is up, so the next round resumes where this one stopped.
    """
    group, channels = key.split("-")
    name = key if lr is None else f"{key}-lr{lr:g}"
    name = f"{name}-{recipe.tag}" if recipe.tag else name
    run_dir = runs / "prior_training" / name
    last = run_dir / "checkpoints" / "last.ckpt"
    command = [sys.executable, "-m", "prior_training", "fit", "--dataset", "folder",
               "--data-root", str(folders[key]), "--data.val_root", str(folders[f"test-{channels}"]),
               "--channels", "1" if channels == "gray" else "3", "--data.patch_size", str(recipe.patch_size),
               "--data.images_per_batch", str(recipe.images_per_batch),
               "--data.patches_per_image", str(recipe.patches_per_image), "--data.val_crop", "128",
               "--data.num_workers", str(recipe.workers), "--data.pipeline", recipe.pipeline,
               "--data.scales", json.dumps(list(recipe.scales)), "--precision", recipe.precision,
               "--model.light_fraction", str(recipe.noise.light_fraction),
               "--model.sigma_floor", str(recipe.noise.sigma_floor),
               "--model.loss_weighting", recipe.noise.loss_weighting, "--model.weight_offset", str(recipe.noise.weight_offset),
               "--trainer.max_steps", str(max_steps),
               "--trainer.val_check_interval", str(recipe.val_every),
               "--trainer.max_time", as_max_time(trained_seconds(last) + 60 * minutes),
               "--trainer.logger.init_args.save_dir", str(runs), "--trainer.logger.init_args.version", name]
    if lr is not None:
        command += ["--model.lr", str(lr)]
    if recipe.ema_decay is not None:
        command += ["--trainer.callbacks+=lightning.pytorch.callbacks.EMAWeightAveraging",
                    f"--trainer.callbacks.decay={recipe.ema_decay}"]
    if recipe.depth is not None:
        command += ["--model.depth", str(recipe.depth)]
    if recipe.features is not None:
        command += ["--model.features", str(recipe.features)]
    if recipe.quiet:
        command += ["--progress_bar.refresh_rate", "0"]
    if last.is_file():
        command += ["--ckpt_path", str(last)]
    elif exported.is_file():
        command += ["--model.init_prior", str(exported)]
    return command, last


def run_all(commands: dict[str, list[str]], *, parallel: bool, logs: Path | None) -> None:
    """Run the training commands one after another, or all at once (one GPU fits several small trainings);
    with ``logs``, each command's output goes to ``logs/<key>.log``. A failed training stops the script."""
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
    running = []
    for key, command in commands.items():
        output = open(logs / f"{key}.log", "w") if logs is not None else None  # noqa: SIM115 - closed below
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT if output else None)
        running.append((key, process, output))
        if not parallel:
            process.wait()
    for key, process, output in running:
        if process.wait() != 0:
            raise SystemExit(f"training {key} failed (exit {process.returncode})" + (f"; see {logs}/{key}.log" if logs else ""))
        if output is not None:
            output.close()


def prior_file(folder: Path, key: str) -> Path:
    """The exported prior of ``key`` (e.g. ``A-rgb`` -> ``folder/bfdncnn_rgb_a.pt``)."""
    group, channels = key.split("-")
    return folder / f"bfdncnn_{channels}_{group.lower()}.pt"


def minutes_per_run(*, minutes: float, budget: float | None, keys: list[str], parallel: bool) -> float:
    """Training minutes of each prior and round: ``budget`` (all priors together) split evenly over the
    sequential runs (all at once with ``parallel``), else ``minutes``."""
    if budget is None:
        return minutes
    return budget if parallel else budget / len(keys)


def main() -> None:
    from prior_training.cli import export

    defaults = Recipe()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--work", type=Path, default=Path("data/prior_groups"))
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=Path("checkpoints"), help="where the exported priors go")
    parser.add_argument("--init", type=Path, default=None,
                        help="exported priors to start from when a prior has no last.ckpt (default: --out)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=15, help="training time per prior and round")
    parser.add_argument("--budget", type=float, default=None,
                        help="training minutes per round for all priors together (overrides --minutes)")
    parser.add_argument("--max-steps", type=int, default=20000, help="length of the cosine schedule")
    parser.add_argument("--only", nargs="*", default=None, help="e.g. A-rgb B-gray")
    parser.add_argument("--lr", type=float, default=None,
                        help="a separate run at this learning rate from the exported priors (e.g. a low-rate phase)")
    parser.add_argument("--parallel", action="store_true", help="train all priors at once (a GPU)")
    parser.add_argument("--logs", type=Path, default=None, help="write each training's output to LOGS/<key>.log")
    parser.add_argument("--patch-size", type=int, default=defaults.patch_size)
    parser.add_argument("--images-per-batch", type=int, default=defaults.images_per_batch)
    parser.add_argument("--patches-per-image", type=int, default=defaults.patches_per_image)
    parser.add_argument("--workers", type=int, default=defaults.workers, help="data-loader processes (loader pipeline)")
    parser.add_argument("--val-every", type=int, default=defaults.val_every, help="validate and checkpoint every N steps")
    parser.add_argument("--pipeline", choices=["auto", "device", "loader"], default=defaults.pipeline)
    parser.add_argument("--scales", type=float, nargs="+", default=list(defaults.scales))
    parser.add_argument("--precision", default=defaults.precision, help="e.g. bf16-mixed (auto: by hardware)")
    noise = NoiseRecipe()
    parser.add_argument("--light-fraction", type=float, default=noise.light_fraction,
                        help="share of patches with a log-uniform noise level (prior_training/noise.py)")
    parser.add_argument("--sigma-floor", type=float, default=noise.sigma_floor, help="lowest log-uniform sigma (0-255)")
    parser.add_argument("--loss-weighting", choices=WEIGHTINGS, default=noise.loss_weighting)
    parser.add_argument("--weight-offset", type=float, default=noise.weight_offset, help="c of the weights (0-255)")
    parser.add_argument("--ema-decay", type=float, default=None,
                        help="train with an exponential moving average of the weights (e.g. 0.995) and export it")
    parser.add_argument("--depth", type=int, default=None, help="BF-DnCNN layers (default: stage 1's, 20)")
    parser.add_argument("--features", type=int, default=None, help="BF-DnCNN channels (default: stage 1's, 64)")
    parser.add_argument("--tag", default="", help="train separate runs <key>-<tag> (e.g. a recipe candidate)")
    args = parser.parse_args()
    recipe = Recipe(patch_size=args.patch_size, images_per_batch=args.images_per_batch,
                    patches_per_image=args.patches_per_image, workers=args.workers, val_every=args.val_every,
                    pipeline=args.pipeline, scales=tuple(args.scales), precision=args.precision,
                    quiet=args.logs is not None, tag=args.tag, ema_decay=args.ema_decay,
                    depth=args.depth, features=args.features,
                    noise=NoiseRecipe(light_fraction=args.light_fraction, sigma_floor=args.sigma_floor,
                                      loss_weighting=args.loss_weighting, weight_offset=args.weight_offset))
    folders = group_folders(args.corpus, args.work)
    keys = args.only or [f"{g}-{c}" for c in ("rgb", "gray") for g in GROUPS]  # RGB first
    minutes = minutes_per_run(minutes=args.minutes, budget=args.budget, keys=keys, parallel=args.parallel)
    together = [keys] if args.parallel else [[key] for key in keys]  # sequential: export each as it finishes
    for _ in range(args.rounds):
        for batch in together:
            planned = {key: train_command(key, folders, minutes=minutes, runs=args.runs, max_steps=args.max_steps,
                                          exported=prior_file(args.init or args.out, key), lr=args.lr, recipe=recipe)
                       for key in batch}
            run_all({key: command for key, (command, _) in planned.items()}, parallel=args.parallel, logs=args.logs)
            for key, (_, last) in planned.items():
                group, channels = key.split("-")
                out = prior_file(args.out, key)
                digest = export(last, out, training_data=f"open-photo corpus group {group}: {GROUPS[group]} "
                                f"({'grayscale (BT.601)' if channels == 'gray' else 'RGB'}), see checkpoints/CORPUS.csv")
                print(f"wrote {out} (sha256 {digest})")


if __name__ == "__main__":
    main()
