"""The priors shipped in checkpoints/: manifest integrity, loading, bias-free, +6 dB at sigma 25 on a held-out photo."""

import json

import pytest
import torch
from skimage import data

from common.pixels import to_grayscale
from common.prior_files import (
    MANIFEST_NAME,
    default_checkpoint_dir,
    default_prior_paths,
    load_prior,
    sha256_of,
)


def held_out_photo(channels: int) -> torch.Tensor:
    """A 128x128 crop (face and hair) of scikit-image's astronaut, a photo held out from prior training."""
    rgb = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[:, 100:228, 160:288].float() / 255
    return (rgb if channels == 3 else to_grayscale(rgb)).double()

FOLDER = default_checkpoint_dir()
ENTRIES = json.loads((FOLDER / MANIFEST_NAME).read_text())["files"]


def test_manifest_lists_exactly_the_shipped_files_with_their_sha256():
    assert set(ENTRIES) == {path.name for path in FOLDER.glob("*.pt")}
    for name, entry in ENTRIES.items():
        assert sha256_of(FOLDER / name) == entry["sha256"], name
        assert entry["architecture"] == "BFDnCNN" and (entry["depth"], entry["features"]) == (10, 32), name
        assert entry["sigma_range"] == [0.0, 100.0] and entry["steps"] > 0 and entry["training_data"]


@pytest.mark.parametrize("channels", [3, 1])
def test_three_full_priors_and_one_light_prior_per_channel_count(channels):
    paths = default_prior_paths(channels)
    assert len(paths) == 3
    assert all(ENTRIES[p.name]["channels"] == channels for p in paths)
    kind = "rgb" if channels == 3 else "gray"
    assert [p.name for p in paths] == [f"bfdncnn_{kind}_{group}.pt" for group in "abc"]
    light = default_prior_paths(channels, prior_set="light")
    assert [p.name for p in light] == [f"bfdncnn_{kind}_light.pt"]
    same = [load_prior(path)[0].state_dict() for path in (FOLDER / f"bfdncnn_{kind}_b.pt", light[0])]
    assert all(torch.equal(same[0][key], same[1][key]) for key in same[0])  # the light prior is the full set's B


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_shipped_prior_is_bias_free_and_denoises(name):
    model, meta = load_prior(FOLDER / name)
    model = model.double()
    torch.manual_seed(0)
    y = torch.rand(1, meta.channels, 32, 32, dtype=torch.float64)
    for a in (0.3, 4.0):
        torch.testing.assert_close(model(a * y), a * model(y), rtol=1e-9, atol=1e-11)
    clean = held_out_photo(meta.channels)[None]
    noisy = clean + 25 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        gain = 10 * torch.log10(((noisy - clean).square().mean()) / ((model(noisy).clamp(0, 1) - clean).square().mean()))
    assert gain > 6.0, f"{name}: {gain:.2f} dB"
