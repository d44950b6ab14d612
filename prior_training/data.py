"""Clean-image data for stage 1: dataset registry, patch sampling, held-out validation images.

Two training pipelines (``PatchDataModule(pipeline=...)``):

* ``device``: the decoded training images are held as uint8 on the training device by a
  :class:`~prior_training.sampler.PatchSampler`; the DataLoader yields only step indices and the
  LightningModule draws each batch (crops, D4, sigma, noise) on its device (no workers, no decode);
* ``loader``: albumentations crops from PNGs decoded per item in DataLoader workers, for datasets whose
  decoded size does not fit (``auto`` picks ``device`` when the decoded store is at most ``device_limit_mib``).
"""

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
from PIL import Image

from common.images import list_images, read_image
from common.pixels import center_crop, to_grayscale
from prior_training.archives import DATASETS, dataset_images_dir, prepare_archive
from prior_training.sampler import PatchSampler, decoded_bytes, to_uint8

DatasetName = Literal["cbsd300", "div2k", "imagenet-val", "waterloo", "folder"]
Pipeline = Literal["auto", "device", "loader"]


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


class StepIndices(Dataset):
    """Items ``0 .. length-1`` as 0-d int64 tensors: what the device pipeline's DataLoader yields (the
    batch itself is drawn on the device by the LightningModule from the :class:`PatchSampler`)."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Tensor:
        return torch.tensor(index, dtype=torch.int64)


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file's header (no decode); an unreadable header is an InputError."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception as err:  # PIL raises many types for damaged files
        raise InputError(f"cannot read the image header of {path} ({type(err).__name__}); "
                         "replace or remove the file") from None
    return height, width


class PatchDataModule(L.LightningDataModule):
    """Patches of clean images for blind Gaussian denoising.

    Args:
        dataset: a public dataset (downloaded into the cache by ``prepare_data``) or ``folder``.
        data_root: the image folder for ``folder``; for the others, an alternative cache directory.
        val_root: held-out images; default: the last ``val_images`` images (sorted) are held out.
        channels: 3 (RGB) or 1 (grayscale, BT.601 luma of RGB images).
        patch_size, patches_per_image, images_per_batch: a batch is images_per_batch x patches_per_image patches
            (the device pipeline draws that many patches independently, each from any image).
        pipeline: ``device``, ``loader`` or ``auto`` (device when the decoded uint8 store, all scales
            included, is at most ``device_limit_mib`` MiB; sizes are read from the image headers).
        scales: rescaled copies of each training image the device pipeline stores (BF-CNN: 1, 0.9, 0.8, 0.7).
        seed: seed of the device pipeline's batches (batch of step ``k`` = f(images, seed, k)). Their noise
            levels follow the LightningModule's noise recipe (``--model.light_fraction`` etc.), set at fit start.
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
        pipeline: Pipeline = "auto",
        device_limit_mib: float = 2048.0,
        scales: tuple[float, ...] = (1.0,),
        seed: int = 0,
    ) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise InputError(f"--data.channels must be 1 or 3, not {channels}")
        if not scales or not all(0.0 < scale <= 1.0 for scale in scales):
            raise InputError(f"--data.scales must be numbers in (0, 1], not {list(scales)}")
        self.save_hyperparameters()
        self.train_paths: list[Path] = []
        self.val_paths: list[Path] = []
        self.sampler: PatchSampler | None = None  # built by setup("fit") on the device pipeline

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
        if stage == "fit" and self.chosen_pipeline() == "device" and self.sampler is None:
            self.sampler = self.build_sampler()

    @property
    def batch_size(self) -> int:
        """Patches per training step."""
        return self.hparams.images_per_batch * self.hparams.patches_per_image

    def store_bytes(self) -> int:
        """Bytes the device pipeline's uint8 store of the training images would take (from headers)."""
        sizes = [image_size(path) for path in self.train_paths]
        return decoded_bytes(sizes, channels=self.hparams.channels, scales=self.hparams.scales)

    def chosen_pipeline(self) -> Literal["device", "loader"]:
        """``pipeline``, with ``auto`` resolved by :meth:`store_bytes` against ``device_limit_mib``."""
        if self.hparams.pipeline != "auto":
            return self.hparams.pipeline
        return "device" if self.store_bytes() <= self.hparams.device_limit_mib * 2**20 else "loader"

    def build_sampler(self) -> PatchSampler:
        """Decode the training images once into a :class:`PatchSampler` on the CPU (the LightningModule
        moves it to its device at fit start)."""
        images = [to_uint8(load_clean(path, channels=self.hparams.channels)) for path in self.train_paths]
        return PatchSampler(images, patch_size=self.hparams.patch_size, batch_size=self.batch_size,
                            scales=self.hparams.scales, seed=self.hparams.seed)

    def steps_per_epoch(self) -> int:
        """Device pipeline: an epoch is as many patch pixels as the training images hold (at least 1 step)."""
        pixels = int((self.sampler.height * self.sampler.width).sum()) if self.sampler is not None else 0
        return max(1, pixels // (self.batch_size * self.hparams.patch_size**2))

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
        if self.sampler is not None:  # device pipeline: the module draws the batch of each step index
            return DataLoader(StepIndices(self.steps_per_epoch()), batch_size=None, shuffle=False, num_workers=0)
        dataset = PatchDataset(self.train_paths, channels=self.hparams.channels, patch_size=self.hparams.patch_size,
                               patches_per_image=self.hparams.patches_per_image)
        return self._loader(dataset, batch_size=self.hparams.images_per_batch, shuffle=True, collate=concat_patches)

    def val_dataloader(self) -> DataLoader:
        dataset = CenterCropDataset(self.val_paths, channels=self.hparams.channels, crop=self.hparams.val_crop)
        return self._loader(dataset, batch_size=1, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
