"""ScoreDVI LightningModule: one noisy image is a T-step "dataset" (method.md sections 3-4).

:class:`ScoreDVI` computes one step's loss from the whole :class:`dvi.config.Config`; what a fit produces
(the moving averages of the posterior mean and variance, whether the loss stayed finite, the last maps)
is kept by the :class:`PosteriorAverage` callback, which hands it over as a :class:`Posterior`.

A step runs one of two ways, with the same arithmetic (a CPU test checks the losses agree step by step):
eager (Lightning's automatic optimisation runs backward and Adam on the returned loss), or graph-ready
(``--cuda-graphs``, auto on a CUDA GPU): :meth:`ScoreDVI.graph_step` is the whole update (forward, K prior
calls, loss, backward, fused Adam) with no host synchronisation, recorded once as a CUDA graph and replayed
(:class:`CapturedStep`; the per-image noise generators are registered with the graph); the moving averages,
the finiteness check and the logging stay outside it. On a CPU the graph-ready step runs eagerly.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from common.bfdncnn import BFDnCNN
from common.metrics import ssim
from dvi.config import Config, to_dict
from dvi.method.elbo import Hyperpriors, LossTerms, negative_elbo
from dvi.method.score import expected_log_prior_surrogate
from dvi.method.variational import Maps, StackedNets, seeded_nets

NOISE_STREAM = 1_000_003  # offset of the Monte-Carlo noise seed from the initialisation seed
CHECK_EVERY = 50  # every this many steps a fit stops if no image's loss is finite any more
GRAPH_WARMUP = 3  # eager steps (on a side stream) before the step is recorded as a CUDA graph
GRAPH_TOLERANCE = 0.5  # relative change of a loss from the last warm-up to the first replay that means a bad graph
# torch.profiler labels of the phases of one step (what benchmarks/dvi_speed.py --profile reports); no cost unprofiled
PHASES = {"nets": "scoredvi/nets", "priors": "scoredvi/priors", "elbo": "scoredvi/elbo",
          "backward": "scoredvi/backward", "adam": "scoredvi/adam"}


class FitSteps(Dataset):
    """The T optimisation steps of a fit, as a dataset of step numbers: one batch per step.

    The noisy images themselves live on the module (:class:`ScoreDVI`'s ``noisy`` buffer), moved to the
    device once, so a step carries no image from the host (on a GPU a per-step copy of a pageable
    host tensor would also make the host wait for the device).
    """

    def __init__(self, *, steps: int) -> None:
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> int:
        return index


def steps_loader(*, steps: int) -> DataLoader:
    """A DataLoader yielding the step numbers 0 .. ``steps`` - 1, one per batch."""
    return DataLoader(FitSteps(steps=steps), batch_size=None, shuffle=False, num_workers=0)


def pad_to_multiple(y: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Reflect-pad (N, C, H, W) at the bottom/right to multiples of ``multiple``; return the original size."""
    height, width = y.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        y = F.pad(y, (0, pad_w, 0, pad_h), mode="reflect")
    return y, (height, width)


def full_precision(x: Tensor) -> Tensor:
    """bf16/fp16 network outputs -> float32 for the loss; float32 and float64 stay as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def mean_sigma(maps: Maps) -> Tensor:
    """Per image (B,): the mean over components and elements of the posterior std sigma_k ([0,1] scale)."""
    return (0.5 * maps.log_var).exp().flatten(1).mean(1)


def detached(terms: LossTerms) -> LossTerms:
    """``terms`` without their autograd history."""
    return LossTerms(*(getattr(terms, item.name).detach() for item in dataclasses.fields(terms)))


class Step(NamedTuple):
    """What one optimisation step leaves for the logging and the posterior average (all detached)."""

    terms: LossTerms
    maps: Maps


def graphs_supported(device: torch.device) -> bool:
    """Whether the graph-ready step is recorded as a CUDA graph on ``device`` (else it runs eagerly)."""
    return device.type == "cuda" and hasattr(torch.cuda.CUDAGraph, "register_generator_state")


def wants_graph_step(config: Config, *, device: torch.device, precision: str | int | None = None) -> bool:
    """Whether a fit runs the graph-ready step (:meth:`ScoreDVI.graph_step`, recorded as a CUDA graph on a GPU):
    ``config.runtime.cuda_graphs``, where auto (None) is on for a CUDA device; never under 16-mixed precision,
    whose gradient scaler checks for infinities on the host at every step (the eager step handles it)."""
    wanted = config.runtime.cuda_graphs
    if wanted is None:
        wanted = device.type == "cuda"
    return bool(wanted) and str(precision) not in ("16-mixed", "16")


class StepCounter(torch.optim.Optimizer):
    """The optimiser Lightning sees when the module updates its weights itself (manual optimisation): its
    ``step(closure)`` only runs the closure, which is the whole step (forward, backward and the real Adam
    update, possibly a CUDA-graph replay), so that Lightning still counts the steps (``global_step``)."""

    def __init__(self, inner: torch.optim.Optimizer) -> None:
        params = [p for group in inner.param_groups for p in group["params"]]
        super().__init__(params, {"lr": inner.defaults["lr"]})
        self.inner = inner

    def step(self, closure: Callable[[], object] | None = None) -> object:  # type: ignore[override]
        return None if closure is None else closure()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Nothing: the step clears the real gradients itself (a captured graph must keep its own)."""


class CapturedStep:
    """Runs ``step`` (no arguments, returns tensors) eagerly ``warmup`` times on a side stream, then records it as one
    CUDA graph (``torch.cuda.CUDAGraph``, with each of ``generators`` registered so that every replay draws fresh
    random numbers) and from then on replays it; the returned tensors are the graph's static outputs, overwritten
    by the next replay. ``zero_grad`` clears the gradients before each eager call and once before the capture
    (the captured backward then writes the same gradient tensors at every replay).

    Fallback: if the capture or the first replay raises, or the first replay's losses are not finite where the last
    warm-up's were or differ from them by more than ``GRAPH_TOLERANCE`` (relative), the state is put back as it was
    before the capture (``snapshot()`` / ``restore(saved)``: weights and optimiser) and this and every later call of
    the fit runs the eager step, with one warning. :attr:`path` says which ran: ``cuda-graph`` or ``eager-fallback``.
    """

    def __init__(self, step: Callable[[], Step], *, generators: Sequence[torch.Generator],
                 zero_grad: Callable[[], None], snapshot: Callable[[], object] = lambda: None,
                 restore: Callable[[object], None] = lambda saved: None, warmup: int = GRAPH_WARMUP) -> None:
        self.step, self.generators, self.zero_grad, self.warmup = step, list(generators), zero_grad, warmup
        self.snapshot, self.restore = snapshot, restore
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: Step | None = None
        self.last_warmup: Tensor | None = None
        self.path = "cuda-graph"

    def eager(self) -> Step:
        self.zero_grad()
        return self.step()

    def __call__(self) -> Step:
        self.calls += 1
        if self.path == "eager-fallback":
            return self.eager()
        if self.graph is None and self.calls <= self.warmup:
            with _side_stream():
                out = self.eager()
            self.last_warmup = out.terms.total.detach().clone()
            return out
        if self.graph is not None:
            self.graph.replay()
            assert self.static is not None
            return self.static
        saved = self.snapshot()
        try:
            graph = torch.cuda.CUDAGraph()
            for generator in self.generators:
                graph.register_generator_state(generator)
            self.zero_grad()
            with torch.cuda.graph(graph):
                self.static = self.step()
            graph.replay()  # capture records the kernels; this replay runs this step
            problem = replay_problem(self.static.terms.total, self.last_warmup)
        except Exception as err:  # noqa: BLE001 - any failure of capture or replay falls back to the eager step
            problem = f"{type(err).__name__}: {' '.join(str(err).split())[:160]}"
        if not problem:
            self.graph = graph
            return self.static
        self.path, self.graph, self.static = "eager-fallback", None, None
        self.restore(saved)
        warnings.warn(f"CUDA graph step failed ({problem}); this fit continues with the eager step "
                      "(--cuda-graphs false skips the graph)", RuntimeWarning, stacklevel=2)
        return self.eager()


def replay_problem(replayed: Tensor, warmup: Tensor | None) -> str:
    """Why the first replayed losses (B,) are not to be trusted against the last warm-up step's ("" if they are):
    not finite where the warm-up's were, or more than ``GRAPH_TOLERANCE`` (relative) away from them."""
    if warmup is None:
        return ""
    replayed, warmup = replayed.detach().double(), warmup.detach().double()
    finite = torch.isfinite(warmup)
    if not bool(torch.isfinite(replayed[finite]).all()):
        return "the first replay's loss is not finite"
    change = ((replayed - warmup).abs() / warmup.abs().clamp_min(1e-12))[finite]
    if change.numel() and float(change.max()) > GRAPH_TOLERANCE:
        return f"the first replay's loss is {float(change.max()):.0%} away from the eager warm-up's"
    return ""


def _side_stream() -> contextlib.AbstractContextManager[object]:
    """A side stream for the eager warm-up on a GPU (as CUDA graph capture wants); nothing on a CPU."""
    if not torch.cuda.is_available():
        return contextlib.nullcontext()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())

    @contextlib.contextmanager
    def on_side() -> Iterator[None]:
        with torch.cuda.stream(side):
            yield
        torch.cuda.current_stream().wait_stream(side)

    return on_side()


class ScoreDVI(L.LightningModule):
    """Per-image variational inference with K score priors, for B same-sized images at once.

    Args:
        config: the whole configuration; the method's K, M, lr, alpha0, d and the nets' sizes are read from it,
            and scalars are logged every ``config.log_interval`` steps, on the steps Lightning writes them (the
            Trainer's ``log_every_n_steps`` takes the same value); each log waits for the device.
        priors: K frozen BF-DnCNNs (component k uses ``priors[k % len(priors)]``); folded to
            plain conv/ReLU stacks, so they have no train/eval state and take no gradients.
        noisy: the B noisy images (B, C, H, W) in [0,1], fitted together (a buffer: moved to the device once).
        seeds: one per image; image b's nets are initialised from
            ``torch.manual_seed(seeds[b])`` and its Monte-Carlo noise comes from its own generator,
            so a batch of B fits computes what B one-image fits with those seeds compute.
        weights: lambda(y) per image. beta0s: the Gamma hyperprior rate per image. deltas: per image, logged.
        clean: references (B, C, H, W) for logging PSNR/SSIM, or None.
    Images are in [0,1]. The nets stay in training mode (batch norm on the one image), as in the reference.
    Without a Trainer (benchmarks, memory probes: :func:`standalone`) a step logs nothing.
    """

    def __init__(self, config: Config, priors: Sequence[BFDnCNN], noisy: Tensor, *, seeds: Sequence[int] = (0,),
                 weights: Sequence[float] = (1.0,), beta0s: Sequence[float] = (0.02,),
                 deltas: Sequence[float] = (float("nan"),), clean: Tensor | None = None) -> None:
        super().__init__()
        if not len(noisy) == len(seeds) == len(weights) == len(beta0s) == len(deltas):
            raise ValueError(f"seeds, weights, beta0s and deltas need one entry per image ({len(noisy)}), got "
                             f"{len(seeds)}, {len(weights)}, {len(beta0s)}, {len(deltas)}")
        self.config = config
        self.save_hyperparameters({**to_dict(config), "seeds": list(seeds)})
        self.seeds = list(seeds)
        self.priors = nn.ModuleList(prior.folded().requires_grad_(False) for prior in priors)
        nets = config.nets
        self.nets = StackedNets(seeded_nets(self.seeds, channels=noisy.shape[1], components=config.method.components,
                                            unet_base=nets.unet_width, unet_depth=nets.unet_depth,
                                            aux_layers=nets.aux_layers, aux_features=nets.aux_features))
        self.register_buffer("noisy", noisy, persistent=False)
        self.register_buffer("clean", clean, persistent=False)
        # per-image lambda, hyperparameters and delta on the device, so neither the loss nor the logging needs a
        # host-to-device copy; float64 here (exact), the nets' dtype from on_fit_start
        count = len(self.seeds)
        for name, value in (("weight", list(weights)), ("alpha0", [config.method.alpha0] * count),
                            ("beta0", list(beta0s)), ("dirichlet", [config.method.dirichlet] * count),
                            ("delta", list(deltas))):
            self.register_buffer(f"hyper_{name}", torch.tensor(value, dtype=torch.float64), persistent=False)
        self.generators: list[torch.Generator] = []
        self.adam: torch.optim.Optimizer | None = None  # the real optimiser of the graph-ready step
        self._step: Callable[[], Step] | None = None

    def forward(self, y: Tensor) -> Maps:
        """All variational outputs (B, K, C, H, W) for y (B, C, H, W), H and W padded to the U-Net's multiple."""
        return self.nets(y)

    def on_fit_start(self) -> None:
        dtype = next(self.nets.parameters()).dtype  # float64 under "64-true", else float32
        for name in ("weight", "alpha0", "beta0", "dirichlet", "delta"):
            setattr(self, f"hyper_{name}", getattr(self, f"hyper_{name}").to(dtype))
        if self.config.runtime.channels_last:  # NHWC convolutions: faster on CPUs (oneDNN) and GPUs (tensor cores)
            self.priors.to(memory_format=torch.channels_last)
        # each image's Monte-Carlo noise: its own stream, on the device, apart from the init stream
        self.generators = [torch.Generator(device=self.device).manual_seed(seed + NOISE_STREAM) for seed in self.seeds]

    def maps(self, y: Tensor) -> Maps:
        """The nets' maps for y (B, C, H, W), at y's size and in at least float32."""
        padded, (height, width) = pad_to_multiple(y, 2 ** self.config.nets.unet_depth)
        return Maps(*(full_precision(value[..., :height, :width]) for value in self(padded)))

    def training_step(self, batch: int, batch_idx: int) -> dict[str, Tensor | Maps]:
        """One step of the fit of all B images (``batch`` is only the step number: the images are ``noisy``).

        Returns ``loss`` (the sum over images of the negative ELBO, what is minimised), ``totals`` (B,) each
        image's own, and the detached ``maps`` (what :class:`PosteriorAverage` averages). With automatic
        optimisation (the eager step) Lightning runs backward and Adam on ``loss``; with the graph-ready step
        (:meth:`configure_optimizers` chose it) the whole update has happened when this returns."""
        self._priors_in_autocast_dtype()
        if self.automatic_optimization:
            terms, maps = self.loss_terms()
            loss = terms.total.sum()
            terms, maps = detached(terms), Maps(*(m.detach() for m in maps))
        else:
            outcome: list[Step] = []

            def closure() -> None:
                outcome.append(self.run_step())

            if self._trainer is not None:
                self.optimizers().step(closure=closure)  # type: ignore[union-attr] # counts the step (global_step)
            else:
                closure()
            terms, maps = outcome[0]
            loss = terms.total.sum()
        # on the steps Lightning writes its logs ((step + 1) % log_every_n_steps == 0), so what it writes is fresh
        if self._trainer is not None and (self.global_step + (1 if self.automatic_optimization else 0)) % \
                self.config.log_interval == 0:
            self._log_step(terms, maps)
        return {"loss": loss, "totals": terms.total.detach(), "maps": maps}

    def loss_terms(self) -> tuple[LossTerms, Maps]:
        """Forward of one step: the nets' maps for ``noisy``, the K priors on M samples each, the negative ELBO."""
        y = self.noisy
        with torch.profiler.record_function(PHASES["nets"]):
            maps = self.maps(y)
        with torch.profiler.record_function(PHASES["priors"]):
            surrogate = expected_log_prior_surrogate(maps.mu, maps.log_var, self.priors,
                                                     samples=self.config.method.mc_samples, generators=self.generators)
        with torch.profiler.record_function(PHASES["elbo"]):
            hyper = Hyperpriors(alpha0=self.hyper_alpha0, beta0=self.hyper_beta0, d=self.hyper_dirichlet)
            terms = negative_elbo(y=full_precision(y), **maps._asdict(), expected_log_prior=surrogate,
                                  weight=self.hyper_weight, hyper=hyper)
        return terms, maps

    def graph_step(self) -> Step:
        """The whole optimisation step with no host synchronisation: forward (:meth:`loss_terms`), backward of the
        summed loss, the fused Adam update. This is what a CUDA graph records; the gradients must have been
        cleared (or, in a graph, left as the capture made them). Logging and the moving averages stay outside."""
        assert self.adam is not None, "graph_step needs the optimiser of configure_optimizers"
        terms, maps = self.loss_terms()
        with torch.profiler.record_function(PHASES["backward"]):
            terms.total.sum().backward()
        with torch.profiler.record_function(PHASES["adam"]):
            self.adam.step()
        return Step(detached(terms), Maps(*(m.detach() for m in maps)))

    def run_step(self) -> Step:
        """One graph-ready step: recorded once and replayed on a CUDA device, run eagerly elsewhere."""
        if self._step is None:
            assert self.adam is not None
            adam = self.adam

            def clear() -> None:
                adam.zero_grad(set_to_none=True)

            if graphs_supported(self.noisy.device):
                nets = self.nets

                def snapshot() -> object:
                    return copy.deepcopy(nets.state_dict()), copy.deepcopy(adam.state_dict())

                def restore(saved: object) -> None:
                    weights, state = saved  # type: ignore[misc]
                    nets.load_state_dict(weights)
                    adam.load_state_dict(state)

                self._step = CapturedStep(self.graph_step, generators=self.generators, zero_grad=clear,
                                          snapshot=snapshot, restore=restore)
            else:
                def eager() -> Step:
                    clear()
                    return self.graph_step()

                self._step = eager
        return self._step()

    @property
    def step_path(self) -> str:
        """Which step ran: ``eager`` (Lightning's automatic optimisation), ``graph-ready`` (the graph step run
        eagerly, on a CPU), ``cuda-graph`` (recorded and replayed) or ``eager-fallback`` (the graph failed)."""
        if self.automatic_optimization:
            return "eager"
        return self._step.path if isinstance(self._step, CapturedStep) else "graph-ready"

    def _priors_in_autocast_dtype(self) -> None:
        """Under autocast, store the frozen priors in its dtype (once): autocast would otherwise cast every
        prior weight again at every step (60 casts per step for K = 3), to the same values."""
        device = self.noisy.device.type
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            first = next(self.priors.parameters(), None)
            if first is not None and first.dtype != dtype:
                self.priors.to(dtype)

    def _log_step(self, terms: LossTerms, maps: Maps) -> None:
        """Scalars averaged over the B images (B = 1: the image's own values)."""
        values = {"loss/total": terms.total.mean(), "loss/L1": terms.l1.mean(), "loss/L2_closed": terms.l2_closed.mean(),
                  "loss/L3": terms.l3.mean(), "loss/L4": terms.l4.mean(), "loss/L5": terms.l5.mean(),
                  "fit/mean_sigma": mean_sigma(maps).mean(), "fit/lambda": self.hyper_weight.mean(),
                  "fit/delta": self.hyper_delta.mean()}
        self.log_dict(values, on_step=True, on_epoch=False, batch_size=1)
        self.log("loss", values["loss/total"], on_step=True, on_epoch=False, batch_size=1, prog_bar=True, logger=False)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """One Adam over the stacked weights: element-wise, so equal to one Adam per image. The fused
        implementation updates all weights in a few kernels (the loop one launches about ten per weight).

        Where :func:`wants_graph_step` says so, the module switches to manual optimisation and runs
        :meth:`graph_step` itself (Adam ``capturable`` on a GPU, so that its step count stays on the device
        inside a graph); Lightning then steps a :class:`StepCounter`."""
        device = self.noisy.device
        precision = self._trainer.precision if self._trainer is not None else None
        graph = wants_graph_step(self.config, device=device, precision=precision)
        adam = torch.optim.Adam(self.nets.parameters(), lr=self.config.method.lr, fused=True,
                                capturable=graph and device.type == "cuda")
        if not graph:
            return adam
        self.automatic_optimization = False
        self.adam, self._step = adam, None
        return StepCounter(adam)


@dataclass(frozen=True)
class Posterior:
    """What a run of :class:`ScoreDVI` produced, per image b of B (tensors on the fit's device).

    ``mean`` (B, C, H, W): EMA of mu_bar = sum_k pi_k mu_k; ``variance``: EMA of var_bar = sum_k pi_k^2 sigma2_k;
    ``mean_sigma`` (B,): the last step's mean sigma_k; ``finite`` (B,): whether every step's loss was finite;
    ``component_means`` / ``component_weights`` (B, K, C, H, W): the last step's mu_k and pi_k.
    """

    mean: Tensor
    variance: Tensor
    mean_sigma: Tensor
    finite: Tensor
    component_means: Tensor
    component_weights: Tensor


class PosteriorAverage(Callback):
    """Keeps the output of a fit step by step: the moving averages (weight ``config.method.ema`` on the old value,
    started from y and the first var_bar), the finiteness of each image's loss, the last maps; logs PSNR against
    the references with the module's scalars and TensorBoard images every ``config.runtime.image_every`` steps.
    Every ``CHECK_EVERY`` steps it stops the fit (FloatingPointError) if no image's loss is finite any more."""

    def __init__(self) -> None:
        self.mean: Tensor | None = None
        self.variance: Tensor | None = None
        self.finite: Tensor | None = None
        self.last: Maps | None = None

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, module: ScoreDVI, outputs: dict, batch: int,  # type: ignore[override]
                           batch_idx: int) -> None:
        maps, totals, config = outputs["maps"], outputs["totals"], module.config
        self.finite = torch.isfinite(totals) if self.finite is None else self.finite & torch.isfinite(totals)
        step = batch_idx  # one epoch of T batches: the batch index is the step
        if (step + 1) % CHECK_EVERY == 0 and not bool(self.finite.any()):
            raise FloatingPointError(f"the loss became {totals.tolist()} by step {step}")
        mean = (maps.pi * maps.mu).sum(1)
        variance = (maps.pi.square() * maps.log_var.exp()).sum(1)
        if self.mean is None:
            self.mean, self.variance = full_precision(module.noisy), variance
        a = config.method.ema
        self.mean = a * self.mean + (1 - a) * mean
        self.variance = a * self.variance + (1 - a) * variance
        self.last = maps
        if module.clean is not None and (step + 1) % config.log_interval == 0:
            mse = (self.mean.clamp(0, 1) - module.clean).square().flatten(1).mean(1)
            module.log("fit/psnr", (-10 * torch.log10(mse.clamp_min(1e-12))).mean(), on_step=True, on_epoch=False,
                       batch_size=1)
        every = config.runtime.image_every
        if every and (step + 1) % every == 0:
            self._log_images(trainer, module, step)

    def _log_images(self, trainer: L.Trainer, module: ScoreDVI, step: int) -> None:
        experiment = getattr(trainer.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_image") or self.last is None:
            return
        count = len(module.seeds)
        for b in range(count):
            tag = "" if count == 1 else f"/{b}"
            experiment.add_image(f"image/noisy{tag}", module.noisy[b].float().clamp(0, 1), step)
            experiment.add_image(f"image/estimate{tag}", self.mean[b].clamp(0, 1), step)
            var = self.variance[b]
            experiment.add_image(f"image/uncertainty{tag}", (var / var.max().clamp_min(1e-12)).sqrt(), step)
            for k in range(self.last.pi.shape[1]):
                experiment.add_image(f"pi/component_{k}{tag}", self.last.pi[b, k], step)
            if module.clean is not None:
                experiment.add_scalar(f"fit/ssim{tag}", ssim(self.mean[b], module.clean[b]), step)

    def posterior(self) -> Posterior:
        """The fit's result; call after ``trainer.fit``."""
        if self.mean is None or self.last is None or self.finite is None:
            raise RuntimeError("the fit ran no step")
        return Posterior(mean=self.mean, variance=self.variance, mean_sigma=mean_sigma(self.last).cpu(),
                         finite=self.finite.cpu(), component_means=self.last.mu, component_weights=self.last.pi)


def standalone(module: ScoreDVI, *, device: str | torch.device) -> ScoreDVI:
    """``module`` on ``device``, ready for ``training_step`` calls without a Trainer (benchmarks, memory probes);
    such steps log nothing."""
    module = module.to(device)
    module.on_fit_start()
    return module
