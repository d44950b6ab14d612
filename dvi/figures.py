"""Pictures of results: one side-by-side PNG per image, and a plot of PSNR per image and method.

:func:`comparison_png` draws panels in one row (noisy input, ScoreDVI's posterior mean, its uncertainty, each
baseline, the clean reference: whichever are given), each with the same region outlined and shown enlarged
in an inset, the region's place chosen by :func:`zoom_region`, and a caption under the panel (PSNR / SSIM
against the reference where there is one). The uncertainty panel is the posterior standard deviation
averaged over channels, divided by its maximum (a picture of where the fit is unsure, not a calibrated
scale; the caption gives the maximum on the [0, 1] intensity scale). :func:`psnr_plot_png` plots the PSNR of
every row of an ``evaluate`` table, one line of markers per method.

Drawn with matplotlib's object API (``Figure`` + Agg canvas: no pyplot, no global state, no window); every
size is in :class:`FigureSettings`. Functions return PNG bytes, which the caller publishes atomically
(:mod:`common.publish`). Images are float tensors (C, H, W) in [0, 1], C = 1 or 3.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

LABELS = {"scoredvi": "ScoreDVI", "noisy": "noisy input", "nlm": "NLM", "wavelet": "wavelet (BayesShrink)",
          "bm3d": "BM3D"}  # how figures and summaries name the methods of dvi.baselines.METHODS


@dataclass(frozen=True)
class FigureSettings:
    """Sizes of the pictures: a panel is ``panel_width`` x ``panel_height`` inches at ``dpi`` (title and
    caption included); the inset shows a square of ``zoom_fraction`` of the shorter image side, enlarged to
    ``inset_fraction`` of the panel's side."""

    panel_width: float = 2.6
    panel_height: float = 3.1
    dpi: int = 100
    zoom_fraction: float = 0.25
    inset_fraction: float = 0.42
    plot_height: float = 4.0
    plot_width_per_image: float = 0.45
    plot_min_width: float = 6.0


SETTINGS = FigureSettings()


@dataclass(frozen=True)
class Panel:
    """One picture of a comparison: ``image`` (C, H, W) in [0, 1] (or (1, H, W) shown with a colour map when
    ``heat``), its ``title`` above and ``caption`` below."""

    title: str
    image: Tensor
    caption: str = ""
    heat: bool = False


def zoom_region(reference: Tensor, *, fraction: float = SETTINGS.zoom_fraction) -> tuple[int, int, int]:
    """(top, left, side) of the square window, ``fraction`` of the shorter side, with the most detail
    (largest standard deviation of the luma) on a half-window grid: where denoisers differ most."""
    gray = reference.float().mean(dim=0)
    height, width = gray.shape
    side = max(4, int(min(height, width) * fraction))
    step = max(1, side // 2)
    best, where = -1.0, (0, 0)
    for top in range(0, height - side + 1, step):
        for left in range(0, width - side + 1, step):
            spread = float(gray[top:top + side, left:left + side].std())
            if spread > best:
                best, where = spread, (top, left)
    return where[0], where[1], side


def scored_caption(estimate: Tensor, reference: Tensor | None) -> str:
    """``PSNR x dB / SSIM y`` of ``estimate`` against ``reference`` (method.md section 5); "" without one."""
    if reference is None:
        return ""
    from common.metrics import score

    scores = score(estimate, reference)
    return f"PSNR {scores.psnr:.2f} dB / SSIM {scores.ssim:.3f}"


def result_panels(noisy: Tensor, *, clean: Tensor | None = None, denoised: Tensor | None = None,
                  variance: Tensor | None = None, baselines: Mapping[str, Tensor] | None = None) -> list[Panel]:
    """The panels of one image in the order of the figure: noisy, ScoreDVI, uncertainty, baselines, clean."""
    panels = [Panel(LABELS["noisy"], noisy, scored_caption(noisy, clean))]
    if denoised is not None:
        panels.append(Panel(LABELS["scoredvi"], denoised, scored_caption(denoised, clean)))
    if variance is not None:
        std = variance.clamp_min(0).sqrt().mean(dim=0, keepdim=True)
        peak = float(std.max())
        panels.append(Panel("ScoreDVI uncertainty", std / max(peak, 1e-12),
                            f"posterior std / max (max {peak:.3f})", heat=True))
    for name, image in (baselines or {}).items():
        if name != "noisy":
            panels.append(Panel(LABELS.get(name, name), image, scored_caption(image, clean)))
    if clean is not None:
        panels.append(Panel("clean reference", clean, "reference"))
    return panels


def comparison_png(panels: Sequence[Panel], *, region: tuple[int, int, int] | None = None,
                   suptitle: str = "", settings: FigureSettings = SETTINGS) -> bytes:
    """One PNG of ``panels`` side by side, ``len(panels) * panel_width`` x ``panel_height`` inches at ``dpi``;
    ``region`` (top, left, side; default :func:`zoom_region` of the last panel) is outlined in every panel and
    shown enlarged in an inset, in the corner farthest from it."""
    from matplotlib.patches import Rectangle

    if not panels:
        raise ValueError("a comparison needs at least one panel")
    height, width = panels[0].image.shape[-2:]
    top, left, side = region if region is not None else zoom_region(panels[-1].image, fraction=settings.zoom_fraction)
    below = top + side / 2 < height / 2  # the region is in the upper half: inset at the bottom
    right = left + side / 2 < width / 2
    inset = settings.inset_fraction
    corner = [1 - inset if right else 0.0, 0.0 if below else 1 - inset, inset, inset]
    figure, canvas = _figure(len(panels) * settings.panel_width, settings.panel_height, settings.dpi)
    if suptitle:
        figure.suptitle(suptitle, fontsize=9, y=0.995)
    cell = 1.0 / len(panels)
    for index, panel in enumerate(panels):
        axes = figure.add_axes((index * cell + 0.03 * cell, 0.14, 0.94 * cell, 0.72))
        shown, options = _displayable(panel)
        axes.imshow(shown, interpolation="nearest", **options)
        axes.add_patch(Rectangle((left - 0.5, top - 0.5), side, side, fill=False, edgecolor="yellow", linewidth=1))
        axes.set_axis_off()
        axes.set_title(panel.title, fontsize=9)
        axes.text(0.5, -0.04, panel.caption, transform=axes.transAxes, ha="center", va="top", fontsize=8)
        zoom = axes.inset_axes(corner)
        zoom.imshow(shown[top:top + side, left:left + side], interpolation="nearest", **options)
        zoom.set_xticks([])
        zoom.set_yticks([])
        for spine in zoom.spines.values():
            spine.set_edgecolor("yellow")
    return _png(canvas, figure)


def psnr_plot_png(rows: Sequence[Mapping[str, str]], *, title: str = "", settings: FigureSettings = SETTINGS) -> bytes:
    """PSNR (dB) of every ``evaluate`` row (``name``, ``method``, ``psnr``), images along x, one marker line
    per method (in the order the methods first appear), the noisy input's PSNR dashed."""
    names = list(dict.fromkeys(row["name"] for row in rows))
    methods = list(dict.fromkeys(row["method"] for row in rows))
    if not names:
        raise ValueError("no rows to plot")
    width = max(settings.plot_min_width, settings.plot_width_per_image * len(names) + 2.0)
    figure, canvas = _figure(width, settings.plot_height, settings.dpi)
    axes = figure.add_axes((0.08, 0.3, 0.9, 0.6))
    where = {name: index for index, name in enumerate(names)}
    for method in methods:
        points = sorted((where[row["name"]], float(row["psnr"])) for row in rows if row["method"] == method
                        and math.isfinite(float(row["psnr"])))
        if points:
            xs, ys = zip(*points)
            axes.plot(xs, ys, marker="o", markersize=4, linewidth=1, linestyle="--" if method == "noisy" else "-",
                      label=LABELS.get(method, method))
    axes.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    axes.set_ylabel("PSNR (dB)")
    axes.grid(alpha=0.3)
    axes.set_title(title, fontsize=9)
    axes.legend(loc="best", fontsize=8, framealpha=0.8)  # inside the axes: labels outside were cut at the edge
    return _png(canvas, figure)


def _figure(width: float, height: float, dpi: int):  # noqa: ANN202 - (Figure, FigureCanvasAgg)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=dpi, facecolor="white")
    return figure, FigureCanvasAgg(figure)


def _displayable(panel: Panel) -> tuple[np.ndarray, dict[str, object]]:
    array = panel.image.detach().to("cpu", torch.float32).clamp(0, 1).numpy()
    if panel.heat:
        return array.mean(axis=0), {"cmap": "inferno", "vmin": 0.0, "vmax": 1.0}
    if array.shape[0] == 1:
        return array[0], {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}
    return np.moveaxis(array, 0, -1), {}


def _png(canvas, figure) -> bytes:  # noqa: ANN001 - FigureCanvasAgg, Figure
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    figure.clear()
    return buffer.getvalue()
