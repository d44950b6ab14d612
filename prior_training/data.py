"""Clean-image data for stage 1: dataset registry, patch sampling, held-out validation images."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI at import otherwise (2 s offline)
import albumentations as A  # noqa: E402
import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from common.errors import InputError
from common.images import center_crop, list_images, read_image, to_grayscale
from prior_training.archives import DATASETS, dataset_images_dir, prepare_archive

DatasetName = Literal["cbsd300", "div2k", "imagenet-val", "waterloo", "folder"]


def load_clean(path: Path, *, channels: int) -> Tensor:
    """Read a clean image as (channels, H, W) float in [0,1]; RGB -> gray uses BT.601 luma."""
    pixels = read_image(path).pixels
    if channels == 1 and pixels.shape[0] == 3:
        return to_grayscale(pixels)
    if channels == 3 and pixels.shape[0] == 1:
        return pixels.expand(3, -1, -1).clone()
    return pixels


class PatchDataset(Dataset):
    """Item ``i``: ``patches_per_image`` random patches of image ``i`` (P, C, p, p) in [0,1].

    Each patch is a random crop followed by one of the 8 flips/rotations (the dihedral group D4);
    images smaller than the patch are reflect-padded first.
    """

    def __init__(self, paths: list[Path], *, channels: int, patch_size: int, patches_per_image: int) -> None:
        self.paths, self.channels, self.patches_per_image = paths, channels, patches_per_image
        self.transform = A.Compose([
            A.PadIfNeeded(min_height=patch_size, min_width=patch_size, border_mode=4),
            A.RandomCrop(height=patch_size, width=patch_size),
            A.D4(p=1.0),
        ])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        image = load_clean(self.paths[index], channels=self.channels).permute(1, 2, 0).numpy()
        patches = [self.transform(image=image)["image"] for _ in range(self.patches_per_image)]
        return torch.from_numpy(np.ascontiguousarray(np.stack(patches))).permute(0, 3, 1, 2)


class CenterCropDataset(Dataset):
    """Held-out images, centre-cropped to at most ``crop`` x ``crop`` (C, h, w) in [0,1]."""

    def __init__(self, paths: list[Path], *, channels: int, crop: int) -> None:
        self.paths, self.channels, self.crop = paths, channels, crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        return center_crop(load_clean(self.paths[index], channels=self.channels), self.crop)


def concat_patches(batch: list[Tensor]) -> Tensor:
    """Collate items of (P, C, p, p) into one (B*P, C, p, p) batch."""
    return torch.cat(batch)


class PatchDataModule(L.LightningDataModule):
    """Patches of clean images for blind Gaussian denoising.

    Args:
        dataset: a public dataset (downloaded into the cache by ``prepare_data``) or ``folder``.
        data_root: the image folder for ``folder``; for the others, an alternative cache directory.
        val_root: held-out images; default: the last ``val_images`` images (sorted) are held out.
        channels: 3 (RGB) or 1 (grayscale, BT.601 luma of RGB images).
        patch_size, patches_per_image, images_per_batch: a batch is images_per_batch x patches_per_image patches.
    """

    def __init__(
        self,
        *,
        dataset: DatasetName = "folder",
        data_root: Path | None = None,
        val_root: Path | None = None,
        channels: int = 3,
        patch_size: int = 64,
        patches_per_image: int = 8,
        images_per_batch: int = 8,
        val_images: int = 4,
        val_crop: int = 256,
        num_workers: int = 2,
    ) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise InputError(f"--data.channels must be 1 or 3, not {channels}")
        self.save_hyperparameters()
        self.train_paths: list[Path] = []
        self.val_paths: list[Path] = []

    def image_folder(self) -> Path:
        """The folder of clean images of the chosen dataset."""
        if self.hparams.dataset == "folder":
            if self.hparams.data_root is None:
                raise InputError("--dataset folder needs --data-root DIR, a folder of clean images")
            return Path(self.hparams.data_root)
        return dataset_images_dir(DATASETS[self.hparams.dataset], root=self.hparams.data_root)

    def prepare_data(self) -> None:
        if self.hparams.dataset != "folder":
            prepare_archive(DATASETS[self.hparams.dataset], root=self.hparams.data_root)

    def setup(self, stage: str) -> None:
        folder = self.image_folder()
        paths = self._images_in(folder)
        if self.hparams.val_root is not None:
            self.train_paths, self.val_paths = paths, self._images_in(Path(self.hparams.val_root))
        else:
            held_out = min(self.hparams.val_images, len(paths) - 1)
            if held_out < 1:
                raise InputError(f"{folder} has only {len(paths)} image; give at least 2, or --data.val_root DIR")
            self.train_paths, self.val_paths = paths[:-held_out], paths[-held_out:]

    @staticmethod
    def _images_in(folder: Path) -> list[Path]:
        if not folder.is_dir():
            raise InputError(f"image folder {folder} does not exist; pass a folder of clean images")
        paths = list_images(folder, recursive=True)
        if not paths:
            raise InputError(f"image folder {folder} holds no PNG/JPEG/TIFF images; add clean images to it")
        return paths

    def _loader(self, dataset: Dataset, *, batch_size: int, shuffle: bool, collate=None) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                          collate_fn=collate, persistent_workers=workers > 0, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        dataset = PatchDataset(self.train_paths, channels=self.hparams.channels, patch_size=self.hparams.patch_size,
                               patches_per_image=self.hparams.patches_per_image)
        return self._loader(dataset, batch_size=self.hparams.images_per_batch, shuffle=True, collate=concat_patches)

    def val_dataloader(self) -> DataLoader:
        dataset = CenterCropDataset(self.val_paths, channels=self.hparams.channels, crop=self.hparams.val_crop)
        return self._loader(dataset, batch_size=1, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
