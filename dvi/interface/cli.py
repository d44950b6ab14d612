"""``python -m dvi``: denoise / evaluate / estimate-noise.

Built with jsonargparse from :mod:`dvi.config` (:mod:`dvi.interface.options`): ``--config FILE``,
``--print_config``, ``--preset NAME``; every fit goes through :mod:`dvi.api`. torch is imported only when
a command runs, so ``--help`` is quick.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jsonargparse import ArgumentParser, Namespace

from common.errors import InputError, exit_on_input_error
from dvi.config import Config
from dvi.interface.options import (HelpFormatter, add_fit_options, chosen_preset, command_parser, config_from,
                                   one_line_error)
from dvi.naming import run_name

if TYPE_CHECKING:
    from dvi.fitting.fit import FitResult

COMMANDS = ("denoise", "evaluate", "estimate-noise")


OUTPUT_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


def check_outputs(outputs: list[Path], inputs: list[Path]) -> None:
    """Refuse an output name that cannot be written or would overwrite an input file."""
    if outputs[0].suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"cannot write {outputs[0]}: use a .png, .tif or .jpg file name for --output")
    for out in outputs:
        for item in inputs:
            if out.resolve() == item.resolve() or (out.exists() and item.exists() and os.path.samefile(out, item)):
                raise InputError(f"refusing to overwrite the input {item} with {out}; choose another --output")


@dataclass(frozen=True)
class Outputs:
    """The files one denoised image produces, named after ``denoised``."""

    denoised: Path
    components: int = 0

    @property
    def variance(self) -> Path:
        return self.denoised.with_name(f"{self.denoised.stem}_variance.tif")

    @property
    def uncertainty(self) -> Path:
        return self.denoised.with_name(f"{self.denoised.stem}_uncertainty.png")

    def component(self, kind: str, k: int) -> Path:
        return self.denoised.with_name(f"{self.denoised.stem}_{kind}{k}.png")

    @property
    def all(self) -> list[Path]:
        return [self.denoised, self.variance, self.uncertainty,
                *(self.component(kind, k) for k in range(self.components) for kind in ("mean", "pi"))]


def plan_outputs(args: Namespace, config: Config) -> list[Outputs]:
    """One :class:`Outputs` per --image, checked before any fit (not after minutes of it)."""
    if len(args.image) > 1 and args.output is not None:
        raise InputError("--output names one file; with several --image files use --output-dir")
    if len(args.image) > 1 and args.clean is not None:
        raise InputError("--clean goes with a single --image")
    components = config.method.components if args.save_components else 0
    plans = [Outputs(args.output or args.output_dir / f"{path.stem}_denoised.png", components) for path in args.image]
    names = [p.denoised.resolve() for p in plans]
    if len(set(names)) < len(names):
        raise InputError("two --image files have the same name, so their outputs would collide; rename one")
    inputs = list(args.image) + ([args.clean] if args.clean is not None else [])
    for plan in plans:
        check_outputs(plan.all, inputs)
    return plans


def write_outputs(plan: Outputs, result: FitResult, *, bit_depth: int, protect: list[Path]) -> None:
    from common.images import write_array, write_image

    suffix = plan.denoised.suffix.lower()
    depth = {".png": min(bit_depth, 16), ".tif": bit_depth, ".tiff": bit_depth}.get(suffix, 8)
    write_image(plan.denoised, result.denoised, bit_depth=depth, protect=protect)
    write_array(plan.variance, result.variance, protect=protect)
    std = result.variance.sqrt()
    write_image(plan.uncertainty, std / std.max().clamp_min(1e-12), protect=protect)
    if plan.components and not result.component_means.numel():
        print(f"note: {plan.denoised} was fitted in tiles; component maps are only written for untiled fits")
    elif plan.components:
        for k in range(plan.components):
            write_image(plan.component("mean", k), result.component_means[k], protect=protect)
            write_image(plan.component("pi", k), result.component_weights[k], protect=protect)


def denoise(args: Namespace) -> None:
    from common.images import read_image
    from common.metrics import score
    from dvi.api import denoise_images

    config = config_from(args)
    plans = plan_outputs(args, config)
    images = [read_image(path) for path in args.image]
    clean = read_image(args.clean).pixels if args.clean is not None else None
    if clean is not None and clean.shape != images[0].pixels.shape:
        raise InputError(f"--image is {tuple(images[0].pixels.shape)} (C, H, W) but --clean is "
                         f"{tuple(clean.shape)}; give the matching reference")
    protect = list(args.image) + ([args.clean] if args.clean is not None else [])
    fits = denoise_images([image.pixels for image in images], config, priors=args.priors,
                          prior_format=args.prior_format, names=[run_name(path.stem) for path in args.image],
                          cleans=[clean] + [None] * (len(images) - 1))
    for index, result in fits:
        write_outputs(plans[index], result, bit_depth=images[index].bit_depth, protect=protect)
        together = f" for {result.batch} images together" if result.batch > 1 else ""
        line = (f"wrote {plans[index].denoised} ({result.seconds:.1f} s{together}, delta {result.noise.delta:.2f}, "
                f"lambda {result.noise.weight:g}, beta0 {result.beta0:g}, restarts {result.restarts})")
        if clean is not None:
            s = score(result.denoised, clean)
            line += f"; PSNR {s.psnr:.2f} dB, SSIM {s.ssim:.4f}, 8-bit PSNR {s.psnr_8bit:.2f} dB"
        print(line)


def estimate_noise(args: Namespace) -> None:
    from dvi.api import estimate_noise as estimate

    level = estimate(args.image, config=config_from(args))
    print(f"delta {level.delta:.2f} (0-255 scale), noise class {level.noise_class.name.lower()}, "
          f"lambda {level.weight:g}, beta0 {level.beta0:g}")


def build_parser(*, preset: str = "reference") -> ArgumentParser:
    """The ``python -m dvi`` parser; the fit options default to the shipped ``preset``'s values."""
    from dvi.interface.evaluate import add_evaluate_arguments

    parser = ArgumentParser(prog="python -m dvi", description="ScoreDVI single-image denoising.",
                            exit_on_error=False, formatter_class=HelpFormatter)
    commands = parser.add_subcommands(dest="command", required=True)
    d = command_parser("Denoise images; writes <name>_denoised.png, _variance.tif, _uncertainty.png.")
    d.add_argument("--image", type=Path, nargs="+", required=True,
                   help="the noisy image(s) (PNG/JPEG/TIFF, gray or RGB); same-sized ones are fitted together on a GPU")
    d.add_argument("--output", type=Path, default=None, help="output file for one --image (.png/.tif/.jpg; default: <output-dir>/<name>_denoised.png)")
    d.add_argument("--output-dir", dest="output_dir", type=Path, default=Path("outputs"),
                   help="where <name>_denoised.png and its companions go when --output is not given (default: outputs)")
    d.add_argument("--clean", type=Path, default=None, help="a clean reference: PSNR/SSIM are logged and printed (default: none)")
    d.add_argument("--save-components", dest="save_components", action="store_true",
                   help="also write each component's mean <out>_mean<k>.png and weight map <out>_pi<k>.png (last step)")
    add_fit_options(d, preset=preset)
    commands.add_subcommand("denoise", d, help="denoise one or more images")
    e = command_parser("Denoise noisy/clean pairs and tabulate PSNR/SSIM (resumable).")
    add_evaluate_arguments(e)
    add_fit_options(e, preset=preset)
    commands.add_subcommand("evaluate", e, help="denoise noisy/clean pairs and tabulate PSNR/SSIM")
    n = command_parser("Print the noise level delta, class, lambda and beta0 of an image.")
    n.add_argument("--image", type=Path, required=True)
    add_fit_options(n, preset=preset)
    commands.add_subcommand("estimate-noise", n, help="print the noise level delta and lambda of an image")
    return parser


def parse(argv: list[str]) -> tuple[str, Namespace]:
    """The command and its options; a bad option is one :class:`InputError` line naming it."""
    parser = build_parser(preset=chosen_preset(argv))
    try:
        args = parser.parse_args(argv)
    except Exception as err:  # jsonargparse raises ArgumentError (and TypeError for some bad config files)
        raise one_line_error(str(err), COMMANDS) from None
    return args.command, args[args.command]


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    from dvi.interface.evaluate import evaluate

    command, args = parse(sys.argv[1:] if argv is None else argv)
    config = config_from(args)  # every value checked before any file is read
    if config.runtime.device in ("gpu", "cuda"):
        from common.trainer import check_accelerator

        check_accelerator(config.runtime.device)
    {"denoise": denoise, "evaluate": evaluate, "estimate-noise": estimate_noise}[command](args)
