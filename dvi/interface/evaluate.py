"""``python -m dvi evaluate``: denoise noisy/clean pairs, write a per-image CSV, print a summary.

Re-running on the same output folder resumes: images already in the CSV are skipped.
"""

from __future__ import annotations

import csv
import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jsonargparse import ArgumentParser, Namespace

from common.errors import InputError
from dvi.interface.options import config_from
from dvi.naming import run_name

if TYPE_CHECKING:
    from rich.console import Console

COLUMNS = ["name", "psnr", "ssim", "psnr_8bit", "noisy_psnr", "delta", "lambda", "beta0", "restarts", "seconds",
           "peak_gpu_mb", "peak_rss_mb", "steps", "height", "width", "batch"]
# seconds: per image; a batch of B images fitted together shares its wall time B ways


@dataclass(frozen=True)
class Pair:
    name: str
    noisy: Path
    clean: Path


def pair_name(path: Path) -> str:
    """Name shared by a noisy file and its reference: the stem without a ``_noisy``/``_clean`` suffix."""
    return path.stem.removesuffix("_noisy").removesuffix("_clean")


def find_pairs(noisy_dir: Path, clean_dir: Path) -> list[Pair]:
    """Pairs matched by :func:`pair_name`; noisy files are those not ending in ``_clean``."""
    from common.images import list_images

    for folder in (noisy_dir, clean_dir):
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder; pass --noisy DIR --clean DIR or --list FILE")
    clean = {pair_name(p): p for p in list_images(clean_dir) if not p.stem.endswith("_noisy")}
    pairs = [Pair(pair_name(p), p, clean[pair_name(p)]) for p in list_images(noisy_dir)
             if not p.stem.endswith("_clean") and pair_name(p) in clean]
    if not pairs:
        raise InputError(f"no noisy/clean pairs found in {noisy_dir} and {clean_dir}: names must match "
                         "(x.png in both, or x_noisy.png / x_clean.png)")
    return pairs


def read_pair_list(path: Path) -> list[Pair]:
    """A list file: one ``NOISY CLEAN`` pair of paths per line (relative to the file); # comments."""
    if not path.is_file():
        raise InputError(f"pair list {path} does not exist")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2:
            raise InputError(f"{path}:{number} should hold two paths (noisy clean), found {len(fields)}")
        noisy, clean = (path.parent / field for field in fields)
        pairs.append(Pair(pair_name(noisy), noisy, clean))
    return pairs


def crop_if(pixels, size: int | None):  # noqa: ANN001, ANN201 - tensor in, tensor out
    """``--crop``: the centre ``size`` x ``size`` window, or the whole image when no size is given."""
    from common.images import center_crop

    return pixels if size is None else center_crop(pixels, size)


def done_names(table: Path) -> set[str]:
    if not table.is_file():
        return set()
    with open(table, newline="") as handle:
        return {row["name"] for row in csv.DictReader(handle)}


def append_row(table: Path, row: dict[str, object]) -> None:
    """Append one row (header first when the file is new), flushed to disk before returning."""
    new = not table.is_file()
    fields = COLUMNS
    if not new:  # a table begun by an older version keeps its own columns
        with open(table, newline="") as handle:
            fields = next(csv.reader(handle), COLUMNS)
    with open(table, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)
        handle.flush()
        os.fsync(handle.fileno())


def summarise(table: Path, console: Console) -> None:
    """Mean PSNR / SSIM / 8-bit PSNR / seconds per subset (the name's prefix before '_')."""
    from rich.table import Table

    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(row["name"].split("_", 1)[0], []).append(row)
    summary = Table(title=f"ScoreDVI on {len(rows)} images ({table})")
    for column in ("subset", "images", "PSNR", "SSIM", "8-bit PSNR", "noisy PSNR", "s/image"):
        summary.add_column(column, justify="right")
    for group, members in sorted(groups.items()) + [("all", rows)]:
        def mean(key: str) -> float:
            return sum(float(r[key]) for r in members) / len(members)
        summary.add_row(group, str(len(members)), f"{mean('psnr'):.2f}", f"{mean('ssim'):.4f}",
                        f"{mean('psnr_8bit'):.2f}", f"{mean('noisy_psnr'):.2f}", f"{mean('seconds'):.1f}")
    console.print(summary)


def evaluate(args: Namespace) -> None:
    from rich.console import Console

    from common.images import read_image, write_image
    from common.metrics import score
    from dvi.api import denoise_images
    from dvi.fitting.ranks import join

    for flag, value in (("--limit", args.limit), ("--crop", args.crop)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be a whole number of at least 1, not {value}")

    if args.list is not None:
        pairs = read_pair_list(args.list)
    elif args.noisy is not None and args.clean is not None:
        pairs = find_pairs(args.noisy, args.clean)
    else:
        raise InputError("give --noisy DIR and --clean DIR, or --list FILE")
    pairs = pairs[: args.limit] if args.limit is not None else pairs
    out: Path = args.output
    table = out / "results.csv"
    finished = done_names(table)
    config = config_from(args)
    console = Console()
    for pair in pairs:
        if pair.name in finished:
            console.print(f"[dim]{pair.name}: already in {table}, skipped[/dim]")
    todo = [pair for pair in pairs if pair.name not in finished]
    group = join()  # several ranks (torchrun): each fits every world-th pair of rank 0's list
    total, todo = len(todo), group.launch.share(group.agree(todo))
    if group.launch.world > 1:
        console.print(group.launch.describe(len(todo), total))
    noisy, clean = [], []
    for pair in todo:
        noisy.append(crop_if(read_image(pair.noisy).pixels, args.crop))
        clean.append(crop_if(read_image(pair.clean).pixels, args.crop))
        if noisy[-1].shape != clean[-1].shape:
            raise InputError(f"{pair.noisy} is {tuple(noisy[-1].shape)} but {pair.clean} is {tuple(clean[-1].shape)}")
    fits = denoise_images(noisy, config, priors=args.priors, prior_format=args.prior_format,
                          names=[f"evaluate/{run_name(p.name)}" for p in todo], cleans=clean)
    for index, result in fits:
        pair = todo[index]
        write_image(out / f"{pair.name}_denoised.png", result.denoised, protect=[pair.noisy, pair.clean])
        scores, before = score(result.denoised, clean[index]), score(noisy[index], clean[index])
        append_row(table, {"name": pair.name, "psnr": f"{scores.psnr:.4f}", "ssim": f"{scores.ssim:.5f}",
                           "psnr_8bit": f"{scores.psnr_8bit:.4f}", "noisy_psnr": f"{before.psnr:.4f}",
                           "delta": f"{result.noise.delta:.3f}", "lambda": result.noise.weight, "beta0": result.beta0,
                           "restarts": result.restarts, "seconds": f"{result.seconds / result.batch:.2f}",
                           "peak_gpu_mb": f"{result.peak_memory_mb:.0f}",
                           "peak_rss_mb": f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}",
                           "steps": config.method.steps, "height": noisy[index].shape[1], "width": noisy[index].shape[2],
                           "batch": result.batch})
        console.print(f"{pair.name}: PSNR {scores.psnr:.2f} dB (noisy {before.psnr:.2f}), SSIM {scores.ssim:.4f}, "
                      f"{result.seconds / result.batch:.1f} s" + (f" (batch of {result.batch})" if result.batch > 1 else ""))
    group.finish()  # rank 0 summarises once every rank's rows are in
    if group.launch.is_first:
        summarise(table, console)


def add_evaluate_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--noisy", type=Path, default=None, help="folder of noisy images")
    parser.add_argument("--clean", type=Path, default=None, help="folder of clean references (may be the same)")
    parser.add_argument("--list", type=Path, default=None, help="file of 'NOISY CLEAN' path pairs")
    parser.add_argument("--output", type=Path, default=Path("outputs/evaluate"),
                        help="results folder (resumable; default: outputs/evaluate)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N pairs")
    parser.add_argument("--crop", type=int, default=None, help="centre-crop every pair to N x N (for quick CPU runs)")
