"""Train the six shipped priors (RGB and grayscale x corpus groups A, B, C) round-robin, resumable.

Each round gives every prior ``--minutes`` of training (Lightning ``max_time``), resuming from its
``last.ckpt``; after each round the prior is exported into ``checkpoints/`` (sha256 manifest).
Run it again (next session) to keep improving them. Needs the corpus of scripts/build_corpus.py.

    python scripts/train_priors.py --corpus data/corpus --rounds 1 --minutes 15
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

GROUPS = {"A": "animals (gcompris)", "B": "outdoor scenes (wallpapers, monuments)", "C": "objects, people, misc"}


@dataclass(frozen=True)
class Recipe:
    """Batch and loader settings of one training run (the defaults suit 2 CPU cores).

    A batch is ``images_per_batch * patches_per_image`` patches of ``patch_size`` pixels;
    validation (and ``last.ckpt``) every ``val_every`` steps; ``quiet`` turns the progress bar off
    (for runs whose output goes to a log file).
    """

    patch_size: int = 48
    images_per_batch: int = 4
    patches_per_image: int = 4
    workers: int = 1
    val_every: int = 50
    quiet: bool = False


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
    import torch

    if not checkpoint.is_file():
        return 0.0
    state = torch.load(checkpoint, map_location="cpu", weights_only=False).get("callbacks", {})
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
    run_dir = runs / "prior_training" / name
    last = run_dir / "checkpoints" / "last.ckpt"
    command = [sys.executable, "-m", "prior_training", "fit", "--dataset", "folder",
               "--data-root", str(folders[key]), "--data.val_root", str(folders[f"test-{channels}"]),
               "--channels", "1" if channels == "gray" else "3", "--data.patch_size", str(recipe.patch_size),
               "--data.images_per_batch", str(recipe.images_per_batch),
               "--data.patches_per_image", str(recipe.patches_per_image), "--data.val_crop", "128",
               "--data.num_workers", str(recipe.workers), "--trainer.max_steps", str(max_steps),
               "--trainer.val_check_interval", str(recipe.val_every),
               "--trainer.max_time", as_max_time(trained_seconds(last) + 60 * minutes),
               "--trainer.logger.init_args.save_dir", str(runs), "--trainer.logger.init_args.version", name]
    if lr is not None:
        command += ["--model.lr", str(lr)]
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


def main() -> None:
    from prior_training.cli import export

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--work", type=Path, default=Path("data/prior_groups"))
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=Path("checkpoints"))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=15, help="training time per prior and round")
    parser.add_argument("--max-steps", type=int, default=20000, help="length of the cosine schedule")
    parser.add_argument("--only", nargs="*", default=None, help="e.g. A-rgb B-gray")
    parser.add_argument("--lr", type=float, default=None,
                        help="a separate run at this learning rate from the exported priors (e.g. a low-rate phase)")
    parser.add_argument("--parallel", action="store_true", help="train all priors at once (a GPU)")
    parser.add_argument("--logs", type=Path, default=None, help="write each training's output to LOGS/<key>.log")
    parser.add_argument("--patch-size", type=int, default=Recipe.patch_size)
    parser.add_argument("--images-per-batch", type=int, default=Recipe.images_per_batch)
    parser.add_argument("--patches-per-image", type=int, default=Recipe.patches_per_image)
    parser.add_argument("--workers", type=int, default=Recipe.workers, help="data-loader processes per training")
    parser.add_argument("--val-every", type=int, default=Recipe.val_every, help="validate and checkpoint every N steps")
    args = parser.parse_args()
    recipe = Recipe(patch_size=args.patch_size, images_per_batch=args.images_per_batch,
                    patches_per_image=args.patches_per_image, workers=args.workers, val_every=args.val_every,
                    quiet=args.logs is not None)
    folders = group_folders(args.corpus, args.work)
    keys = args.only or [f"{g}-{c}" for c in ("rgb", "gray") for g in GROUPS]
    exported = {key: args.out / f"bfdncnn_{key.split('-')[1]}_{key.split('-')[0].lower()}.pt" for key in keys}
    together = [keys] if args.parallel else [[key] for key in keys]  # sequential: export each as it finishes
    for _ in range(args.rounds):
        for batch in together:
            planned = {key: train_command(key, folders, minutes=args.minutes, runs=args.runs,
                                          max_steps=args.max_steps, exported=exported[key], lr=args.lr, recipe=recipe)
                       for key in batch}
            run_all({key: command for key, (command, _) in planned.items()}, parallel=args.parallel, logs=args.logs)
            for key, (_, last) in planned.items():
                group, channels = key.split("-")
                out = exported[key]
                digest = export(last, out, training_data=f"open-photo corpus group {group}: {GROUPS[group]} "
                                f"({'grayscale (BT.601)' if channels == 'gray' else 'RGB'}), see checkpoints/CORPUS.csv")
                print(f"wrote {out} (sha256 {digest})")


if __name__ == "__main__":
    main()
