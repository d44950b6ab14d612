"""Prior files: export/load round trip, sha256 manifest, reference format, bad files."""

import json

import pytest
import torch

from common.bfdncnn import BFDnCNN
from common.errors import InputError
from common.prior_files import (
    MANIFEST_NAME,
    PriorFormat,
    PriorMeta,
    default_prior_paths,
    export_prior,
    load_prior,
    prior_loader,
    read_manifest,
    write_json_atomic,
    sha256_of,
)


def tiny(channels=3):
    torch.manual_seed(0)
    return BFDnCNN(channels=channels, depth=4, features=8).eval()


def test_export_then_load_round_trips_weights_and_meta(tmp_path):
    model = tiny()
    path = tmp_path / "p.pt"
    digest = export_prior(model, path, PriorMeta(channels=3, depth=4, features=8, training_data="unit", steps=7))
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())["files"]
    assert manifest["p.pt"]["sha256"] == digest == sha256_of(path)
    loaded, meta = load_prior(path, channels=3)
    assert (meta.steps, meta.training_data, meta.depth) == (7, "unit", 4)
    y = torch.rand(1, 3, 12, 12)
    torch.testing.assert_close(loaded(y), model(y))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_default_priors_are_the_chosen_set_of_the_channel_count_with_the_full_set_as_fallback(tmp_path):
    for name, channels, prior_set in (("b.pt", 3, "full"), ("a.pt", 3, "full"), ("l.pt", 3, "light"),
                                      ("g.pt", 1, "full")):
        export_prior(tiny(channels), tmp_path / name, PriorMeta(channels=channels, depth=4, features=8,
                                                                prior_set=prior_set))
    entries = read_manifest(tmp_path)
    del entries["b.pt"]["prior_set"]  # an entry written before sets existed is of the full set
    write_json_atomic(tmp_path / MANIFEST_NAME, {"files": entries})
    assert default_prior_paths(3, folder=tmp_path) == [tmp_path / "a.pt", tmp_path / "b.pt"]
    assert default_prior_paths(3, prior_set="light", folder=tmp_path) == [tmp_path / "l.pt"]
    assert default_prior_paths(1, prior_set="light", folder=tmp_path) == [tmp_path / "g.pt"]  # no light gray prior
    assert load_prior(tmp_path / "l.pt")[1].prior_set == "light"
    assert len(prior_loader([tmp_path / "a.pt", tmp_path / "b.pt"], components=1)(3)) == 1  # only the first K files


def test_sha256_mismatch_is_refused(tmp_path):
    path = tmp_path / "p.pt"
    export_prior(tiny(), path, PriorMeta(channels=3, depth=4, features=8))
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(InputError, match="sha256"):
        load_prior(path)


def test_wrong_channel_count_and_corrupt_and_missing_files(tmp_path):
    path = tmp_path / "gray.pt"
    export_prior(tiny(1), path, PriorMeta(channels=1, depth=4, features=8), manifest=False)
    with pytest.raises(InputError, match="1-channel"):
        load_prior(path, channels=3)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="corrupt"):
        load_prior(junk)
    with pytest.raises(InputError, match="does not exist"):
        load_prior(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(InputError, match="BF-DnCNN"):
        load_prior(other)


def test_reference_format_file_loads_automatically_and_explicitly(tmp_path):
    model = tiny()
    state = {f"conv_layers.{i}.weight": model.conv_layers[i].weight for i in range(4)}
    for i in range(2):
        state[f"running_sd.{i}"] = model.norms[i].running_sd + i
        state[f"gammas.{i}"] = model.norms[i].gamma * 2
    path = tmp_path / "ref.pth"
    torch.save(state, path)
    for fmt in (PriorFormat.AUTO, PriorFormat.REFERENCE):
        loaded, meta = load_prior(path, prior_format=fmt)
        torch.testing.assert_close(loaded.norms[1].running_sd, state["running_sd.1"])
        assert meta.channels == 3
    with pytest.raises(InputError, match="not a toolkit prior"):
        load_prior(path, prior_format=PriorFormat.TOOLKIT)


class _RunsShell:
    """Pickles as a call of os.system: loading it without weights_only would run the command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_crafted_pickle_prior_runs_nothing_and_gives_one_line(tmp_path, legacy):
    import pickle

    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    payload = {"format": "scoredvi-prior/1", "meta": _RunsShell(f"touch {marker}")}
    if legacy:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)
    with pytest.raises(InputError) as caught:
        load_prior(path)
    message = str(caught.value)
    assert not marker.exists()
    assert "\n" not in message and str(path) in message
    assert "system" in message and "could run code" in message
    assert "torch.load" not in message and "prior_training export" in message


def test_damaged_prior_message_is_one_whole_line(tmp_path):
    good = tmp_path / "p.pt"
    export_prior(tiny(), good, PriorMeta(channels=3, depth=4, features=8), manifest=False)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:300])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path, expected in ((cut, "corrupt, truncated"), (empty, "empty (0 bytes)")):
        with pytest.raises(InputError) as caught:
            load_prior(path)
        message = str(caught.value)
        assert expected in message and str(path) in message and "\n" not in message
        assert "weights_only" not in message and message.endswith("or a reference state dict")


def test_an_export_waits_for_the_manifest_of_its_folder_so_concurrent_exports_keep_every_entry(tmp_path):
    """Two trainings exporting into one folder at once lost one MANIFEST.json entry (read-modify-write race):
    while the folder is locked (as by another export), an export does not touch the manifest."""
    import threading
    import time

    from common.publish import folder_lock

    meta = PriorMeta(channels=3, depth=4, features=8, training_data="unit")
    export_prior(tiny(), tmp_path / "a.pt", meta)
    with folder_lock(tmp_path):
        worker = threading.Thread(target=export_prior, args=(tiny(), tmp_path / "b.pt", meta))
        worker.start()
        time.sleep(0.5)
        assert worker.is_alive()
        assert list(json.loads((tmp_path / MANIFEST_NAME).read_text())["files"]) == ["a.pt"]
    worker.join(timeout=30)
    assert sorted(json.loads((tmp_path / MANIFEST_NAME).read_text())["files"]) == ["a.pt", "b.pt"]
    assert list(tmp_path.iterdir()) and not [p for p in tmp_path.iterdir() if "lock" in p.name]  # no lock file left
