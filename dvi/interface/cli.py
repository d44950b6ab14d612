"""``python -m dvi``: denoise / evaluate / estimate-noise."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError, exit_on_input_error
from common.images import read_image, write_array, write_image
from common.metrics import score
from common.prior_files import PriorFormat, prior_loader
from dvi.fitting.fit import FAST, FitResult, FitSettings, Preset, settings_with
from dvi.fitting.large import Budget, fit_many
from dvi.method.noise_level import analyse_noise


def beta0_value(text: str) -> float | None:
    """``auto`` -> None (chosen from the noise class), else a positive float."""
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--beta0 must be 'auto' or a positive number, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--beta0 must be positive, not {value}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def tile_value(text: str) -> int | None:
    """``auto`` -> None (largest tile the memory allows), else a side in px (0: never tile)."""
    return None if text == "auto" else nonnegative_int(text)


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def add_fit_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by denoise and evaluate. Unset options take the --preset's value."""
    parser.add_argument("--preset", choices=[p.value for p in Preset], default=Preset.REFERENCE.value,
                        help="reference: the published configuration (400 steps, K=3, M=5); fast: for CPUs "
                             f"({FAST.steps} steps, M={FAST.mc_samples}, U-Net width {FAST.unet_base})")
    parser.add_argument("--steps", type=positive_int, default=None, help="Adam steps T (reference 400)")
    parser.add_argument("--components", type=positive_int, default=None, help="mixture components K (reference 3)")
    parser.add_argument("--mc-samples", type=positive_int, default=None, help="Monte-Carlo samples M (reference 5)")
    parser.add_argument("--priors", type=Path, nargs="+", default=None,
                        help="prior files (default: the shipped ones for the image's channel count)")
    parser.add_argument("--prior-format", choices=[f.value for f in PriorFormat], default="auto",
                        help="'reference' reads ScoreDVI state dicts (conv_layers/running_sd/gammas); auto detects")
    parser.add_argument("--beta0", type=beta0_value, default=None, metavar="auto|VALUE",
                        help="Gamma hyperprior rate; auto: 0.005/0.01/0.02 for low/medium/high noise")
    parser.add_argument("--alpha0", type=float, default=None)
    parser.add_argument("--restart-sigma", type=positive_float, default=None,
                        help="refit once from new weights if the mean posterior std ends above this (reference 0.05)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--lr", type=positive_float, default=None, help="Adam learning rate (reference 1e-3)")
    parser.add_argument("--unet-width", type=positive_int, default=None,
                        help="X-net U-Net base width (reference 64; 32 has a quarter of the work)")
    parser.add_argument("--precision", default="auto", help="auto, 32-true, bf16-mixed, 16-mixed, 64-true")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu", "cuda"], help="accelerator")
    parser.add_argument("--log-every", type=positive_int, default=None,
                        help="log scalars every N steps (default 10; each log waits for the GPU)")
    parser.add_argument("--batch", type=nonnegative_int, default=0,
                        help="images (or tiles) of one size fitted together; 0: 1 on CPU, as many as fit on a GPU")
    parser.add_argument("--tile", type=tile_value, default=None, metavar="auto|PX",
                        help="fit large images in overlapping tiles of this side; auto: largest that fits "
                             "--max-memory; 0: never tile")
    parser.add_argument("--tile-overlap", type=nonnegative_int, default=32, help="pixels shared by neighbouring tiles")
    parser.add_argument("--max-memory", type=positive_float, default=None, metavar="GB",
                        help="memory a fit may use (default: 90%% of the device's free memory)")


def settings_from(args: argparse.Namespace) -> FitSettings:
    return settings_with(Preset(args.preset).settings, steps=args.steps, components=args.components,
                         mc_samples=args.mc_samples, beta0=args.beta0, alpha0=args.alpha0, seed=args.seed,
                         precision=args.precision, accelerator=args.device, restart_sigma=args.restart_sigma,
                         log_every=args.log_every, lr=args.lr, unet_base=args.unet_width)


def budget_from(args: argparse.Namespace) -> Budget:
    return Budget(tile=args.tile, overlap=args.tile_overlap, batch=args.batch, memory_gb=args.max_memory)


def run_name(stem: str) -> str:
    """TensorBoard run folder ``runs/dvi/<stem>-<YYYYmmdd-HHMMSS>-<ms>``: one per fit, never mixed."""
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() // 1_000_000 % 1000:03d}"


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


def plan_outputs(args: argparse.Namespace, settings: FitSettings) -> list[Outputs]:
    """One :class:`Outputs` per --image, checked before any fit (not after minutes of it)."""
    if len(args.image) > 1 and args.output is not None:
        raise InputError("--output names one file; with several --image files use --output-dir")
    if len(args.image) > 1 and args.clean is not None:
        raise InputError("--clean goes with a single --image")
    components = settings.components if args.save_components else 0
    plans = [Outputs(args.output or args.output_dir / f"{path.stem}_denoised.png", components) for path in args.image]
    names = [p.denoised.resolve() for p in plans]
    if len(set(names)) < len(names):
        raise InputError("two --image files have the same name, so their outputs would collide; rename one")
    inputs = list(args.image) + ([args.clean] if args.clean is not None else [])
    for plan in plans:
        check_outputs(plan.all, inputs)
    return plans


def write_outputs(plan: Outputs, result: FitResult, *, bit_depth: int, protect: list[Path]) -> None:
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


def denoise(args: argparse.Namespace) -> None:
    settings, budget = settings_from(args), budget_from(args)
    plans = plan_outputs(args, settings)
    images = [read_image(path) for path in args.image]
    clean = read_image(args.clean).pixels if args.clean is not None else None
    if clean is not None and clean.shape != images[0].pixels.shape:
        raise InputError(f"--image is {tuple(images[0].pixels.shape)} (C, H, W) but --clean is "
                         f"{tuple(clean.shape)}; give the matching reference")
    priors_for = prior_loader(args.priors, prior_format=PriorFormat(args.prior_format))
    for channels in sorted({image.pixels.shape[0] for image in images}):
        priors_for(channels)  # a bad prior file fails before the first fit
    protect = list(args.image) + ([args.clean] if args.clean is not None else [])
    fits = fit_many([image.pixels for image in images], priors_for, settings, budget,
                    names=[run_name(path.stem) for path in args.image], cleans=[clean] + [None] * (len(images) - 1))
    for index, result in fits:
        write_outputs(plans[index], result, bit_depth=images[index].bit_depth, protect=protect)
        together = f" for {result.batch} images together" if result.batch > 1 else ""
        line = (f"wrote {plans[index].denoised} ({result.seconds:.1f} s{together}, delta {result.noise.delta:.2f}, "
                f"lambda {result.noise.weight:g}, beta0 {result.beta0:g}, restarts {result.restarts})")
        if clean is not None:
            s = score(result.denoised, clean)
            line += f"; PSNR {s.psnr:.2f} dB, SSIM {s.ssim:.4f}, 8-bit PSNR {s.psnr_8bit:.2f} dB"
        print(line)


def estimate_noise(args: argparse.Namespace) -> None:
    level = analyse_noise(read_image(args.image).pixels)
    print(f"delta {level.delta:.2f} (0-255 scale), noise class {level.noise_class.name.lower()}, "
          f"lambda {level.weight:g}, beta0 {level.beta0:g}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dvi", description="ScoreDVI single-image denoising.")
    commands = parser.add_subparsers(dest="command", required=True)
    d = commands.add_parser("denoise", help="denoise one image")
    d.add_argument("--image", type=Path, nargs="+", required=True,
                   help="the noisy image(s) (PNG/JPEG/TIFF, gray or RGB); same-sized ones are fitted together on a GPU")
    d.add_argument("--output", type=Path, default=None, help="output file for one --image (.png/.tif/.jpg)")
    d.add_argument("--output-dir", type=Path, default=Path("outputs"),
                   help="where <name>_denoised.png and its companions go when --output is not given (default outputs)")
    d.add_argument("--clean", type=Path, default=None, help="a clean reference: PSNR/SSIM are logged and printed")
    d.add_argument("--save-components", action="store_true",
                   help="also write each component's mean <out>_mean<k>.png and weight map <out>_pi<k>.png (last step)")
    add_fit_options(d)
    d.set_defaults(run=denoise)
    e = commands.add_parser("evaluate", help="denoise noisy/clean pairs and tabulate PSNR/SSIM")
    from dvi.interface.evaluate import add_evaluate_arguments, evaluate

    add_evaluate_arguments(e)
    add_fit_options(e)
    e.set_defaults(run=evaluate)
    n = commands.add_parser("estimate-noise", help="print the noise level delta and lambda of an image")
    n.add_argument("--image", type=Path, required=True)
    n.set_defaults(run=estimate_noise)
    return parser


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.run(args)
