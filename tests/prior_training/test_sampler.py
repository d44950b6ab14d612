"""The device-resident patch sampler: crops inside the images, true D4 transforms, sigma and noise, seeding;
the DataModule's choice of pipeline; a stage-1 fit through the device pipeline that learns."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from common.images import write_image
from prior_training.checkpoints import read_checkpoint
from prior_training.data import PatchDataModule, StepIndices
from prior_training.module import GaussianDenoiser
from prior_training.noise import NoiseRecipe
from prior_training.sampler import BFCNN_SCALES, PatchSampler, apply_d4
from tests.conftest import smooth_image


def random_images(channels: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    shapes = [(40, 57), (33, 33), (70, 41), (21, 90)]  # one side shorter than the patch: padded
    return [torch.randint(0, 256, (channels, h, w), generator=generator, dtype=torch.uint8) for h, w in shapes]


def d4_of(patch: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips/rotations of a square patch, built from rot90 (independent of apply_d4)."""
    return [torch.rot90(base, k, dims=(-2, -1)) for base in (patch, patch.flip(-1)) for k in range(4)]


@pytest.mark.parametrize("channels", [1, 3])
def test_every_patch_is_a_d4_transform_of_a_window_inside_its_image(channels: int) -> None:
    p = 24
    sampler = PatchSampler(random_images(channels), patch_size=p, batch_size=256, scales=BFCNN_SCALES, seed=3)
    assert sampler.images == 4 * len(BFCNN_SCALES)
    batch = sampler.sample(0)
    assert batch.clean.shape == (256, channels, p, p) and batch.clean.dtype == torch.float32
    for b in range(256):
        image = sampler.image(int(batch.image[b]))
        top, left = int(batch.top[b]), int(batch.left[b])
        assert 0 <= top <= image.shape[1] - p and 0 <= left <= image.shape[2] - p  # inside the stored image
        window = image[:, top:top + p, left:left + p].float() / 255.0
        transformed = batch.clean[b]
        assert torch.equal(apply_d4(window, int(batch.transform[b])), transformed)
        assert any(torch.equal(transformed, candidate) for candidate in d4_of(window))  # a true flip/rotation


def test_all_eight_transforms_occur_and_are_the_dihedral_group() -> None:
    patch = torch.arange(25.0).view(1, 5, 5)
    assert sorted(apply_d4(patch, t).flatten().tolist() for t in range(8)) == sorted(
        candidate.flatten().tolist() for candidate in d4_of(patch))  # the 8 are D4, each once
    transforms = PatchSampler(random_images(), patch_size=16, batch_size=400).sample(7).transform
    counts = torch.bincount(transforms, minlength=8)
    assert counts.numel() == 8 and (counts > 20).all()  # 400 draws: about 50 each


def test_windows_are_uniform_over_all_images_windows() -> None:
    """A 16x16 image has 1 window of 16x16, a 16x115 one has 100: about 1 patch in 101 comes from the first."""
    images = [torch.zeros(1, 16, 16, dtype=torch.uint8), torch.full((1, 16, 115), 255, dtype=torch.uint8)]
    noise = NoiseRecipe(sigma_max=0.0, light_fraction=0.0)
    batch = PatchSampler(images, patch_size=16, batch_size=20000, noise=noise).sample(0)
    share = (batch.image == 0).float().mean().item()
    assert 0.5 / 101 < share < 2 / 101
    assert torch.equal(batch.clean.flatten(1).mean(1), (batch.image == 1).float())  # the right pixels
    assert torch.unique(batch.left[batch.image == 1]).numel() == 100  # every window of the wide image is used


def test_sigma_is_uniform_and_the_noise_has_that_deviation_per_patch() -> None:
    uniform = NoiseRecipe(sigma_max=100.0, light_fraction=0.0)  # the BF-CNN law
    sampler = PatchSampler(random_images(), patch_size=32, batch_size=512, noise=uniform, seed=1)
    batch = sampler.sample(5)
    levels = (batch.sigma * 255.0 / 100.0).sort().values  # should be U[0, 1]
    ks = (levels - torch.linspace(0.5 / 512, 1 - 0.5 / 512, 512)).abs().max().item()
    assert levels.min() >= 0 and levels.max() <= 1 and ks < 0.07  # Kolmogorov-Smirnov, 1% level 0.072
    deviation = (batch.noisy - batch.clean).flatten(1).std(1)  # 3 * 32 * 32 samples per patch
    torch.testing.assert_close(deviation, batch.sigma, rtol=0.05, atol=1e-4)
    assert (batch.noisy - batch.clean).flatten(1).mean(1).abs().max() < 0.1 * 100 / 255  # zero mean


def test_same_seed_and_key_give_the_same_batch_and_others_differ() -> None:
    def draw(seed: int, key: int) -> torch.Tensor:
        return PatchSampler(random_images(), patch_size=16, batch_size=32, seed=seed).sample(key).noisy

    assert torch.equal(draw(0, 4), draw(0, 4))
    assert not torch.equal(draw(0, 4), draw(0, 5)) and not torch.equal(draw(0, 4), draw(1, 4))
    sampler = PatchSampler(random_images(), patch_size=16, batch_size=32, seed=0)
    sampler.sample(9)
    assert torch.equal(sampler.sample(4).noisy, draw(0, 4))  # no state carried between draws


def test_channels_last_batches_hold_the_same_values() -> None:
    plain = PatchSampler(random_images(), patch_size=16, batch_size=8).sample(2)
    last = PatchSampler(random_images(), patch_size=16, batch_size=8, channels_last=True).sample(2)
    assert last.clean.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(plain.clean, last.clean) and torch.equal(plain.noisy, last.noisy)


def write_folder(folder: Path, count: int = 6, size: int = 48) -> Path:
    for i in range(count):
        write_image(folder / f"img{i}.png", smooth_image(i, size=size))
    return folder


def test_datamodule_picks_the_pipeline_by_decoded_size(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "clean")
    store = 4 * 3 * 48 * 48 * sum(s * s for s in BFCNN_SCALES)  # 4 training images (2 held out)
    for limit, expected in ((store / 2**20, "device"), (0.9 * store / 2**20, "loader")):
        data = PatchDataModule(data_root=folder, val_images=2, patch_size=16, num_workers=0, scales=BFCNN_SCALES,
                               device_limit_mib=limit)
        data.setup("fit")
        assert data.store_bytes() == int(store) and data.chosen_pipeline() == expected
        loader = data.train_dataloader()
        assert isinstance(loader.dataset, StepIndices) == (expected == "device")
        assert (data.sampler is not None) == (expected == "device")
        first = next(iter(loader))
        assert first.shape == (() if expected == "device" else (32, 3, 16, 16))  # 4 images x 8 patches
    forced = PatchDataModule(data_root=folder, val_images=2, pipeline="loader", num_workers=0)
    forced.setup("fit")
    assert forced.sampler is None and forced.chosen_pipeline() == "loader"


@pytest.mark.parametrize("pipeline", ["device", "loader"])
def test_a_short_fit_improves_validation_psnr_and_its_checkpoint_says_so(tmp_path: Path, pipeline: str) -> None:
    folder = write_folder(tmp_path / "clean", count=8, size=64)
    L.seed_everything(0, verbose=False)
    data = PatchDataModule(data_root=folder, val_images=2, patch_size=24, images_per_batch=4, patches_per_image=4,
                           val_crop=48, num_workers=0, pipeline=pipeline)
    # the BF-CNN law and loss: 60 steps move sigma 25-50 most with them (the light-noise default spends patches near 0)
    model = GaussianDenoiser(depth=5, features=16, lr=3e-3, val_sigmas=(25.0, 50.0), light_fraction=0.0,
                             loss_weighting="mse")
    trainer = L.Trainer(max_steps=60, val_check_interval=60, check_val_every_n_epoch=None, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        num_sanity_val_steps=0, accelerator="cpu")
    start = trainer.validate(model, datamodule=data, verbose=False)[0]["val/psnr"]
    trainer.fit(model, datamodule=data)
    assert (model.patch_sampler is not None) == (pipeline == "device")
    path = tmp_path / "end.ckpt"
    trainer.save_checkpoint(path)
    saved = read_checkpoint(path)
    end = sum(saved["val_psnr"].values()) / len(saved["val_psnr"])
    assert saved["global_step"] == 60 and end > start + 1.0, (start, end)
