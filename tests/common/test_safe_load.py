"""load_weights: weights-only loading, an explicit allow-list, one-line errors."""

import collections

import pytest
import torch

from common.errors import InputError
from common.safe_load import load_weights

Point = collections.namedtuple("Point", "x y")


def test_allow_list_admits_only_the_named_class(tmp_path):
    path = tmp_path / "c.ckpt"
    torch.save({"p": Point(1, 2), "w": torch.ones(2)}, path)
    with pytest.raises(InputError, match=r"^cannot read checkpoint .*c.ckpt: it names the Python object .*Point.*; pass a ckpt$"):
        load_weights(path, what="checkpoint", hint="pass a ckpt")
    loaded = load_weights(path, what="checkpoint", safe_globals=[Point])
    assert loaded["p"] == Point(1, 2) and torch.equal(loaded["w"], torch.ones(2))


def test_missing_file_names_what_and_hint(tmp_path):
    with pytest.raises(InputError, match=r"^checkpoint .*nope.ckpt does not exist; run fit first$"):
        load_weights(tmp_path / "nope.ckpt", what="checkpoint", hint="run fit first")
