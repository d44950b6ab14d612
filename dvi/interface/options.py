"""The fit options of ``python -m dvi``, generated from :mod:`dvi.config`, and parse errors as one line.

Every :data:`dvi.config.OPTIONS` entry becomes one option (``--steps``), stored at its place in the
configuration (``method.steps``), so ``--config FILE`` / ``--print_config`` read and write the nested
YAML of :class:`dvi.config.Config`. The defaults shown and used are those of the chosen ``--preset``.
No torch here: ``--help`` answers without loading it.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter, Namespace

from common.errors import InputError
from dvi.config import AUTO, OPTIONS, PRESETS, Config, Option, from_dict, load_preset

PRIOR_FORMATS = ("auto", "toolkit", "reference")  # common.prior_files.PriorFormat's values (a test checks)
SECTIONS = ("method", "nets", "runtime")


class HelpFormatter(DefaultHelpFormatter):
    """Each option's help as written (it names its default itself), without jsonargparse's type suffix."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help or ""


def command_parser(description: str) -> ArgumentParser:
    """A subcommand's parser: errors are raised (and made one line by the caller), help as written."""
    return ArgumentParser(description=description, exit_on_error=False, formatter_class=HelpFormatter)


def _parser_type(item: Option) -> Callable[[Any], Any]:
    """Parses a command-line string (or a YAML value) for ``item``; the range is checked by the config."""
    kind, auto = item.check.kind, getattr(item.check, "auto", False)  # type: ignore[attr-defined]
    expected = {int: "a whole number", float: "a number", str: "a word", bool: "true or false"}[kind]
    if auto:
        expected = f"'auto' or {'a positive number' if kind is float else expected}"

    def parse(value: Any) -> Any:
        if value is None or (auto and value == AUTO):
            return AUTO
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "false", "1", "0", "yes", "no"):
                return str(value).lower() in ("true", "1", "yes")
        elif kind is str:
            return str(value)
        else:
            try:
                return kind(value) if kind is float or not isinstance(value, float) else _whole(value)
            except (TypeError, ValueError):
                pass
        # the option named here too: a config file's bad value reaches the user without jsonargparse's key
        raise argparse.ArgumentTypeError(f"{item.flag} (config key {item.path[-1]}) must be {expected}, not {value!r}")

    parse.__name__ = item.flag.removeprefix("--")
    return parse


def _whole(value: float) -> int:
    if not value.is_integer():
        raise ValueError(value)
    return int(value)


def _shown(value: Any) -> Any:
    return AUTO if value is None else value


def add_fit_options(parser: ArgumentParser, *, preset: str) -> None:
    """``--config``, ``--preset``, the prior files and every configuration option, defaulting to ``preset``'s."""
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of options (as --print_config writes)")
    parser.add_argument("--preset", choices=PRESETS, default=preset,
                        help="the shipped configuration the other options start from: reference (the published "
                             "one) or fast (for CPUs); dvi/presets/<name>.yaml (default: reference)")
    parser.add_argument("--priors", type=Path, nargs="+", default=None,
                        help="prior files (default: the shipped ones for the image's channel count)")
    parser.add_argument("--prior-format", dest="prior_format", choices=PRIOR_FORMATS, default="auto",
                        help="'reference' reads ScoreDVI state dicts (conv_layers/running_sd/gammas); auto detects "
                             "(default: auto)")
    defaults = load_preset(preset)
    for key, item in OPTIONS.items():
        default = _shown(defaults.get(key))
        parser.add_argument(item.flag, dest=".".join(item.path), type=_parser_type(item), default=default,
                            metavar=item.flag.removeprefix("--").upper().replace("-", "_"),
                            help=f"{item.help} (default: {default})".replace("%", "%%"))


def chosen_preset(argv: Sequence[str]) -> str:
    """The ``--preset`` of an argument list (the last one given), or ``reference``; checked when parsed."""
    preset = "reference"
    for index, arg in enumerate(argv):
        if arg == "--preset" and index + 1 < len(argv):
            preset = argv[index + 1]
        elif arg.startswith("--preset="):
            preset = arg.split("=", 1)[1]
    return preset if preset in PRESETS else "reference"


def config_from(args: Namespace) -> Config:
    """The :class:`Config` of parsed options (validated: a bad value raises InputError naming its option)."""
    values = args.as_dict() if hasattr(args, "as_dict") else dict(args)
    return from_dict({section: values[section] for section in SECTIONS if section in values})


def _flag_of(dest: str, flags: dict[str, str]) -> str:
    return flags.get(dest, "--" + dest.rsplit(".", 1)[-1].replace("_", "-"))


def one_line_error(message: str, commands: Sequence[str]) -> InputError:
    """jsonargparse's error text as one InputError line naming the option as typed (``--steps``)."""
    flags = {".".join(item.path): item.flag for item in OPTIONS.values()}
    text = " ".join(str(message).split())
    text = re.sub(rf"\b(?:{'|'.join(map(re.escape, commands))})\.", "", text)  # "denoise.image" -> "image"
    found = re.match(r'Parser key "([^"]+)": (.*)', text)
    if found:
        text = f"{_flag_of(found.group(1), flags)} {found.group(2)}"
    found = re.match(r"argument (--?[\w.-]+)(?:/[\w.-]+)?: (.*)", text)
    if found:
        text = f"{found.group(1)} {found.group(2)}"
    text = re.sub(r"^(--?[\w.-]+) (?:.*?: )?\1 \(config key [\w.-]+\) ", r"\1 ", text)  # named once on the command line
    found = re.search(r"(--?[\w.-]+ \(config key [\w.-]+\) must be .*)", text)
    if found:  # a config file's value: only the named message, not jsonargparse's wrapping
        text = found.group(1)
    text = re.sub(r"required: ([\w.]+(?:, [\w.]+)*)",
                  lambda m: "required: " + ", ".join(_flag_of(d, flags) for d in m.group(1).split(", ")), text)
    return InputError(text)
