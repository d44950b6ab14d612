"""``python -m dvi``: denoise / evaluate / estimate-noise."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from common.errors import InputError, exit_on_input_error
from common.images import read_image, write_array, write_image
from common.metrics import score
from common.prior_files import PriorFormat, default_prior_paths, load_priors
from dvi.fit import FitSettings, fit_image, settings_with
from dvi.noise_level import analyse_noise

DEFAULTS = FitSettings()


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


def add_fit_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by denoise and evaluate."""
    parser.add_argument("--steps", type=positive_int, default=DEFAULTS.steps, help="Adam steps T (default 400)")
    parser.add_argument("--components", type=positive_int, default=DEFAULTS.components, help="mixture components K")
    parser.add_argument("--mc-samples", type=positive_int, default=DEFAULTS.mc_samples, help="Monte-Carlo samples M")
    parser.add_argument("--priors", type=Path, nargs="+", default=None,
                        help="prior files (default: the shipped ones for the image's channel count)")
    parser.add_argument("--prior-format", choices=[f.value for f in PriorFormat], default="auto",
                        help="'reference' reads ScoreDVI state dicts (conv_layers/running_sd/gammas); auto detects")
    parser.add_argument("--beta0", type=beta0_value, default=None, metavar="auto|VALUE",
                        help="Gamma hyperprior rate; auto: 0.005/0.01/0.02 for low/medium/high noise")
    parser.add_argument("--alpha0", type=float, default=DEFAULTS.alpha0)
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--precision", default="auto", help="auto, 32-true, bf16-mixed, 16-mixed, 64-true")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu", "cuda"], help="accelerator")


def settings_from(args: argparse.Namespace) -> FitSettings:
    return settings_with(DEFAULTS, steps=args.steps, components=args.components, mc_samples=args.mc_samples,
                         beta0=args.beta0, alpha0=args.alpha0, seed=args.seed, precision=args.precision,
                         accelerator=args.device)


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


def denoise(args: argparse.Namespace) -> None:
    image = read_image(args.image)
    clean = read_image(args.clean).pixels if args.clean is not None else None
    if clean is not None and clean.shape != image.pixels.shape:
        raise InputError(f"--image is {tuple(image.pixels.shape)} (C, H, W) but --clean is {tuple(clean.shape)}; "
                         "give the matching reference")
    channels = image.pixels.shape[0]
    priors = load_priors(args.priors or default_prior_paths(channels), channels=channels,
                         prior_format=PriorFormat(args.prior_format))
    output = args.output or Path("outputs") / f"{args.image.stem}_denoised.png"
    variance = output.with_name(f"{output.stem}_variance.tif")
    uncertainty = output.with_name(f"{output.stem}_uncertainty.png")
    components = [output.with_name(f"{output.stem}_{kind}{k}.png")
                  for k in range(args.components) for kind in ("mean", "pi")] if args.save_components else []
    inputs = [args.image] + ([args.clean] if args.clean is not None else [])
    check_outputs([output, variance, uncertainty, *components], inputs)  # before the fit, not after minutes of it
    result = fit_image(image.pixels, priors, settings_from(args), clean=clean, name=run_name(args.image.stem))
    suffix = output.suffix.lower()
    bit_depth = {".png": min(image.bit_depth, 16), ".tif": image.bit_depth, ".tiff": image.bit_depth}.get(suffix, 8)
    write_image(output, result.denoised, bit_depth=bit_depth, protect=inputs)
    write_array(variance, result.variance, protect=inputs)
    std = result.variance.sqrt()
    write_image(uncertainty, std / std.max().clamp_min(1e-12), protect=inputs)
    for k in range(len(components) // 2):
        write_image(components[2 * k], result.component_means[k], protect=inputs)
        write_image(components[2 * k + 1], result.component_weights[k], protect=inputs)
    line = (f"wrote {output} ({result.seconds:.1f} s, delta {result.noise.delta:.2f}, lambda {result.noise.weight:g}, "
            f"beta0 {result.beta0:g}, restarts {result.restarts})")
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
    d.add_argument("--image", type=Path, required=True, help="the noisy image (PNG/JPEG/TIFF, gray or RGB)")
    d.add_argument("--output", type=Path, default=None, help="default: outputs/<name>_denoised.png")
    d.add_argument("--clean", type=Path, default=None, help="a clean reference: PSNR/SSIM are logged and printed")
    d.add_argument("--save-components", action="store_true",
                   help="also write each component's mean <out>_mean<k>.png and weight map <out>_pi<k>.png (last step)")
    add_fit_options(d)
    d.set_defaults(run=denoise)
    e = commands.add_parser("evaluate", help="denoise noisy/clean pairs and tabulate PSNR/SSIM")
    from dvi.evaluate import add_evaluate_arguments, evaluate

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
