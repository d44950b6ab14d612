"""The graph-ready step (the whole update in one function, what a CUDA graph records) equals the eager step."""

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from common.prior_files import load_prior
from dvi.config import Config
from dvi.fitting.fit import fit_images
from dvi.fitting.module import ScoreDVI, StepCounter, wants_graph_step
from tests.dvi.test_fit import SMALL, noisy_pair


class Record(Callback):
    """Each step's per-image losses, the optimisation mode and the step count Lightning kept."""

    def __init__(self) -> None:
        self.totals: list[torch.Tensor] = []
        self.seen: dict[str, object] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.totals.append(outputs["totals"].clone())

    def on_train_end(self, trainer, module):
        self.seen = {"automatic": module.automatic_optimization, "global_step": trainer.global_step,
                     "optimiser": type(trainer.optimizers[0])}


@pytest.mark.parametrize("precision", ["bf16-mixed"])  # autocast, as on a GPU
def test_graph_ready_step_gives_the_eager_losses_step_by_step(tiny_priors, tmp_path, monkeypatch, precision):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    prior, _ = load_prior(tiny_priors[3], channels=3)
    images = [noisy_pair(seed=seed)[1] for seed in (3, 4)]  # two images fitted together (vmap)
    settings = SMALL.replace(steps=6, log_every=3, precision=precision)
    runs = {}
    for graphs in (False, True):
        record = Record()
        results = fit_images(images, [prior, prior], settings.replace(cuda_graphs=graphs), callbacks=[record],
                             name=f"graphs-{graphs}")
        runs[graphs] = record, results
    (eager, eager_out), (ready, ready_out) = runs[False], runs[True]
    assert eager.seen == {"automatic": True, "global_step": 6, "optimiser": torch.optim.Adam}
    assert ready.seen == {"automatic": False, "global_step": 6, "optimiser": StepCounter}
    assert len(eager.totals) == len(ready.totals) == 6
    for step, (a, b) in enumerate(zip(eager.totals, ready.totals)):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=f"step {step}")  # bitwise
    assert not torch.equal(eager.totals[0], eager.totals[-1])  # the weights did move
    for a, b in zip(eager_out, ready_out):
        torch.testing.assert_close(b.denoised, a.denoised, rtol=0, atol=1e-6)
    logged = {}
    for graphs in (False, True):
        points = EventAccumulator(str(tmp_path / "runs" / "dvi" / f"graphs-{graphs}")).Reload().Scalars("loss/total")
        logged[graphs] = [(point.step, point.value) for point in points]
    assert [step for step, _ in logged[True]] == [step for step, _ in logged[False]] == [2, 5]
    assert [value for _, value in logged[True]] == pytest.approx([value for _, value in logged[False]], abs=1e-6)


def test_when_the_graph_ready_step_is_used():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    auto, on, off = Config(), Config().replace(cuda_graphs=True), Config().replace(cuda_graphs=False)
    assert not wants_graph_step(auto, device=cpu) and wants_graph_step(auto, device=cuda)
    assert wants_graph_step(on, device=cpu) and not wants_graph_step(off, device=cuda)
    assert not wants_graph_step(on, device=cuda, precision="16-mixed")  # the gradient scaler syncs every step
    assert wants_graph_step(on, device=cuda, precision="bf16-mixed")


def test_graph_ready_step_runs_without_a_trainer(tiny_priors):
    """Benchmarks drive the module without a Trainer: ``training_step`` then does the whole update itself."""
    from dvi.fitting.fit import build_module
    from dvi.fitting.module import standalone

    prior, _ = load_prior(tiny_priors[3], channels=3)
    y = noisy_pair(seed=5)[1][None, :, :32, :32]
    module = standalone(build_module(SMALL.replace(cuda_graphs=True), [prior], y, seeds=[0]), device="cpu")
    assert isinstance(module.configure_optimizers(), StepCounter) and not module.automatic_optimization
    before = [p.detach().clone() for p in module.nets.parameters()]
    out = module.training_step(0, 0)
    assert not out["loss"].requires_grad and torch.isfinite(out["totals"]).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, module.nets.parameters()))
    assert isinstance(module, ScoreDVI)


def test_a_failing_capture_falls_back_to_the_eager_step_with_one_warning(tiny_priors, monkeypatch):
    """The CUDA-graph path on the CPU: the capture is made to fail; the fit goes on eagerly, warns once and
    records ``eager-fallback`` as its step path (the results row's ``step_path``)."""
    import dvi.fitting.module

    class Broken:
        def __init__(self) -> None:
            raise RuntimeError("capture failed\non purpose")

    monkeypatch.setattr(dvi.fitting.module, "graphs_supported", lambda device: True)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Broken)
    prior, _ = load_prior(tiny_priors[3], channels=3)
    image = noisy_pair(seed=3)[1]
    settings = SMALL.replace(steps=6, cuda_graphs=True)
    with pytest.warns(RuntimeWarning, match="CUDA graph step failed.*eager step") as caught:
        [fallback] = fit_images([image], [prior], settings, name="fallback")
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning) and "CUDA graph" in str(w.message)]) == 1
    assert "\n" not in str(caught[0].message)
    assert fallback.step_path == "eager-fallback" and torch.isfinite(fallback.denoised).all()
    [eager] = fit_images([image], [prior], settings.replace(cuda_graphs=False), name="eager")
    assert eager.step_path == "eager"
