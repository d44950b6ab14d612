"""Deployable prior files: export, sha256 manifest, verified loading (method.md section 2).

A toolkit prior file is a ``torch.save`` of ``{"format": FORMAT, "state_dict": ..., "meta": ...}``
where ``meta`` holds architecture, channels, depth, features, sigma range (0-255 scale),
training data, steps and validation PSNR. A reference ScoreDVI prior (a plain state dict with
``conv_layers.* / running_sd.* / gammas.*`` keys) loads too. Files listed in a ``MANIFEST.json``
next to them are checked against their recorded sha256 before loading.
"""

from __future__ import annotations

import enum
import hashlib
import importlib.resources
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from common.bfdncnn import BFDnCNN, bfdncnn_from_reference, is_reference_state_dict
from common.errors import InputError
from common.prior_sets import FULL_SET
from common.publish import check_writable, folder_lock, write_atomic
from common.safe_load import load_weights

FORMAT = "scoredvi-prior/1"
MANIFEST_NAME = "MANIFEST.json"
CHECKPOINTS_ENV = "SCOREDVI_CHECKPOINTS"


class PriorFormat(enum.Enum):
    """How to read a prior file: detect, this toolkit's export, or a reference state dict."""

    AUTO = "auto"
    TOOLKIT = "toolkit"
    REFERENCE = "reference"


@dataclass(frozen=True)
class PriorMeta:
    """What a prior file says about itself. ``sigma_range`` is on the 0-255 scale."""

    channels: int
    depth: int = 20
    features: int = 64
    architecture: str = "BFDnCNN"
    sigma_range: tuple[float, float] = (0.0, 100.0)
    training_data: str = "unknown"
    training_noise: str = "unknown"  # the noise-level law and loss weighting of training (prior_training/noise.py)
    steps: int = 0
    val_psnr: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    prior_set: str = FULL_SET  # the shipped set it belongs to (common/prior_sets.py): "full" or "light"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_checkpoint_dir() -> Path:
    """``$SCOREDVI_CHECKPOINTS`` if set, else the folder of the ``checkpoints`` package.

    That package is the repository's ``checkpoints/`` in a source tree or an editable install, and the
    installed package data (priors, MANIFEST.json, CORPUS.csv) in a wheel or non-editable install.
    """
    override = os.environ.get(CHECKPOINTS_ENV)
    if override:
        folder = Path(override)
        if not folder.is_dir():
            state = "is a file" if folder.exists() else "does not exist"
            raise InputError(f"{CHECKPOINTS_ENV}={override} {state}; point it to a folder of priors with a "
                             f"MANIFEST.json, or unset it to use the shipped priors")
        return folder
    try:
        return Path(str(importlib.resources.files("checkpoints")))
    except ModuleNotFoundError:
        raise InputError(f"the shipped priors (package 'checkpoints') are not installed; reinstall scoredvi "
                         f"or set {CHECKPOINTS_ENV} to a folder of priors with a MANIFEST.json") from None


def read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """The ``MANIFEST.json`` entries of ``folder`` keyed by file name ({} when there is none)."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())["files"]
    except (ValueError, KeyError) as err:
        raise InputError(f"{path} is not a valid prior manifest ({err}); restore it from git") from None


def _json_bytes(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON (sorted keys, indented, trailing newline) atomically (:func:`common.publish.write_atomic`)."""
    write_atomic(path, _json_bytes(payload))


def export_prior(model: BFDnCNN, path: Path, meta: PriorMeta, *, manifest: bool = True,
                 protect: Sequence[Path] = ()) -> str:
    """Save ``model`` (eval-mode state, float32, CPU) with ``meta``; record it in the manifest.

    Returns the file's sha256. The write is atomic (:func:`common.publish.write_atomic`); the manifest entry of
    ``path.name`` is replaced when ``manifest`` is true. ``protect`` (the inputs, e.g. the checkpoint read) are
    never written: a ``path`` or manifest that is one of them is refused before anything is written.
    """
    manifest_path = path.parent / MANIFEST_NAME
    check_writable([path, *([manifest_path] if manifest else [])], protect=protect)
    state = {key: value.detach().float().cpu().contiguous() for key, value in model.state_dict().items()}
    payload = {"format": FORMAT, "state_dict": state, "meta": meta.__dict__ | {"sigma_range": list(meta.sigma_range)}}
    write_atomic(path, lambda handle: torch.save(payload, handle), protect=protect)
    digest = sha256_of(path)
    if manifest:
        with folder_lock(path.parent):  # another export into this folder must not drop this entry, nor this one its
            entries = read_manifest(path.parent)
            entries[path.name] = {"sha256": digest, **payload["meta"]}
            write_atomic(manifest_path, _json_bytes({"files": entries}), protect=protect)
    return digest


def update_manifest_entry(path: Path, **fields: Any) -> None:
    """Add or replace metadata ``fields`` of the manifest entry of ``path`` (which must be listed)."""
    with folder_lock(path.parent):
        entries = read_manifest(path.parent)
        if path.name not in entries:
            raise InputError(f"{path.name} is not listed in {path.parent / MANIFEST_NAME}; export it first")
        entries[path.name].update(fields)
        write_json_atomic(path.parent / MANIFEST_NAME, {"files": entries})


def verify_against_manifest(path: Path) -> None:
    """Refuse ``path`` when the manifest beside it records a different sha256."""
    entry = read_manifest(path.parent).get(path.name)
    if entry is not None and sha256_of(path) != entry["sha256"]:
        raise InputError(
            f"{path} does not match the sha256 in {path.parent / MANIFEST_NAME}: the file is corrupt or "
            "was replaced; restore it (git checkout) or export it again"
        )


def _read_payload(path: Path) -> Any:
    return load_weights(path, what="prior file",
                        hint="pass a prior exported by 'python -m prior_training export' or a reference state dict")


def load_prior(path: Path, *, channels: int | None = None, prior_format: PriorFormat = PriorFormat.AUTO) -> tuple[BFDnCNN, PriorMeta]:
    """Load a prior in eval mode with frozen weights; check sha256 and the channel count.

    ``prior_format`` AUTO reads both this toolkit's files and reference ScoreDVI state dicts.
    """
    path = Path(path)
    verify_against_manifest(path)
    payload = _read_payload(path)
    if not isinstance(payload, dict):
        raise InputError(f"prior file {path} holds no state dict; it is not a BF-DnCNN checkpoint")
    is_toolkit = payload.get("format") == FORMAT
    if prior_format is PriorFormat.TOOLKIT and not is_toolkit:
        raise InputError(f"{path} is not a toolkit prior file; export it with 'python -m prior_training export'")
    try:
        if is_toolkit and prior_format is not PriorFormat.REFERENCE:
            raw = dict(payload["meta"])
            meta = PriorMeta(**{**raw, "sigma_range": tuple(raw.get("sigma_range", (0.0, 100.0)))})
            model = BFDnCNN(channels=meta.channels, depth=meta.depth, features=meta.features)
            model.load_state_dict(payload["state_dict"], strict=True)
        else:
            state = payload.get("state_dict", payload)
            if prior_format is PriorFormat.AUTO and not is_reference_state_dict(state):
                raise KeyError("neither a toolkit prior nor the reference key layout")
            model = bfdncnn_from_reference(state)
            meta = PriorMeta(channels=model.channels, depth=model.depth, features=model.features,
                             training_data=f"reference state dict {path.name}")
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        first = str(err).splitlines()[0][:160]
        raise InputError(f"prior file {path} does not hold a BF-DnCNN ({first})") from None
    if channels is not None and model.channels != channels:
        raise InputError(
            f"prior {path} is for {model.channels}-channel images but the image has {channels}; "
            f"pass {'grayscale' if channels == 1 else 'RGB'} priors with --priors"
        )
    model.eval().requires_grad_(False)
    return model, meta


def default_prior_paths(channels: int, *, prior_set: str = FULL_SET, folder: Path | None = None) -> list[Path]:
    """The shipped priors for ``channels`` (1 or 3): the manifest entries of that channel count and of ``prior_set``
    (an entry's ``prior_set``, "full" where it names none), by name; the full set where ``prior_set`` has no entry
    for the channel count."""
    folder = default_checkpoint_dir() if folder is None else folder
    entries = {name: entry for name, entry in read_manifest(folder).items() if entry.get("channels") == channels}
    names = sorted(name for name, entry in entries.items() if entry.get("prior_set", FULL_SET) == prior_set)
    if not names and prior_set != FULL_SET:
        names = sorted(name for name, entry in entries.items() if entry.get("prior_set", FULL_SET) == FULL_SET)
    if not names:
        kind = "grayscale" if channels == 1 else "RGB"
        raise InputError(f"no shipped {kind} priors in {folder}; pass --priors FILE [FILE ...] or train them with "
                         "'python -m prior_training fit' and export them into that folder")
    return [folder / name for name in names]


def load_priors(paths: list[Path], *, channels: int, prior_format: PriorFormat = PriorFormat.AUTO) -> list[BFDnCNN]:
    """Load several priors for ``channels``-channel images (each verified as in :func:`load_prior`)."""
    return [load_prior(path, channels=channels, prior_format=prior_format)[0] for path in paths]


def chosen_prior_paths(paths: Sequence[Path] | None, channels: int, *, prior_set: str = FULL_SET,
                       components: int | None = None) -> list[Path]:
    """The prior files a ``channels``-channel fit uses: the first ``components`` (None: all) of ``paths``, or of the
    shipped ``prior_set`` when ``paths`` is empty (component k uses prior k mod count, so later files would never
    be used)."""
    return list(paths or default_prior_paths(channels, prior_set=prior_set))[:components]


def prior_loader(paths: list[Path] | None, *, prior_format: PriorFormat = PriorFormat.AUTO,
                 prior_set: str = FULL_SET, components: int | None = None) -> Callable[[int], list[BFDnCNN]]:
    """``channels -> priors``: :func:`chosen_prior_paths` for that channel count, each loaded once."""
    loaded: dict[int, list[BFDnCNN]] = {}

    def priors_for(channels: int) -> list[BFDnCNN]:
        if channels not in loaded:
            chosen = chosen_prior_paths(paths, channels, prior_set=prior_set, components=components)
            loaded[channels] = load_priors(chosen, channels=channels, prior_format=prior_format)
        return loaded[channels]

    return priors_for
