"""The one configuration of a stage-2 fit: every default and every range check is here.

:class:`Config` nests :class:`Method` (the inference: steps, components, hyperpriors, restart rule,
noise classes), :class:`Nets` (the variational networks' sizes) and :class:`Runtime` (how and where
it runs). Each leaf field names its command-line option in its metadata (``flag``), so the CLI
(:mod:`dvi.interface.cli`), :meth:`Config.replace` and every error message use one name per setting.
Values are checked in ``__post_init__``; a bad one raises :class:`common.errors.InputError` naming
the option (``--beta0 must be ...``). The presets ``reference`` and ``fast`` are YAML files shipped in
``dvi/presets/`` (:func:`load_preset`), read with ``importlib.resources``.

Units: images are in [0, 1]; ``restart_sigma`` is a standard deviation on that scale; the noise-class
thresholds ``noise_low`` / ``noise_high`` are standard deviations on the 0-255 scale (docs/method.md
section 4). This module imports neither torch nor Lightning (``python -m dvi --help`` stays fast).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from common.errors import InputError
from common.prior_sets import FULL_SET, PRIOR_SETS

AUTO = "auto"
PRESETS = ("reference", "fast")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "64-true", "bf16-true", "16-true")
DEVICES = ("auto", "cpu", "gpu", "cuda")
MAX_SEED = 2**31 - 3  # a retry and a restart each add 1; NumPy and Lightning take seeds below 2**32

Check = Callable[[Any], str | None]  # None when the value is valid, else what it must be


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def whole(low: int, high: int) -> Check:
    """A whole number in [low, high]."""
    def check(value: Any) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return None
        return f"a whole number from {low} to {high}"
    check.kind = int  # type: ignore[attr-defined]
    return check


def real(low: float, high: float, *, above: bool = True, below_high: bool = False) -> Check:
    """A finite number in (low, high] (``above``: strictly above ``low``; ``below_high``: strictly below ``high``)."""
    def check(value: Any) -> str | None:
        if _is_number(value) and math.isfinite(value) and (value > low if above else value >= low) and (
                value < high if below_high else value <= high):
            return None
        if low == 0:
            lower = "positive" if above else "0 or more"
        else:
            lower = f"above {low:g}" if above else f"at least {low:g}"
        upper = f"below {high:g}" if below_high else f"at most {high:g}"
        return f"{lower} (a finite number {upper})"
    check.real, check.kind = True, float  # type: ignore[attr-defined]
    return check


def or_auto(inner: Check) -> Check:
    """``auto`` (stored as None) or a value ``inner`` accepts."""
    def check(value: Any) -> str | None:
        if value is None:
            return None
        problem = inner(value)
        return None if problem is None else f"{problem} or 'auto'"
    check.real, check.kind, check.auto = getattr(inner, "real", False), inner.kind, True  # type: ignore[attr-defined]
    return check


def one_of(choices: tuple[str, ...]) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"one of {', '.join(choices)}"
    check.kind = str  # type: ignore[attr-defined]
    return check


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


boolean.kind = bool  # type: ignore[attr-defined]


def option(default: Any, flag: str, check: Check, help: str) -> Any:  # noqa: A002 - argparse's word
    """A dataclass field that knows its command-line option, its check and its help text."""
    return field(default=default, metadata={"flag": flag, "check": check, "help": help})


def _display(value: Any) -> str:
    return AUTO if value is None else repr(value) if isinstance(value, str) else f"{value}"


class Checked:
    """Validates every :func:`option` field in ``__post_init__``; ``auto`` is stored as None."""

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            if "check" not in item.metadata:
                continue
            value = getattr(self, item.name)
            if value == AUTO and item.metadata["check"](None) is None:
                object.__setattr__(self, item.name, None)
                continue
            problem = item.metadata["check"](value)
            if problem is None and getattr(item.metadata["check"], "real", False) and isinstance(value, int):
                object.__setattr__(self, item.name, float(value))  # YAML/CLI "1" for a real-valued option
            problem = item.metadata["check"](value)
            if problem is not None:
                raise InputError(f"{item.metadata['flag']} must be {problem}, not {_display(value)}")


@dataclass(frozen=True)
class NoiseClasses(Checked):
    """Noise classes from the estimated delta (0-255 scale): low below ``low``, high from ``high`` on;
    the prior weight lambda is 1/gamma, 1, gamma for low / medium / high (paper Eq. 20)."""

    low: float = option(10.0, "--noise-low", real(0.0, 255.0, above=False), "delta below which noise is low (0-255)")
    high: float = option(25.0, "--noise-high", real(0.0, 1e4), "delta from which noise is high (0-255)")
    gamma: float = option(2.0, "--noise-gamma", real(0.0, 1e3), "lambda is 1/gamma, 1, gamma for low/medium/high")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.low < self.high:
            raise InputError(f"--noise-high must be above --noise-low ({self.low:g}), not {self.high:g}")


@dataclass(frozen=True)
class Method(Checked):
    """The variational inference (docs/method.md sections 3-4); defaults are the reference configuration."""

    steps: int = option(400, "--steps", whole(1, 10**7), "Adam steps T")
    components: int = option(3, "--components", whole(1, 64), "mixture components K")
    mc_samples: int = option(5, "--mc-samples", whole(1, 1024), "Monte-Carlo samples M per component and step")
    lr: float = option(1e-3, "--lr", real(0.0, 1.0), "Adam learning rate")
    alpha0: float = option(1.0, "--alpha0", real(0.0, 1e6), "Gamma hyperprior shape on the noise precision")
    beta0: float | None = option(None, "--beta0", or_auto(real(0.0, 1e6)),
                                 "Gamma hyperprior rate; auto: 0.005/0.01/0.02 for low/medium/high noise")
    dirichlet: float = option(1.0, "--dirichlet", real(0.0, 1e6), "Dirichlet concentration d on the mixture weights")
    ema: float = option(0.9, "--ema", real(0.0, 1.0, above=False, below_high=True),
                        "weight of the old average in the output's moving average")
    restart_sigma: float = option(0.05, "--restart-sigma", real(0.0, 1e3, above=False),
                                  "refit once from new weights if the mean posterior std ([0,1] scale) ends above this")
    prior_set: str = option(FULL_SET, "--prior-set", one_of(PRIOR_SETS),
                            "shipped priors used without --priors: full (groups A, B, C) or light (group B alone; "
                            "the full ones where no light prior is shipped for the channel count)")
    noise: NoiseClasses = field(default_factory=NoiseClasses)


@dataclass(frozen=True)
class Nets(Checked):
    """Sizes of the four variational networks (docs/method.md section 3)."""

    unet_width: int = option(64, "--unet-width", whole(1, 1024), "X-net U-Net base width (32: a quarter of the work)")
    unet_depth: int = option(4, "--unet-depth", whole(1, 8), "X-net U-Net downsamplings")
    aux_layers: int = option(5, "--aux-layers", whole(2, 64), "layers of the Phi-, Z- and Omega-net DnCNNs")
    aux_features: int = option(32, "--aux-features", whole(1, 1024), "features of the Phi-, Z- and Omega-net DnCNNs")


@dataclass(frozen=True)
class Runtime(Checked):
    """How and where a fit runs; none of it changes the method (``seed`` picks one of its random runs)."""

    precision: str = option("auto", "--precision", one_of(PRECISIONS),
                            "Lightning precision; auto: bf16-mixed on a GPU or a CPU with native bf16, else 32-true")
    device: str = option("auto", "--device", one_of(DEVICES), "accelerator (auto: a GPU if there is one)")
    seed: int = option(0, "--seed", whole(0, MAX_SEED), "seed of the nets' initialisation and the Monte-Carlo noise")
    batch: int = option(0, "--batch", whole(0, 4096),
                        "images (or tiles) of one size fitted together; 0: 1 on CPU, as many as fit on a GPU")
    tile: int | None = option(None, "--tile", or_auto(whole(0, 2**16)),
                              "fit large images in overlapping tiles of this side (px); auto: largest that fits "
                              "--max-memory; 0: never tile")
    tile_overlap: int = option(32, "--tile-overlap", whole(0, 2**15), "pixels shared by neighbouring tiles")
    max_memory: float | None = option(None, "--max-memory", or_auto(real(0.0, 1e6)),
                                      "GiB a fit may use; auto: 90 percent of the device's free memory")
    log_every: int = option(10, "--log-every", whole(1, 10**7), "log scalars every N steps (each log waits for a GPU)")
    image_every: int = option(50, "--image-every", whole(0, 10**7), "TensorBoard images every N steps (0: none)")
    max_pixels: int | None = option(None, "--max-pixels", or_auto(whole(0, 10**9)),
                                    "refuse an image of more pixels (width x height, read from the file header "
                                    "before decoding); auto: common.images.MAX_PIXELS; 0: no limit")
    channels_last: bool = option(True, "--channels-last", boolean, "run the priors in NHWC memory layout")
    cuda_graphs: bool | None = option(None, "--cuda-graphs", or_auto(boolean),
                                      "record each step as one CUDA graph and replay it (auto: on a CUDA GPU; "
                                      "on a CPU the same step runs eagerly)")
    progress: bool = option(True, "--progress", boolean, "show a progress bar")


@dataclass(frozen=True)
class Config:
    """One stage-2 fit: the method, the nets' sizes, the runtime. ``Config()`` is the reference configuration."""

    method: Method = field(default_factory=Method)
    nets: Nets = field(default_factory=Nets)
    runtime: Runtime = field(default_factory=Runtime)

    @property
    def log_interval(self) -> int:
        """Steps between scalar logs: ``log_every``, or the whole fit when it is shorter (the module computes
        the scalars on the steps the Trainer writes them, so both take this one value)."""
        return min(self.runtime.log_every, self.method.steps)

    def replace(self, **changes: Any) -> Config:
        """A copy with options changed by their flat names (``steps=50``, ``noise_low=8``: the option
        without its ``--``, dashes as underscores); None values are ignored."""
        unknown = sorted(set(changes) - set(OPTIONS))
        if unknown:
            raise InputError(f"unknown setting {unknown[0]!r}; choose from {', '.join(OPTIONS)}")
        nested = to_dict(self)
        for key, value in changes.items():
            if value is not None:
                *parents, leaf = OPTIONS[key].path
                node = nested
                for parent in parents:
                    node = node[parent]
                node[leaf] = value
        return from_dict(nested)

    def flat(self) -> dict[str, Any]:
        """Every option by its flat name (see :meth:`replace`), None for ``auto``."""
        return {key: self.get(key) for key in OPTIONS}

    def get(self, key: str) -> Any:
        node: Any = self
        for part in OPTIONS[key].path:
            node = getattr(node, part)
        return node


@dataclass(frozen=True)
class Option:
    """One leaf of :class:`Config`: where it sits (``path``), its flag, default, check and help."""

    path: tuple[str, ...]
    flag: str
    default: Any
    check: Check
    help: str


def _leaves(cls: type, path: tuple[str, ...] = ()) -> Iterator[Option]:
    for item in dataclasses.fields(cls):
        if "flag" in item.metadata:
            yield Option(path + (item.name,), item.metadata["flag"], item.default, item.metadata["check"],
                         item.metadata["help"])
        else:
            yield from _leaves(item.default_factory, path + (item.name,))  # type: ignore[arg-type, misc]


OPTIONS: dict[str, Option] = {o.flag.removeprefix("--").replace("-", "_"): o for o in _leaves(Config)}


def to_dict(config: Any) -> dict[str, Any]:
    """Nested plain dict of a config (``auto`` values as None), as written to YAML."""
    return dataclasses.asdict(config)


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    if not isinstance(values, Mapping):
        raise InputError(f"configuration section {where or 'top'} must be a mapping, not {values!r}")
    names = {item.name: item for item in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise InputError(f"unknown setting {where + unknown[0]!r}; choose from {', '.join(names)}")
    kwargs = {}
    for key, value in values.items():
        item = names[key]
        kwargs[key] = value if "flag" in item.metadata else _build(item.default_factory, value, f"{where}{key}.")
    return cls(**kwargs)


def from_dict(values: Mapping[str, Any]) -> Config:
    """A :class:`Config` from a nested dict (missing keys take the defaults; ``auto`` allowed where it is)."""
    return _build(Config, values, "")


def preset_values(name: str) -> dict[str, Any]:
    """The nested settings of the shipped preset ``name`` (``dvi/presets/<name>.yaml``), as written there."""
    import yaml  # a jsonargparse dependency; imported here so that the config module stays light

    if name not in PRESETS:
        raise InputError(f"--preset must be one of {', '.join(PRESETS)}, not {name!r}")
    text = resources.files("dvi").joinpath("presets", f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def load_preset(name: str) -> Config:
    """The shipped preset ``name``: the reference configuration with the preset file's values."""
    return from_dict(preset_values(name))
