"""benchmarks.prior_throughput on a tiny batch: both rates measured, FLOPs as the network's convolutions."""

from __future__ import annotations

from benchmarks import prior_throughput


def test_measure_times_both_steps_and_counts_forward_and_backward_flops() -> None:
    batch, patch = 2, 8
    bare, pipeline, flops = prior_throughput.measure(device="cpu", precision="32-true", batch=batch, patch=patch,
                                                     steps=1, warmup=1, repeats=2, images=2, image_size=16)
    assert bare > 0 and pipeline > 0
    widths = [3] + [64] * 19 + [3]
    forward = sum(2 * 9 * a * b for a, b in zip(widths, widths[1:])) * batch * patch * patch
    first_input_grad = 2 * 9 * 3 * 64 * batch * patch * patch  # the input needs no gradient
    assert flops == 3 * forward - first_input_grad
