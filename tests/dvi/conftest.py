"""A tiny BF-DnCNN prior trained inside the test session on generated images (a few seconds)."""

from pathlib import Path

import pytest
import torch

from common.bfdncnn import BFDnCNN
from common.prior_files import PriorMeta, export_prior
from tests.conftest import smooth_image


def train_tiny_prior(*, channels: int, steps: int = 300, seed: int = 0) -> BFDnCNN:
    """Blind Gaussian denoiser (sigma in [0, 60]/255) on 24x24 patches of smooth synthetic images."""
    torch.manual_seed(seed)
    model = BFDnCNN(channels=channels, depth=5, features=16)
    images = torch.stack([smooth_image(100 + i, channels=channels, size=64) for i in range(16)])
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        idx = torch.randint(0, 16, (8,))
        top, left = torch.randint(0, 40, (2,)).tolist()
        clean = images[idx, :, top:top + 24, left:left + 24]
        noisy = clean + torch.rand(8, 1, 1, 1) * (60 / 255) * torch.randn_like(clean)
        loss = torch.nn.functional.mse_loss(model(noisy), clean)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="session")
def tiny_priors(tmp_path_factory) -> dict[int, Path]:
    """Exported tiny priors for 3 and 1 channels, in a folder with a manifest."""
    folder = tmp_path_factory.mktemp("priors")
    paths = {}
    for channels in (3, 1):
        model = train_tiny_prior(channels=channels)
        paths[channels] = folder / f"tiny_{channels}.pt"
        export_prior(model, paths[channels], PriorMeta(channels=channels, depth=5, features=16, training_data="synthetic"))
    return paths
