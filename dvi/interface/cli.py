"""``python -m dvi``: denoise / evaluate / estimate-noise.

Built with jsonargparse from :mod:`dvi.config` (:mod:`dvi.interface.options`): ``--config FILE``,
``--print_config``, ``--preset NAME``; every fit goes through :mod:`dvi.api`. torch is imported only when
a command runs, so ``--help`` is quick.

Exit status: 0 when every output was written; 2 for bad input or options (one ``error: ...`` line, checked
before any fit where possible: every output path is probed first); 128 + the signal's number when SIGTERM
(143) or SIGINT (130) ends a fit (one ``interrupted by SIGTERM; ...`` line saying what was kept,
:mod:`dvi.interface.interrupts`). ``denoise`` refuses to replace an existing output file unless
``--overwrite`` is given; the files of one image are published together or not at all.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from jsonargparse import ArgumentParser, Namespace

from common.errors import InputError, exit_on_input_error
from common.threads import apply_cpu_threads
from dvi.config import Config
from dvi.interface.inputs import announce_prior_reuse, check_images
from dvi.interface.interrupts import Interrupted, report, signals_raise
from dvi.interface.options import (HelpFormatter, add_fit_options, chosen_preset, command_parser, config_from,
                                   one_line_error)
from dvi.naming import run_name

if TYPE_CHECKING:
    from torch import Tensor

    from dvi.fitting.fit import FitResult

COMMANDS = ("denoise", "evaluate", "estimate-noise")
EXIT_STATUS = ("exit status: 0 done; 2 bad input or option (one 'error:' line, before any fit); "
               "143 SIGTERM, 130 SIGINT (one 'interrupted by ...' line; files are never left half-written)")


OUTPUT_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


def check_outputs(outputs: list[Path], inputs: list[Path], *, overwrite: bool = False) -> None:
    """Before any fit: refuse an output name that cannot be written (wrong suffix, a directory, a read-only
    folder: :func:`common.publish.check_writable`), that is an input file, or that exists already and
    ``overwrite`` is not set."""
    from common.publish import check_writable

    if outputs[0].suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"cannot write {outputs[0]}: use a .png, .tif or .jpg file name for --output")
    for out in outputs:
        for item in inputs:
            if out.resolve() == item.resolve() or (out.exists() and item.exists() and os.path.samefile(out, item)):
                raise InputError(f"refusing to overwrite the input {item} with {out}; choose another --output")
    check_writable(outputs, protect=inputs)
    existing = [out for out in outputs if out.is_file()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more of its files)" if len(existing) > 1 else ""
        raise InputError(f"{existing[0]} exists{more}; pass --overwrite to replace it, or choose another --output")


@dataclass(frozen=True)
class Outputs:
    """The files one denoised image produces, named after ``denoised``."""

    denoised: Path
    components: int = 0
    figure: bool = False  # --figure: <name>_figure.png, the side-by-side picture (dvi.figures)

    @property
    def variance(self) -> Path:
        return self.denoised.with_name(f"{self.denoised.stem}_variance.tif")

    @property
    def uncertainty(self) -> Path:
        return self.denoised.with_name(f"{self.denoised.stem}_uncertainty.png")

    @property
    def picture(self) -> Path:
        return self.denoised.with_name(f"{self.denoised.stem}_figure.png")

    def component(self, kind: str, k: int) -> Path:
        return self.denoised.with_name(f"{self.denoised.stem}_{kind}{k}.png")

    @property
    def all(self) -> list[Path]:
        return [self.denoised, self.variance, self.uncertainty, *([self.picture] if self.figure else []),
                *(self.component(kind, k) for k in range(self.components) for kind in ("mean", "pi"))]


def plan_outputs(args: Namespace, config: Config) -> list[Outputs]:
    """One :class:`Outputs` per --image, checked before any fit (not after minutes of it)."""
    if len(args.image) > 1 and args.output is not None:
        raise InputError("--output names one file; with several --image files use --output-dir")
    if len(args.image) > 1 and args.clean is not None:
        raise InputError("--clean goes with a single --image")
    components = config.method.components if args.save_components else 0
    plans = [Outputs(args.output or args.output_dir / f"{path.stem}_denoised.png", components, args.figure)
             for path in args.image]
    names = [p.denoised.resolve() for p in plans]
    if len(set(names)) < len(names):
        raise InputError("two --image files have the same name, so their outputs would collide; rename one")
    inputs = list(args.image) + ([args.clean] if args.clean is not None else [])
    for plan in plans:
        check_outputs(plan.all, inputs, overwrite=args.overwrite)
    return plans


def write_outputs(plan: Outputs, result: FitResult, *, bit_depth: int, protect: list[Path], noisy: Tensor,
                  clean: Tensor | None = None) -> None:
    """Publish every file of one image together (:class:`common.publish.OutputGroup`): when one cannot
    be written, none of them appears (files they would have replaced are kept). ``noisy`` and ``clean``
    are the figure's panels (``--figure``)."""
    from common.images import write_array, write_image
    from common.publish import OutputGroup

    suffix = plan.denoised.suffix.lower()
    depth = {".png": min(bit_depth, 16), ".tif": bit_depth, ".tiff": bit_depth}.get(suffix, 8)
    tiled = plan.components and not result.component_means.numel()
    with OutputGroup(protect=protect) as group:
        write_image(plan.denoised, result.denoised, bit_depth=depth, group=group)
        write_array(plan.variance, result.variance, group=group)
        std = result.variance.sqrt()
        write_image(plan.uncertainty, std / std.max().clamp_min(1e-12), group=group)
        if plan.figure:
            from dvi.figures import comparison_png, result_panels

            panels = result_panels(noisy, clean=clean, denoised=result.denoised, variance=result.variance)
            group.add(plan.picture, comparison_png(panels, suptitle=plan.denoised.stem), protect=protect)
        for k in range(0 if tiled else plan.components):
            write_image(plan.component("mean", k), result.component_means[k], group=group)
            write_image(plan.component("pi", k), result.component_weights[k], group=group)
    if tiled:
        print(f"note: {plan.denoised} was fitted in tiles; component maps are only written for untiled fits")


def denoise(args: Namespace) -> None:
    """Every image read and checked (:func:`dvi.interface.inputs.check_images`) and every output path probed
    before the first fit, so one bad image of several leaves nothing written."""
    from common.images import read_image
    from dvi.api import denoise_images, pixel_limit

    config = config_from(args)
    plans = plan_outputs(args, config)
    limit = pixel_limit(config)
    images = [read_image(path, max_pixels=limit) for path in args.image]
    clean = read_image(args.clean, max_pixels=limit).pixels if args.clean is not None else None
    if clean is not None and clean.shape != images[0].pixels.shape:
        raise InputError(f"--image is {tuple(images[0].pixels.shape)} (C, H, W) but --clean is "
                         f"{tuple(clean.shape)}; give the matching reference")
    check_images([(path, image.pixels) for path, image in zip(args.image, images)], config, priors=args.priors,
                 prior_format=args.prior_format)
    protect = list(args.image) + ([args.clean] if args.clean is not None else [])
    announce_prior_reuse(args.priors, [image.pixels.shape[0] for image in images], config)
    fits = denoise_images([image.pixels for image in images], config, priors=args.priors,
                          prior_format=args.prior_format, names=[run_name(path.stem) for path in args.image],
                          cleans=[clean] + [None] * (len(images) - 1))
    written = 0
    try:
        for index, result in fits:
            write_outputs(plans[index], result, bit_depth=images[index].bit_depth, protect=protect,
                          noisy=images[index].pixels, clean=clean if index == 0 else None)
            written += 1
            report_written(plans[index], result, clean)
    except Interrupted as err:
        if written:
            err.note = (f"{written} of {len(plans)} images written (each with all its files), "
                        f"nothing of the other {len(plans) - written}")
        raise


def report_written(plan: Outputs, result: FitResult, clean: Tensor | None) -> None:
    from common.metrics import score

    together = f" for {result.batch} images together" if result.batch > 1 else ""
    line = (f"wrote {plan.denoised} ({result.seconds:.1f} s{together}, delta {result.noise.delta:.2f}, "
            f"lambda {result.noise.weight:g}, beta0 {result.beta0:g}, restarts {result.restarts})")
    if clean is not None:
        s = score(result.denoised, clean)
        line += f"; PSNR {s.psnr:.2f} dB, SSIM {s.ssim:.4f}, 8-bit PSNR {s.psnr_8bit:.2f} dB"
    print(line)


def estimate_noise(args: Namespace) -> None:
    from common.images import read_image
    from dvi.api import estimate_noise as estimate
    from dvi.api import pixel_limit

    config = config_from(args)
    pixels = read_image(args.image, max_pixels=pixel_limit(config)).pixels
    check_images([(args.image, pixels)], None)  # the noise-level estimate's size rule, naming the file
    level = estimate(pixels, config=config)
    print(f"delta {level.delta:.2f} (0-255 scale), noise class {level.noise_class.name.lower()}, "
          f"lambda {level.weight:g}, beta0 {level.beta0:g}")


def build_parser(*, preset: str = "reference") -> ArgumentParser:
    """The ``python -m dvi`` parser; the fit options default to the shipped ``preset``'s values."""
    from dvi.interface.evaluate import add_evaluate_arguments

    parser = ArgumentParser(prog="python -m dvi", description="ScoreDVI single-image denoising.", epilog=EXIT_STATUS,
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
    d.add_argument("--figure", action="store_true",
                   help="also write <out>_figure.png: noisy, denoised, uncertainty (and --clean) side by side, "
                        "with a zoomed inset and PSNR/SSIM under each panel")
    d.add_argument("--overwrite", action="store_true",
                   help="replace output files that exist already (without it an existing output, or any of its "
                        "companion files, is refused before the fit, with exit status 2)")
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
    """The command and its options; a bad option is one :class:`InputError` line naming it.

    The preset is resolved from wherever it was given (``--preset`` or a ``--config`` file): the options are
    parsed with the defaults of the preset the command line names, and when the parsed ``preset`` (a config
    file's, say) differs, parsed again with that preset's defaults, so options not given take its values."""
    preset = chosen_preset(argv)
    for _ in range(2):
        parser = build_parser(preset=preset)
        try:
            args = parser.parse_args(argv)
        except Exception as err:  # jsonargparse raises ArgumentError (and TypeError for some bad config files)
            raise one_line_error(str(err), COMMANDS) from None
        command, values = args.command, args[args.command]
        if values.preset == preset:
            break
        preset = values.preset
    return command, values


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Warnings of a command (a dropped alpha channel, a CUDA-graph fallback) as one ``warning: ...`` line on
    stderr each, not Python's two lines of file, line number and source."""
    with warnings.catch_warnings():
        def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,  # noqa: ARG001
                 file: TextIO | None = None, line: str | None = None) -> None:  # noqa: ARG001
            print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)

        warnings.showwarning = show
        yield


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    from dvi.interface.evaluate import evaluate

    command, args = parse(sys.argv[1:] if argv is None else argv)
    config = config_from(args)  # every value checked before any file is read
    apply_cpu_threads()
    if config.runtime.device in ("gpu", "cuda"):
        from common.trainer import check_accelerator

        check_accelerator(config.runtime.device)
    try:
        with signals_raise(), one_line_warnings():
            {"denoise": denoise, "evaluate": evaluate, "estimate-noise": estimate_noise}[command](args)
    except Interrupted as err:  # SIGTERM / SIGINT: one line, status 128 + signal (143 / 130)
        report(err)
