"""BF-DnCNN: bias-free homogeneity, BN folding, reference-format loading."""

import pytest
import torch

from common.bfdncnn import BFDnCNN, bfdncnn_from_reference, reference_key_map


def randomised(model: BFDnCNN) -> BFDnCNN:
    """Give the norms non-trivial statistics so the properties are tested for real."""
    with torch.no_grad():
        for norm in model.norms:
            norm.running_sd.uniform_(0.5, 2.0)
            norm.gamma.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("channels", [1, 3])
def test_eval_mode_is_positively_homogeneous(channels):
    torch.manual_seed(0)
    model = randomised(BFDnCNN(channels=channels, depth=6, features=16)).double().eval()
    y = torch.rand(2, channels, 20, 24, dtype=torch.float64)
    for a in (0.1, 0.5, 3.0, 17.0):
        torch.testing.assert_close(model(a * y), a * model(y), rtol=1e-10, atol=1e-12)
    # a bias anywhere (or mean subtraction) breaks the property: the test notices
    model.conv_layers[1] = torch.nn.Conv2d(16, 16, 3, padding=1, bias=True).double()
    assert not torch.allclose(model(3.0 * y), 3.0 * model(y), rtol=1e-6, atol=1e-8)


def test_training_mode_norm_uses_batch_std_and_updates_running_sd():
    torch.manual_seed(0)
    model = BFDnCNN(channels=3, depth=4, features=8).train()
    before = model.norms[0].running_sd.clone()
    model(torch.rand(4, 3, 16, 16) * 5)
    assert not torch.allclose(model.norms[0].running_sd, before)
    # in training the output of a norm has per-channel std gamma (batch statistics, no mean removed)
    norm = model.norms[0]
    with torch.no_grad():
        norm.gamma.fill_(2.0)
    x = torch.randn(8, 8, 10, 10) * 3 + 1
    out = norm(x)
    torch.testing.assert_close(out.var(dim=(0, 2, 3), unbiased=False).sqrt(), torch.full((8,), 2.0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)) / out.std(dim=(0, 2, 3)), x.mean(dim=(0, 2, 3)) / x.std(dim=(0, 2, 3)))


def test_folded_network_matches_eval_network():
    torch.manual_seed(1)
    model = randomised(BFDnCNN(channels=3, depth=7, features=12)).double().eval()
    y = torch.rand(3, 3, 17, 19, dtype=torch.float64)
    residual = model.folded().double()(y)
    torch.testing.assert_close(y - residual, model(y))


def test_reference_state_dict_loads_with_documented_key_layout():
    torch.manual_seed(2)
    depth, features = 20, 64
    state = {f"conv_layers.{i}.weight": torch.randn(features if i < depth - 1 else 3, 3 if i == 0 else features, 3, 3)
             for i in range(depth)}
    for i in range(depth - 2):
        state[f"running_sd.{i}"] = torch.rand(1, features, 1, 1) + 0.5
        state[f"gammas.{i}"] = torch.rand(1, features, 1, 1) + 0.5
    model = bfdncnn_from_reference(state).eval()
    assert (model.channels, model.depth, model.features) == (3, 20, 64)
    assert set(reference_key_map(depth)) == set(state)
    torch.testing.assert_close(model.norms[4].running_sd, state["running_sd.4"])
    torch.testing.assert_close(model.norms[17].gamma, state["gammas.17"])
    torch.testing.assert_close(model.conv_layers[19].weight, state["conv_layers.19.weight"])
    with pytest.raises(KeyError):
        bfdncnn_from_reference({**state, "extra.weight": torch.zeros(1)})


@pytest.mark.parametrize(("options", "word"), [({"channels": 2}, "channels"), ({"depth": 2}, "depth"),
                                               ({"features": 0}, "features")])
def test_impossible_architectures_are_refused_by_name(options, word):
    with pytest.raises(ValueError, match=f"^{word} must"):
        BFDnCNN(**options)
