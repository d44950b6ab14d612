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
from pathlib import Path

GROUPS = {"A": "animals (gcompris)", "B": "outdoor scenes (wallpapers, monuments)", "C": "objects, people, misc"}


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


def train_round(key: str, folders: dict[str, Path], *, minutes: int, runs: Path, max_steps: int,
                exported: Path, lr: float | None = None) -> Path:
    """Resume (or start) training one prior for ``minutes``; return its last checkpoint.

    Without a ``last.ckpt`` (e.g. a fresh checkout) but with an exported prior, training continues
    from the exported weights with a fresh optimiser; the exported step count keeps adding up.
    ``lr`` starts (or resumes) a separate run ``<key>-lr<lr>`` from the exported prior at that
    learning rate (a low-rate phase after the 1e-3 one). Validation, and with it ``last.ckpt``,
    comes every 50 steps, so a round stopped by its time limit loses fewer than 50 steps.
    """
    group, channels = key.split("-")
    name = key if lr is None else f"{key}-lr{lr:g}"
    run_dir = runs / "prior_training" / name
    last = run_dir / "checkpoints" / "last.ckpt"
    command = [sys.executable, "-m", "prior_training", "fit", "--dataset", "folder",
               "--data-root", str(folders[key]), "--data.val_root", str(folders[f"test-{channels}"]),
               "--channels", "1" if channels == "gray" else "3", "--data.patch_size", "48",
               "--data.images_per_batch", "4", "--data.patches_per_image", "4", "--data.val_crop", "128",
               "--data.num_workers", "1", "--trainer.max_steps", str(max_steps),
               "--trainer.val_check_interval", "50",
               "--trainer.max_time", as_max_time(trained_seconds(last) + 60 * minutes),
               "--trainer.logger.init_args.version", name]
    if lr is not None:
        command += ["--model.lr", str(lr)]
    if last.is_file():
        command += ["--ckpt_path", str(last)]
    elif exported.is_file():
        command += ["--model.init_prior", str(exported)]
    subprocess.run(command, check=True)
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--work", type=Path, default=Path("data/prior_groups"))
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=Path("checkpoints"))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--minutes", type=int, default=15)
    parser.add_argument("--max-steps", type=int, default=20000, help="length of the cosine schedule")
    parser.add_argument("--only", nargs="*", default=None, help="e.g. A-rgb B-gray")
    parser.add_argument("--lr", type=float, default=None, help="a separate low-rate phase from the exported priors")
    args = parser.parse_args()
    folders = group_folders(args.corpus, args.work)
    keys = args.only or [f"{g}-{c}" for c in ("rgb", "gray") for g in GROUPS]
    for _ in range(args.rounds):
        for key in keys:
            group, channels = key.split("-")
            out = args.out / f"bfdncnn_{channels}_{group.lower()}.pt"
            last = train_round(key, folders, minutes=args.minutes, runs=args.runs, max_steps=args.max_steps,
                               exported=out, lr=args.lr)
            subprocess.run([sys.executable, "-m", "prior_training", "export", str(last), "--out", str(out),
                            "--training-data", f"open-photo corpus group {group}: {GROUPS[group]} "
                            f"({'grayscale (BT.601)' if channels == 'gray' else 'RGB'}), see checkpoints/CORPUS.csv"],
                           check=True)


if __name__ == "__main__":
    main()
