"""The benchmark scripts' helpers (the scripts themselves run outside the test suite)."""

import itertools

from benchmarks import _timing
from benchmarks.train_step import peak_tflops


def test_peak_tflops_by_device_kind():
    assert peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("TPU v5 lite") == 197.0
    assert peak_tflops("TPU v4") == 275.0
    assert peak_tflops("cpu") is None


def test_interleaved_medians_take_turns(monkeypatch):
    clock = itertools.count()
    monkeypatch.setattr(_timing.time, "perf_counter", lambda: float(next(clock)))
    order = []
    fns = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    got = _timing.interleaved_median_seconds(fns, repeats=3, warmup=1)
    assert order == ["a", "b"] + ["a", "b"] * 3  # warm-up, then strictly alternating
    assert got == {"a": 1.0, "b": 1.0}
