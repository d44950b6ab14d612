"""Offline tests of the GPU-session helpers: scripts/pack_corpus.py and train_priors' command building."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts import pack_corpus, train_priors

FIELDS = ["file", "source_package", "package_version", "licence", "original_width", "original_height", "factor",
          "width", "height", "split", "channels", "group", "gray_only", "origin"]


def fake_corpus(root: Path) -> dict[str, np.ndarray]:
    """A corpus folder with three photos (train RGB 50x70, train gray 30x20, test RGB 40x40) and its manifest."""
    rng = np.random.default_rng(0)
    photos = {"images/a.png": rng.integers(0, 256, (50, 70, 3), dtype=np.uint8),
              "images/b.png": rng.integers(0, 256, (30, 20), dtype=np.uint8),
              "images/t.png": rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)}
    (root / "images").mkdir(parents=True)
    rows = []
    for (name, pixels), split, group in zip(photos.items(), ("train", "train", "test"), ("A", "A", "")):
        Image.fromarray(pixels).save(root / name)
        height, width = pixels.shape[:2]
        rows.append({"file": name, "source_package": "pkg", "package_version": "1", "licence": "CC0",
                     "original_width": str(width), "original_height": str(height), "factor": "1",
                     "width": str(width), "height": str(height), "split": split,
                     "channels": "3" if pixels.ndim == 3 else "1", "group": group,
                     "gray_only": "0" if pixels.ndim == 3 else "1", "origin": name})
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return photos


def test_pack_writes_exact_centre_crops_and_a_manifest_of_their_sizes(tmp_path: Path) -> None:
    photos = fake_corpus(tmp_path / "corpus")
    rows = pack_corpus.pack(tmp_path / "corpus", tmp_path / "small", train_crop=24, test_crop=32)
    with open(tmp_path / "small" / "manifest.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert written == rows and [row["file"] for row in rows] == list(photos)
    expected = {"images/a.png": (13, 23, 24, 24), "images/b.png": (3, 0, 24, 20), "images/t.png": (4, 4, 32, 32)}
    for row in rows:
        top, left, height, width = expected[row["file"]]
        packed = np.asarray(Image.open(tmp_path / "small" / row["file"]))
        original = photos[row["file"]]
        assert np.array_equal(packed, original[top:top + height, left:left + width])  # lossless, no resampling
        assert (row["height"], row["width"]) == (str(height), str(width))
        assert row["original_width"] == str(original.shape[1])  # provenance kept


def test_packed_corpus_feeds_train_priors_group_folders(tmp_path: Path) -> None:
    fake_corpus(tmp_path / "corpus")
    pack_corpus.pack(tmp_path / "corpus", tmp_path / "small", train_crop=24, test_crop=32)
    folders = train_priors.group_folders(tmp_path / "small", tmp_path / "groups")
    assert sorted(p.name for p in folders["A-rgb"].iterdir()) == ["a.png"]  # gray-only photo left out of RGB
    assert sorted(p.name for p in folders["A-gray"].iterdir()) == ["a.png", "b.png"]
    assert sorted(p.name for p in folders["test-rgb"].iterdir()) == ["t.png"]


@pytest.mark.parametrize("lr", [None, 3e-4])
def test_train_command_carries_the_recipe_and_run_folder(tmp_path: Path, lr: float | None) -> None:
    folders = {"B-gray": tmp_path / "B-gray", "test-gray": tmp_path / "test-gray"}
    exported = tmp_path / "prior.pt"
    exported.write_bytes(b"")
    recipe = train_priors.Recipe(patch_size=64, images_per_batch=8, patches_per_image=6, workers=2, val_every=250,
                                 pipeline="device", scales=(1.0, 0.8), precision="bf16-mixed", quiet=True,
                                 depth=10, features=32)
    command, last = train_priors.train_command("B-gray", folders, minutes=2.5, runs=tmp_path / "runs",
                                               max_steps=2500, exported=exported, lr=lr, recipe=recipe)
    options = dict(zip(command[3::1], command[4::1]))
    name = "B-gray" if lr is None else "B-gray-lr0.0003"
    assert last == tmp_path / "runs" / "prior_training" / name / "checkpoints" / "last.ckpt"
    assert options["--channels"] == "1" and options["--data-root"] == str(folders["B-gray"])
    assert (options["--data.patch_size"], options["--data.images_per_batch"], options["--data.patches_per_image"],
            options["--data.num_workers"], options["--trainer.val_check_interval"]) == ("64", "8", "6", "2", "250")
    assert options["--trainer.max_time"] == "00:00:02:30" and options["--trainer.max_steps"] == "2500"
    assert options["--trainer.logger.init_args.save_dir"] == str(tmp_path / "runs")
    assert options["--trainer.logger.init_args.version"] == name
    assert options["--progress_bar.refresh_rate"] == "0"
    assert (options["--data.pipeline"], options["--data.scales"], options["--precision"]) == (
        "device", "[1.0, 0.8]", "bf16-mixed")
    assert options["--model.init_prior"] == str(exported)  # no last.ckpt yet: start from the exported prior
    assert ("--model.lr" in options) == (lr is not None)
    assert (options["--model.depth"], options["--model.features"]) == ("10", "32")
    default, _ = train_priors.train_command("B-gray", folders, minutes=2.5, runs=tmp_path / "runs", max_steps=2500,
                                            exported=exported)
    assert "--model.depth" not in default and "--model.features" not in default  # stage 1's own defaults


def test_pack_without_a_corpus_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="missing or lists no photos; build the corpus first"):
        pack_corpus.pack(tmp_path / "nowhere", tmp_path / "small", train_crop=24, test_crop=32)
    assert not (tmp_path / "small").exists()


def test_default_recipe_is_the_bfcnn_one() -> None:
    recipe = train_priors.Recipe()
    assert (recipe.patch_size, recipe.images_per_batch * recipe.patches_per_image) == (50, 128)
    assert recipe.scales == (1.0, 0.9, 0.8, 0.7) and recipe.pipeline == "auto"


def test_budget_is_split_over_sequential_runs_rgb_first(tmp_path: Path) -> None:
    keys = ["A-rgb", "B-rgb", "A-gray"]
    assert train_priors.minutes_per_run(minutes=15, budget=None, keys=keys, parallel=False) == 15
    assert train_priors.minutes_per_run(minutes=15, budget=60, keys=keys, parallel=False) == 20
    assert train_priors.minutes_per_run(minutes=15, budget=60, keys=keys, parallel=True) == 60
    assert train_priors.prior_file(tmp_path, "B-gray") == tmp_path / "bfdncnn_gray_b.pt"


def test_gpu_session_script_parses_and_its_smoke_mode_keeps_checkpoints_untouched() -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_session.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    text = script.read_text()
    smoke = text[text.index('if [ "${SMOKE:-0}" = 1 ]; then'):text.index("else")]
    assert "PRIORS_OUT=${PRIORS_OUT:-$WORK/priors}" in smoke  # a CPU smoke run exports outside checkpoints/
