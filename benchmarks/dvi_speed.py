"""Stage-2 speed: ms per ScoreDVI step and s per image (x steps) by image size, peak memory, and the
kernel-launching operators per step (what bounds small images on a GPU).

Runs the real training step of :class:`dvi.fitting.module.ScoreDVI` (forward of the four nets, K prior
calls on M samples, ELBO, backward, Adam) in a plain loop on a synthetic noisy image; prior weights
do not change the cost; without --priors the shipped RGB priors a fit of the configuration loads stand in.
``--compare A B`` runs two configurations alternately in one process and prints their ratio.

    python -m benchmarks.dvi_speed --sizes 64 128 --steps 3
    python -m benchmarks.dvi_speed --sizes 256 --compare mc_samples=5 mc_samples=2
    python -m benchmarks.dvi_speed --sizes 256 --batch 8 --precision bf16-mixed   # many images at once (GPU)
    python -m benchmarks.dvi_speed --sizes 64 256 1008 --preset fast --profile 2   # where the time goes, by phase
    python -m benchmarks.dvi_speed --sizes 256 --compare cuda_graphs=false cuda_graphs=true   # CUDA graph on/off
    python -m benchmarks.dvi_speed --sizes 256 --memory 1 8 32   # measured peak memory vs dvi/fitting/memory.py
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.machine import cpu_description, nominal_peak_gflops, sgemm_gflops
from benchmarks.timing import AUTOCAST, autocast, seconds_per_step
from common.bfdncnn import BFDnCNN
from common.prior_files import chosen_prior_paths, load_priors
from common.errors import InputError
from dvi.config import AUTO, OPTIONS, PRESETS, Config, load_preset
from dvi.fitting.fit import build_module, fit_precision
from dvi.fitting.module import GRAPH_WARMUP, PHASES, ScoreDVI, standalone


def parse_overrides(text: str) -> dict[str, object]:
    """``"mc_samples=2,unet_width=32"`` -> configuration overrides by flat name (:data:`dvi.config.OPTIONS`),
    typed like the option (ranges are checked when applied)."""
    out: dict[str, object] = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in OPTIONS:
            raise SystemExit(f"error: unknown setting {key!r}; choose from {', '.join(OPTIONS)}")
        kind = OPTIONS[key].check.kind  # type: ignore[attr-defined]
        try:
            if value == AUTO:
                out[key] = AUTO
            elif kind is bool:
                out[key] = {"1": True, "true": True, "0": False, "false": False}[value.lower()]
            else:
                out[key] = kind(value)
        except (KeyError, ValueError):
            raise SystemExit(f"error: setting {key}={value}: expected a value like {OPTIONS[key].default!r}") from None
    return out


def configured(base: Config, text: str) -> Config:
    """``base`` with the overrides of ``text``; a value out of range is one error line."""
    try:
        return base.replace(**parse_overrides(text))
    except InputError as err:
        raise SystemExit(f"error: {err}") from None


def build(settings: Config, y: torch.Tensor, *, priors: list[BFDnCNN],
          device: str) -> tuple[ScoreDVI, torch.optim.Optimizer]:
    """A ScoreDVI module fitting the images ``y`` (B, C, H, W) at once, outside a Trainer."""
    module = standalone(build_module(settings, priors, y, seeds=range(len(y))), device=device)
    return module, module.configure_optimizers()


def time_steps(module: ScoreDVI, optimiser: torch.optim.Optimizer, *, steps: int, precision: str) -> float:
    """Seconds per step over ``steps`` timed steps (after one warm-up step)."""
    step = training_step(module, optimiser, precision=precision)
    if not module.automatic_optimization:  # graph-ready: the eager warm-up steps and the capture are not timed
        for _ in range(GRAPH_WARMUP):
            step()
    return seconds_per_step(step, device=module.device.type, steps=steps)


def training_step(module: ScoreDVI, optimiser: torch.optim.Optimizer, *, precision: str) -> Callable[[], None]:
    """One optimisation step as Lightning runs it (autocast for mixed precision)."""
    device = module.device.type

    def step() -> None:
        with autocast(precision, device=device):
            loss = module.training_step(0, 0)["loss"]
        if not module.automatic_optimization:  # the graph-ready step (--cuda-graphs) did the whole update
            return
        optimiser.zero_grad(set_to_none=True)
        with torch.profiler.record_function(PHASES["backward"]):
            loss.backward()
        with torch.profiler.record_function(PHASES["adam"]):
            optimiser.step()

    return step


def count_flops(step: Callable[[], None]) -> FlopCounterMode:
    """PyTorch's FlopCounterMode after one call of ``step`` (forward, backward, priors), counted per module.

    Count it on one image and multiply by B: the counter overcounts the backward of grouped
    convolutions (what vmap makes of B stacked nets; 10x instead of 4x for 4 groups, checked on
    torch 2.14), while the measured time per image does not grow with B."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter


def flop_per_step(step: Callable[[], None]) -> float:
    """Floating-point operations of one step (see :func:`count_flops`)."""
    return float(count_flops(step).get_total_flops())


def flop_by_phase(step: Callable[[], None]) -> dict[str, float]:
    """FLOP of one step by phase: ``nets`` (the forward operators inside the module's ``nets``), ``backward``
    (every ``*_backward`` operator: the nets' backward; the priors have none, the score unit supplies their
    gradient) and ``priors`` (the rest of the forward: the K prior calls). The ELBO and Adam are element-wise
    and count no FLOP in FlopCounterMode."""
    counts = count_flops(step).get_flop_counts()
    everything = counts.get("Global", {})
    backward = sum(n for op, n in everything.items() if "backward" in str(op))
    nets = sum(n for name, ops in counts.items() if name.endswith(".nets") and name.count(".") == 1
               for op, n in ops.items() if "backward" not in str(op))
    return {"nets": float(nets), "priors": float(sum(everything.values()) - nets - backward),
            "backward": float(backward)}


# operators that only make a view or read metadata: no kernel runs for them on a GPU
VIEW_OPS = frozenset({"view", "_unsafe_view", "permute", "squeeze", "unsqueeze", "detach", "transpose", "as_strided",
                      "expand", "slice", "select", "alias", "t", "unbind", "split", "split_with_sizes", "empty",
                      "lift_fresh", "promote_types", "_local_scalar_dense", "_reshape_alias", "unfold"})


class OperatorCounter(TorchDispatchMode):
    """Counts the ATen operators dispatched, apart from :data:`VIEW_OPS`: about one kernel launch each on a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func.overloadpacket.__name__ not in VIEW_OPS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def operators_per_step(step: Callable[[], None]) -> int:
    """Kernel-launching operators of one step (forward, backward, optimiser): what bounds a GPU step
    when the images are small and the host cannot launch kernels as fast as the GPU runs them."""
    with OperatorCounter() as counter:
        step()
    return counter.count


def profile_steps(step: Callable[[], None], *, device: str, steps: int) -> tuple[object, float]:
    """Run ``steps`` steps under torch.profiler (the step warmed up already); its events and the wall seconds
    per step."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
        wall = (time.perf_counter() - start) / steps
    return profiler.key_averages(), wall


def phase_rows(events: object, *, wall: float, steps: int, flop: dict[str, float]) -> list[tuple[str, float, float | None]]:
    """(phase, seconds per step, FLOP per step or None) for the :data:`PHASES` of a profiled step, then
    ``other`` (the wall time outside them: zeroing gradients, Python, the profiler's own cost)."""
    inclusive = {event.key: event.cpu_time_total / 1e6 / steps for event in events}  # type: ignore[attr-defined]
    rows = [(phase, inclusive.get(label, 0.0), flop.get(phase)) for phase, label in PHASES.items()]
    rows.append(("other", max(wall - sum(seconds for _, seconds, _ in rows), 0.0), None))
    return rows


def print_profile(step: Callable[[], None], *, size: int, label: str, device: str, steps: int,
                  flop: dict[str, float], peak: float | None) -> None:
    """Where one step's time goes, by phase: ms, share of the wall time, GFLOP, GFLOP/s and its fraction
    of ``peak`` (the measured matrix-multiply rate, GFLOP/s); on a GPU, also the busiest kernels. The same
    ``steps`` are first timed without the profiler (after one warm-up step), which costs a little itself."""
    plain = seconds_per_step(step, device=device, steps=steps)
    events, wall = profile_steps(step, device=device, steps=steps)
    table = Table(title=f"profile: {size}x{size} px, {label}, {steps} steps: {1000 * plain:.0f} ms per step, "
                        f"{1000 * wall:.0f} under torch.profiler")
    for column in ("phase", "ms/step", "share", "GFLOP/step", "GFLOP/s", "of sgemm"):
        table.add_column(column, justify="right")
    rows = phase_rows(events, wall=wall, steps=steps, flop=flop)
    for phase, seconds, count in rows:
        rate = count / seconds / 1e9 if count and seconds > 0 else None
        table.add_row(phase, f"{1000 * seconds:.1f}", f"{100 * seconds / wall:.0f}%",
                      "" if count is None else f"{count / 1e9:.2f}", "" if rate is None else f"{rate:.1f}",
                      "" if rate is None or not peak else f"{100 * rate / peak:.0f}%")
    total = sum(flop.values())
    table.add_row("step", f"{1000 * wall:.1f}", "100%", f"{total / 1e9:.2f}", f"{total / wall / 1e9:.1f}",
                  f"{100 * total / wall / 1e9 / peak:.0f}%" if peak else "")
    Console().print(table)
    if device == "cuda":
        print(events.table(sort_by="self_device_time_total", row_limit=15))  # type: ignore[attr-defined]


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_check(settings: Config, *, size: int, batches: list[int], priors: list[BFDnCNN], device: str,
                 precision: str) -> None:
    """Measured peak GPU memory of a few steps at each batch size B against :func:`dvi.fitting.memory.fit_memory_bytes`
    (what tile and batch sizes are chosen from); on a CPU only the model is printed."""
    from dvi.fitting.memory import fit_memory_bytes

    model_config = settings.replace(precision=precision, device="cpu" if device == "cpu" else "gpu")
    table = Table(title=f"peak memory at {size}x{size} px, {precision}: measured vs the model")
    for column in ("batch", "measured MiB", "model MiB", "model/measured"):
        table.add_column(column, justify="right")
    for batch in batches:
        model = fit_memory_bytes(model_config, priors, channels=3, height=size, width=size, images=batch) / 2**20
        measured = float("nan")
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        y = torch.rand(batch, 3, size, size, device=device)
        module, optimiser = build(settings, y, priors=priors, device=device)
        step = training_step(module, optimiser, precision=precision)
        for _ in range(GRAPH_WARMUP + 2):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
            measured = (torch.cuda.max_memory_allocated() - base) / 2**20
        del module, optimiser, step, y
        table.add_row(str(batch), f"{measured:.0f}", f"{model:.0f}", f"{model / measured:.2f}")
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=list(AUTOCAST), default=None,
                        help="autocast for every configuration (default: each one's precision setting, "
                             "resolved as a fit resolves it: auto is bf16-mixed on a GPU or a CPU with native bf16)")
    parser.add_argument("--batch", type=int, default=1, help="images fitted concurrently (B)")
    parser.add_argument("--priors", nargs="+", default=None,
                        help="prior files (default: the shipped RGB priors of the preset's --prior-set, as a fit)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="instead of timing: profile N steps at each size (torch.profiler) and print the time, "
                             "FLOP and GFLOP/s of each phase of the step (the last --compare setting)")
    parser.add_argument("--preset", choices=PRESETS, default="reference",
                        help="the settings --settings and --compare start from")
    parser.add_argument("--settings", default="",
                        help="configuration overrides for every configuration, e.g. mc_samples=2,unet_width=32")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                        help="two override strings timed alternately; prints B/A")
    parser.add_argument("--memory", type=int, nargs="+", default=None, metavar="B",
                        help="instead: measured peak memory vs the memory model at these batch sizes (first --sizes)")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True  # as in the fit (Trainer(benchmark=True))
    configs = [args.settings] if args.compare is None else list(args.compare)
    base = configured(load_preset(args.preset), args.settings)
    settings = {c: configured(base, c) for c in configs}
    method = settings[configs[-1]].method  # without --priors: the shipped RGB priors this configuration's fit loads
    priors = load_priors(chosen_prior_paths(args.priors, 3, prior_set=method.prior_set, components=method.components),
                         channels=3)
    accelerator = "cpu" if args.device == "cpu" else "gpu"
    precision = {c: args.precision or str(fit_precision(settings[c].replace(device=accelerator)))
                 for c in configs}
    for config, value in precision.items():
        if value not in AUTOCAST:
            raise SystemExit(f"error: precision {value!r} ({config or 'default'}): dvi_speed times "
                             f"{', '.join(AUTOCAST)}")
    if args.memory:
        config = configs[0]
        memory_check(settings[config], size=args.sizes[0], batches=args.memory, priors=priors, device=args.device,
                     precision=precision[config])
        return
    machine = torch.cuda.get_device_name() if args.device == "cuda" else cpu_description()
    print(f"{machine}; torch {torch.__version__}")
    peak = None
    if args.device == "cpu":
        peak = sgemm_gflops()
        nominal = nominal_peak_gflops()
        print(f"fp32 peak: sgemm (2048x2048 torch.mm) {peak:.0f} GFLOP/s measured"
              + (f", {nominal:.0f} GFLOP/s nominal (clock x 2 FMA units)" if nominal else ""))
    if args.profile:
        config = configs[-1]
        label = f"{config or 'default'} ({args.preset} preset), {precision[config]}, batch {args.batch}"
        for size in args.sizes:
            y = torch.rand(args.batch, 3, size, size, device=args.device)
            flop = {phase: args.batch * count for phase, count in flop_by_phase(training_step(
                *build(settings[config], y[:1], priors=priors, device=args.device), precision=precision[config])).items()}
            print_profile(training_step(*build(settings[config], y, priors=priors, device=args.device),
                                        precision=precision[config]),
                          size=size, label=label, device=args.device, steps=args.profile, flop=flop, peak=peak)
        return
    title = f"ScoreDVI step time on {args.device}, {torch.get_num_threads()} threads"
    table = Table(title=title)
    for column in ("size", "settings", "precision", "batch", "ms/step", "s/image", "images/s", "TFLOP/s", "ops/step",
                   "peak MB"):
        table.add_column(column, justify="right")
    for size in args.sizes:
        y = torch.rand(args.batch, 3, size, size, device=args.device)
        timings: dict[str, list[float]] = {c: [] for c in configs}
        models = {c: build(settings[c], y, priors=priors, device=args.device) for c in configs}
        flop = {c: args.batch * flop_per_step(training_step(
            *build(settings[c], y[:1], priors=priors, device=args.device), precision=precision[c])) for c in configs}
        for _ in range(2 if args.compare else 1):  # alternate A, B, A, B
            for config in configs:
                timings[config].append(time_steps(*models[config], steps=args.steps, precision=precision[config]))
        # counted after the timed steps: the first step also creates the optimiser state and casts the priors
        operators = {c: operators_per_step(training_step(*models[c], precision=precision[c])) for c in configs}
        for config in configs:
            seconds = min(timings[config])
            per_image = seconds * settings[config].method.steps / args.batch
            table.add_row(str(size), config or "default", precision[config], str(args.batch), f"{1000 * seconds:.0f}",
                          f"{per_image:.1f}", f"{1 / per_image:.3f}", f"{flop[config] / seconds / 1e12:.2f}",
                          str(operators[config]), f"{peak_memory_mb(args.device):.0f}")
        if args.compare:
            a, b = (min(timings[c]) for c in configs)
            table.add_row(str(size), "ratio B/A", "", "", f"{b / a:.3f}", "", "", "", "", "")
    Console().print(table)

if __name__ == "__main__":
    main()
