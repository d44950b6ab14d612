"""``python -m dvi evaluate``: denoise noisy/clean pairs, write a per-image CSV, print a summary.

Re-running on the same output folder resumes: images already in ``results.csv`` are skipped, provided
they were computed with the same configuration. Each row records it: the readable settings (preset,
steps, components K, Monte-Carlo samples M, crop, seed, the priors' sha256) and ``config_id``, a short
hash of everything that changes the results (:func:`configuration_id`). Rows of another configuration
are refused with one line, or with ``--resume-mismatch recompute`` removed and computed again.

The table is a :class:`common.results_table.ResultsTable`: its lock is held for the whole run (a second
``evaluate`` on the same folder says so and waits, then resumes from the first one's rows), appends are
atomic, and a damaged row (e.g. the machine stopped mid-write) is reported, dropped and computed again.
Row names are unique: pairs whose names collide keep their folders (``d1/x``, ``d2/x`` -> ``d1_x``,
``d2_x``). The denoised PNG of a row may be replaced when that row is computed again (the folder is
this command's own); inputs are never written.
"""

from __future__ import annotations

import argparse

import hashlib
import json
import os
import resource
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from jsonargparse import ArgumentParser, Namespace

from common.errors import InputError
from dvi.baselines import DEFAULT_METHODS
from dvi.config import Config, to_dict
from dvi.interface.interrupts import Interrupted
from dvi.interface.options import config_from
from dvi.naming import run_name

if TYPE_CHECKING:
    from rich.console import Console
    from torch import Tensor

    from common.results_table import ResultsTable
    from dvi.fitting.fit import FitResult

RECORDED = ["config_id", "preset", "components", "mc_samples", "crop", "seed", "priors", "channels"]
COLUMNS = ["name", "method", "psnr", "ssim", "psnr_8bit", "noisy_psnr", "delta", "lambda", "beta0", "restarts", "seconds",
           "peak_gpu_mb", "peak_rss_mb", "steps", "height", "width", "batch", *RECORDED, "step_path"]
# seconds: per image; a batch of B images fitted together shares its wall time B ways. One row per image and
# method (dvi.baselines.METHODS); lambda, beta0, restarts, steps, batch and the fit's configuration columns are
# ScoreDVI's and empty in a baseline's row; step_path: which optimisation step ran (eager, graph-ready, cuda-graph,
# or eager-fallback when the CUDA graph failed: dvi.fitting.module.CapturedStep)
NUMERIC = ["psnr", "ssim", "psnr_8bit", "noisy_psnr", "delta", "seconds", "height", "width"]
KEY = ("name", "method")
# runtime settings that do not change the results (where and how fast a fit runs, what it logs); every other
# setting of the configuration, the crop, the prior files and their format go into config_id
RESULT_NEUTRAL = ("device", "batch", "max_memory", "log_every", "image_every", "channels_last", "cuda_graphs",
                  "progress", "max_pixels")
MISMATCH = ("refuse", "recompute")


@dataclass(frozen=True)
class Pair:
    name: str
    noisy: Path
    clean: Path


def pair_name(path: Path) -> str:
    """Name shared by a noisy file and its reference: the stem without a ``_noisy``/``_clean`` suffix."""
    return path.stem.removesuffix("_noisy").removesuffix("_clean")


def unique_names(pairs: Sequence[Pair]) -> list[Pair]:
    """``pairs`` with names that differ: where names collide, each keeps the folders of its noisy file below
    the colliding files' common folder, joined by ``_`` (``d1/x.png``, ``d2/x.png`` -> ``d1_x``, ``d2_x``),
    then its suffix (``x.png``, ``x.tif`` -> ``x_png``, ``x_tif``). The same file twice is an InputError."""
    counts = Counter(pair.name for pair in pairs)
    clashing = [pair for pair in pairs if counts[pair.name] > 1]
    renamed = {}
    for name in {pair.name for pair in clashing}:
        group = [pair for pair in clashing if pair.name == name]
        base = Path(os.path.commonpath([pair.noisy.resolve().parent for pair in group]))
        for pair in group:
            parts = pair.noisy.resolve().parent.relative_to(base).parts
            renamed[id(pair)] = "_".join([*parts, name])
        if len({renamed[id(pair)] for pair in group}) < len(group):
            for pair in group:
                renamed[id(pair)] += "_" + pair.noisy.suffix.lstrip(".").lower()
    result = [replace(pair, name=renamed.get(id(pair), pair.name)) for pair in pairs]
    repeated = [name for name, count in Counter(pair.name for pair in result).items() if count > 1]
    if repeated:
        twice = next(pair for pair in result if pair.name == repeated[0])
        raise InputError(f"{twice.noisy} is listed more than once (row name {repeated[0]!r}); list each pair once")
    return result


def find_pairs(noisy_dir: Path, clean_dir: Path) -> list[Pair]:
    """Pairs matched by :func:`pair_name`; noisy files are those not ending in ``_clean``."""
    from common.images import list_images

    for folder in (noisy_dir, clean_dir):
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder; pass --noisy DIR --clean DIR or --list FILE")
    clean: dict[str, Path] = {}
    for path in list_images(clean_dir):
        if not path.stem.endswith("_noisy"):
            if pair_name(path) in clean:
                raise InputError(f"{clean[pair_name(path)]} and {path} are both references for "
                                 f"{pair_name(path)!r}; keep one")
            clean[pair_name(path)] = path
    pairs = [Pair(pair_name(p), p, clean[pair_name(p)]) for p in list_images(noisy_dir)
             if not p.stem.endswith("_clean") and pair_name(p) in clean]
    if not pairs:
        raise InputError(f"no noisy/clean pairs found in {noisy_dir} and {clean_dir}: names must match "
                         "(x.png in both, or x_noisy.png / x_clean.png)")
    return pairs


def read_pair_list(path: Path) -> list[Pair]:
    """A list file: one ``NOISY CLEAN`` pair of paths per line (relative to the file); # comments."""
    if not path.is_file():
        state = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise InputError(f"pair list {path} {state}; pass a text file of 'NOISY CLEAN' lines to --list")
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
    from common.pixels import center_crop

    return pixels if size is None else center_crop(pixels, size)


class Recorder:
    """The configuration columns of a row (:data:`RECORDED`) for this run, by channel count."""

    def __init__(self, config: Config, *, preset: str, crop: int | None, priors: Sequence[Path] | None,
                 prior_format: str) -> None:
        self.config, self.preset, self.crop, self.priors, self.prior_format = config, preset, crop, priors, prior_format
        self._cache: dict[int, dict[str, str]] = {}

    def columns(self, channels: int, method: str = "scoredvi") -> dict[str, str]:
        if method != "scoredvi":
            from dvi.baselines import settings_record

            payload = json.dumps({"baseline": settings_record(method), "crop": self.crop}, sort_keys=True)
            return {"config_id": hashlib.sha256(payload.encode()).hexdigest()[:12], "preset": "", "components": "",
                    "mc_samples": "", "crop": "" if self.crop is None else str(self.crop), "seed": "", "priors": "",
                    "channels": str(channels)}
        if channels not in self._cache:
            from common.prior_files import sha256_of
            from dvi.interface.inputs import prior_paths

            hashes = [sha256_of(path) for path in prior_paths(self.priors, channels, self.config)]
            method = self.config.method
            self._cache[channels] = {
                "config_id": configuration_id(self.config, crop=self.crop, prior_hashes=hashes,
                                              prior_format=self.prior_format),
                "preset": self.preset, "components": str(method.components), "mc_samples": str(method.mc_samples),
                "crop": "" if self.crop is None else str(self.crop), "seed": str(self.config.runtime.seed),
                "priors": "+".join(digest[:12] for digest in hashes), "channels": str(channels)}
        return self._cache[channels]

    def mismatch(self, row: dict[str, str]) -> str:
        """Why ``row`` is of another configuration ("" when it is of this one)."""
        from dvi.baselines import METHODS

        if not row.get("config_id") or row.get("channels") not in ("1", "3"):
            return "no configuration recorded"
        if row.get("method") not in METHODS:
            return "no method recorded (a table of an older version)"
        now = self.columns(int(row["channels"]), row["method"])
        if row["config_id"] == now["config_id"]:
            return ""
        changed = [f"{key} {row[key] or 'none'} -> {now[key] or 'none'}" for key in RECORDED[1:-1]
                   if row.get(key) != now[key]]
        if row["method"] == "scoredvi" and row.get("steps") != str(self.config.method.steps):
            changed.insert(0, f"steps {row.get('steps')} -> {self.config.method.steps}")
        return ", ".join(changed) or f"config_id {row['config_id']} -> {now['config_id']}"


def configuration_id(config: Config, *, crop: int | None, prior_hashes: Sequence[str], prior_format: str) -> str:
    """12 hex digits of the sha256 of what determines an evaluation's results: the configuration without
    :data:`RESULT_NEUTRAL`, the crop, the priors' sha256 (in order) and their format."""
    settings = to_dict(config)
    settings["runtime"] = {key: value for key, value in settings["runtime"].items() if key not in RESULT_NEUTRAL}
    payload = json.dumps({"config": settings, "crop": crop, "priors": list(prior_hashes),
                          "prior_format": prior_format}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


@contextmanager
def reported_warnings(console: Console) -> Iterator[None]:
    """Warnings of the block (a damaged row, a dropped alpha channel) as one ``warning:`` line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for item in caught:
        console.print(f"warning: {item.message}", markup=False, highlight=False)


@contextmanager
def held(table: ResultsTable, console: Console, *, alone: bool = True) -> Iterator[None]:
    """The table's lock for the whole run; when another ``evaluate`` holds it, say so and wait for it.

    Not ``alone`` (a rank of a multi-process launch, :mod:`dvi.fitting.ranks`): the ranks of one run share
    the table, so none holds it for the run (each would wait on the others); every read and append is
    still locked, and a row is never appended twice."""
    with ExitStack() as stack:
        if not alone:
            yield
            return
        table.timeout = 0
        try:
            stack.enter_context(table.locked())
        except InputError:
            if not table.lock_path.exists():  # the lock file could not be made: not a wait
                raise
            console.print(f"{table.path} is in use by another evaluate; waiting for it to finish "
                          "(its rows will then be skipped)", markup=False, highlight=False)
            table.timeout = None
            stack.enter_context(table.locked())
        yield


def summarise(rows: Sequence[dict[str, str]], path: Path, console: Console) -> None:
    """Mean PSNR / SSIM / 8-bit PSNR / seconds per subset (the name's prefix before '_') and method, the methods
    of a subset side by side; ``rows`` are valid :class:`ResultsTable` rows (numbers checked), so no row can
    stop it."""
    from rich.table import Table

    from dvi.baselines import METHODS
    from dvi.figures import LABELS

    if not rows:
        console.print(f"no results in {path} yet")
        return
    methods = [method for method in METHODS if any(row.get("method") == method for row in rows)]
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(row["name"].split("_", 1)[0], []).append(row)
    images = len({row["name"] for row in rows})
    summary = Table(title=f"{', '.join(LABELS[m] for m in methods)} on {images} images ({path})")
    for column in ("subset", "method", "images", "PSNR", "SSIM", "8-bit PSNR", "noisy PSNR", "s/image"):
        summary.add_column(column, justify="right")
    for group, members in sorted(groups.items()) + [("all", list(rows))]:
        for method in methods:
            chosen = [row for row in members if row.get("method") == method]
            if not chosen:
                continue

            def mean(key: str, chosen: list[dict[str, str]] = chosen) -> float:
                return sum(float(r[key]) for r in chosen) / len(chosen)
            summary.add_row(group, method, str(len(chosen)), f"{mean('psnr'):.2f}", f"{mean('ssim'):.4f}",
                            f"{mean('psnr_8bit'):.2f}", f"{mean('noisy_psnr'):.2f}", f"{mean('seconds'):.1f}")
    console.print(summary)


def chosen_pairs(args: Namespace) -> list[Pair]:
    for flag, value in (("--limit", args.limit), ("--crop", args.crop)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be a whole number of at least 1, not {value}")
    if args.list is not None:
        if args.noisy is not None or args.clean is not None:
            raise InputError("--list replaces --noisy and --clean; give either --list FILE or --noisy DIR --clean DIR")
        pairs = read_pair_list(args.list)
        if not pairs:
            raise InputError(f"pair list {args.list} lists no pairs; write one 'NOISY CLEAN' pair of paths a line")
    elif args.noisy is not None and args.clean is not None:
        pairs = find_pairs(args.noisy, args.clean)
    else:
        raise InputError("give --noisy DIR and --clean DIR, or --list FILE")
    return unique_names(pairs[: args.limit] if args.limit is not None else pairs)


def read_pairs(pairs: Sequence[Pair], *, crop: int | None, config: Config, fitted: bool,
               priors: Sequence[Path] | None, prior_format: str, console: Console) -> dict[str, tuple[Tensor, Tensor]]:
    """Every pair read, cropped and checked before anything is created (missing or bad files, sizes that differ,
    a ``--crop`` larger than an image, an image too small, priors that do not fit: :mod:`dvi.interface.inputs`);
    ``fitted``: ScoreDVI will fit them (else only the noise-level estimate's size rule applies)."""
    from common.images import read_image
    from dvi.api import pixel_limit
    from dvi.interface.inputs import check_images

    limit, read = pixel_limit(config), {}
    for pair in pairs:
        with reported_warnings(console):
            noisy, clean = (read_image(path, max_pixels=limit).pixels for path in (pair.noisy, pair.clean))
        if noisy.shape != clean.shape:
            raise InputError(f"{pair.noisy} is {tuple(noisy.shape)} but {pair.clean} is {tuple(clean.shape)} "
                             "(C, H, W); pair each noisy image with its own reference")
        if crop is not None and crop > min(noisy.shape[-2:]):
            raise InputError(f"--crop {crop} is larger than {pair.noisy} ({noisy.shape[-1]}x{noisy.shape[-2]} "
                             f"pixels); use --crop {min(noisy.shape[-2:])} or less")
        read[pair.name] = crop_if(noisy, crop), crop_if(clean, crop)
    check_images([(pair.noisy, read[pair.name][0]) for pair in pairs], config if fitted else None, priors=priors,
                 prior_format=prior_format)
    return read


def evaluate(args: Namespace) -> None:
    from rich.console import Console

    from common.images import write_image
    from common.metrics import score
    from common.publish import check_writable
    from common.results_table import ResultsTable
    from dvi.api import denoise_images
    from dvi.baselines import check_methods
    from dvi.fitting.ranks import Launch, join
    from dvi.interface.inputs import announce_prior_reuse

    methods = check_methods(args.methods)
    pairs = chosen_pairs(args)
    out: Path = args.output
    config = config_from(args)
    console = Console()
    images = read_pairs(pairs, crop=args.crop, config=config, fitted="scoredvi" in methods, priors=args.priors,
                        prior_format=args.prior_format, console=console)
    inputs = [path for pair in pairs for path in (pair.noisy, pair.clean)]
    table = ResultsTable(out / "results.csv", COLUMNS, key=KEY, numeric=NUMERIC)
    figures = [out / f"{pair.name}_figure.png" for pair in pairs] + [out / "psnr_by_image.png"] if args.figures else []
    denoised_paths = [out / f"{pair.name}_denoised.png" for pair in pairs] if "scoredvi" in methods else []
    check_writable([table.path, *denoised_paths, *figures], protect=inputs)
    recorder = Recorder(config, preset=args.preset, crop=args.crop, priors=args.priors, prior_format=args.prior_format)
    with held(table, console, alone=Launch.from_environment().world == 1):
        with reported_warnings(console):
            rows = table.rows()
        stale = {table.key_of(row): why for row in rows if (why := recorder.mismatch(row))}
        if stale and args.resume_mismatch == "refuse":
            (name, method), why = next(iter(stale.items()))
            raise InputError(f"results.csv in {out} was made with another configuration ({len(stale)} of "
                             f"{len(rows)} rows, e.g. {name} ({method or 'no method'}): {why}); use another "
                             "--output or --resume-mismatch recompute")
        if stale:
            table.drop(stale)
            console.print(f"{len(stale)} rows of another configuration removed from {table.path}; computing "
                          "them again", markup=False, highlight=False)
            listed = {pair.name for pair in pairs}
            for name in {name for name, _ in stale} - listed:  # not computed again: its files would be orphans
                for leftover in (out / f"{name}_denoised.png", out / f"{name}_figure.png"):
                    leftover.unlink(missing_ok=True)
        finished = {table.key_of(row) for row in rows} - set(stale)
        for pair in pairs:
            done = [method for method in methods if (pair.name, method) in finished]
            if len(done) == len(methods):
                console.print(f"[dim]{pair.name}: already in {table.path}, skipped[/dim]")
            elif done:
                console.print(f"[dim]{pair.name}: {', '.join(done)} already in {table.path}[/dim]")
        todo = [pair for pair in pairs if any((pair.name, method) not in finished for method in methods)]
        group = join()  # several ranks (torchrun): each fits every world-th pair of rank 0's list
        total, todo = len(todo), group.launch.share(group.agree(todo))
        if group.launch.world > 1:
            console.print(group.launch.describe(len(todo), total))
        noisy, clean = [images[pair.name][0] for pair in todo], [images[pair.name][1] for pair in todo]
        channels = [image.shape[0] for image in noisy]
        fit = [index for index, pair in enumerate(todo) if "scoredvi" in methods
               and (pair.name, "scoredvi") not in finished]
        for count in sorted({channels[index] for index in fit}):
            recorder.columns(count)  # hash the priors (and find them missing) before the first fit
        added = 0

        def append(index: int, method: str, denoised: Tensor, seconds: float, delta: float,
                   fitted: FitResult | None = None) -> None:
            nonlocal added
            pair = todo[index]
            scores, before = score(denoised, clean[index]), score(noisy[index], clean[index])
            row = {"name": pair.name, "method": method, "psnr": f"{scores.psnr:.4f}", "ssim": f"{scores.ssim:.5f}",
                   "psnr_8bit": f"{scores.psnr_8bit:.4f}", "noisy_psnr": f"{before.psnr:.4f}",
                   "delta": f"{delta:.3f}", "seconds": f"{seconds:.2f}",
                   "peak_rss_mb": f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}",
                   "height": noisy[index].shape[1], "width": noisy[index].shape[2],
                   **recorder.columns(channels[index], method)}
            if fitted is not None:
                row.update({"lambda": fitted.noise.weight, "beta0": fitted.beta0, "restarts": fitted.restarts,
                            "peak_gpu_mb": f"{fitted.peak_memory_mb:.0f}", "steps": config.method.steps,
                            "batch": fitted.batch, "step_path": fitted.step_path})
            table.append(row)
            added += 1
            console.print(f"{pair.name} {method}: PSNR {scores.psnr:.2f} dB (noisy {before.psnr:.2f}), SSIM "
                          f"{scores.ssim:.4f}, {seconds:.1f} s"
                          + (f" (batch of {fitted.batch})" if fitted is not None and fitted.batch > 1 else ""))

        try:
            outputs = run_baselines(todo, noisy, methods, finished, figures=args.figures, append=append)
            if args.figures and "scoredvi" not in methods:
                for index in range(len(todo)):
                    write_figure(out / f"{todo[index].name}_figure.png", todo[index].name, noisy[index], clean[index],
                                 outputs[index], None, protect=inputs)
            announce_prior_reuse(args.priors, [channels[index] for index in fit], config)
            fits = denoise_images([noisy[index] for index in fit], config, priors=args.priors,
                                  prior_format=args.prior_format, cleans=[clean[index] for index in fit],
                                  names=[f"evaluate/{run_name(todo[index].name)}" for index in fit]) if fit else []
            for position, result in fits:
                index = fit[position]
                write_image(out / f"{todo[index].name}_denoised.png", result.denoised, protect=inputs)
                append(index, "scoredvi", result.denoised, result.seconds / result.batch, result.noise.delta, result)
                if args.figures:
                    write_figure(out / f"{todo[index].name}_figure.png", todo[index].name, noisy[index], clean[index],
                                 outputs[index], result, protect=inputs)
        except Interrupted as err:
            kept = len(finished) + added
            err.note = (f"nothing written for the images in progress; the {kept} row{'s' * (kept != 1)} already "
                        f"in {table.path} stay (run again to resume)")
            raise
        group.finish()  # rank 0 summarises once every rank's rows are in
        if group.launch.is_first:
            with reported_warnings(console):
                rows = table.rows()
            summarise(rows, table.path, console)
            if args.figures and rows:
                from common.publish import write_atomic
                from dvi.figures import psnr_plot_png

                write_atomic(out / "psnr_by_image.png", psnr_plot_png(rows, title=f"PSNR per image ({table.path})"),
                             protect=inputs)


def run_baselines(todo: Sequence[Pair], noisy: Sequence[Tensor], methods: Sequence[str],
                  finished: set[tuple[str, str]], *, figures: bool,
                  append: Callable[..., None]) -> list[dict[str, Tensor]]:
    """Run every baseline of ``methods`` on each pair whose row is missing (all of them when ``figures``:
    the pictures show them), at the toolkit's noise estimate; ``append`` records each new row. Returns the
    baselines' outputs per pair (empty without ``figures``)."""
    from dvi.baselines import BASELINES, denoise_baseline
    from dvi.method.noise_level import estimate_noise_level

    outputs: list[dict[str, Tensor]] = []
    for index, pair in enumerate(todo):
        wanted = [m for m in methods if m in BASELINES and (figures or (pair.name, m) not in finished)]
        delta = estimate_noise_level(noisy[index]) if wanted else 0.0
        kept: dict[str, Tensor] = {}
        for method in wanted:
            start = time.perf_counter()
            denoised = denoise_baseline(method, noisy[index], delta=delta)
            seconds = time.perf_counter() - start
            if (pair.name, method) not in finished:
                append(index, method, denoised, seconds, delta)
            if figures:
                kept[method] = denoised
        outputs.append(kept)
    return outputs


def write_figure(path: Path, name: str, noisy: Tensor, clean: Tensor, baselines: dict[str, Tensor],
                 result: FitResult | None, *, protect: Sequence[Path]) -> None:
    """``--figures``: the side-by-side picture of one pair (:func:`dvi.figures.comparison_png`), atomically."""
    from common.publish import write_atomic
    from dvi.figures import comparison_png, result_panels

    panels = result_panels(noisy, clean=clean, denoised=None if result is None else result.denoised,
                           variance=None if result is None else result.variance, baselines=baselines)
    write_atomic(path, comparison_png(panels, suptitle=name), protect=protect)


def whole_number(value: object) -> int:
    """``--limit`` / ``--crop``: a whole number (the range is checked by :func:`chosen_pairs`)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    raise argparse.ArgumentTypeError(f"must be a whole number, not {value!r}")  # (a ValueError: argparse's wording)


def add_evaluate_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--noisy", type=Path, default=None, help="folder of noisy images")
    parser.add_argument("--clean", type=Path, default=None, help="folder of clean references (may be the same)")
    parser.add_argument("--list", type=Path, default=None, help="file of 'NOISY CLEAN' path pairs")
    parser.add_argument("--output", type=Path, default=Path("outputs/evaluate"),
                        help="results folder: results.csv and <name>_denoised.png (default: outputs/evaluate). "
                             "Resumable: rows already there are skipped if made with the same configuration; "
                             "a second evaluate on the same folder waits for the first, then skips its rows; "
                             "denoised PNGs of rows computed again are replaced")
    parser.add_argument("--resume-mismatch", dest="resume_mismatch", choices=MISMATCH, default="refuse",
                        help="rows of --output made with another configuration (settings, crop or priors): "
                             "refuse (exit 2, default) or recompute (remove them and compute them again)")
    parser.add_argument("--limit", type=whole_number, default=None, help="only the first N pairs")
    parser.add_argument("--crop", type=whole_number, default=None,
                        help="centre-crop every pair to N x N (for quick CPU runs)")
    # --methods, not --method: jsonargparse cannot hold an option "method" beside the fit options' "method.*" group
    parser.add_argument("--methods", dest="methods", nargs="+", type=str, default=list(DEFAULT_METHODS),
                        help="methods scored side by side, one row per image and method: scoredvi, noisy (the "
                             "input), nlm (non-local means), wavelet (BayesShrink), bm3d (needs the optional "
                             "'baselines' extra; non-commercial licence); baselines get the estimated noise level "
                             f"(default: {' '.join(DEFAULT_METHODS)})")
    parser.add_argument("--figures", action="store_true",
                        help="also write <name>_figure.png per image computed in this run (noisy, denoised, "
                             "uncertainty, baselines, clean, with a zoomed inset and PSNR/SSIM) and "
                             "psnr_by_image.png for the whole table")
