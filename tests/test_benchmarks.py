"""The benchmark scripts' helpers (the scripts themselves run outside the test suite)."""

import itertools

import pytest

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


def test_torch_step_sides_run_in_their_own_processes():
    pytest.importorskip("torch")
    from benchmarks import torch_step

    common = ("--settings=cifar10", "--sizes=T", "--batch=2")
    jax_side = torch_step.Worker("--serve=jax", *common)
    try:
        info = jax_side.info
        assert (info["tokens"], info["features"]) == (64, 24)  # CIFAR-10 DCT: 64 tokens x 24
        assert info["keeps_host_memory"] is True  # the launcher's allocator setting
        torch_side = torch_step.Worker(
            "--serve=torch", *common, f"--tokens={info['tokens']}", f"--features={info['features']}"
        )
        try:
            assert torch_side.info["keeps_host_memory"] is False
            assert torch_side.info["version"].startswith("2.")
            t = _timing.interleaved_median_seconds(
                {"jax": jax_side.step, "torch": torch_side.step}, repeats=2, warmup=1
            )
            assert t["jax"] > 0 and t["torch"] > 0
        finally:
            torch_side.close()
    finally:
        jax_side.close()
    assert jax_side.proc.returncode == 0 and torch_side.proc.returncode == 0


def test_torch_jit_step_sides_build_the_same_model():
    """The JiT comparison's two workers: the same parameter count, SF on, both step."""
    pytest.importorskip("torch")
    import json

    from benchmarks import torch_jit_step

    common = ("--settings=t_32", "--batch=2", "--sf=1")
    jax_side = torch_jit_step.Worker("--serve=jax", *common, script=torch_jit_step.__file__)
    try:
        facts = {k: v for k, v in jax_side.info.items() if k != "version"}
        assert (facts["resolution"], facts["patch"], facts["num_classes"]) == (32, 8, 1000)
        torch_side = torch_jit_step.Worker(
            "--serve=torch", *common, f"--facts={json.dumps(facts)}",
            script=torch_jit_step.__file__,
        )  # fmt: skip
        try:
            assert torch_side.info["params"] == facts["params"]
            t = _timing.interleaved_median_seconds(
                {"jax": jax_side.step, "torch": torch_side.step}, repeats=2, warmup=1
            )
            assert t["jax"] > 0 and t["torch"] > 0
        finally:
            torch_side.close()
    finally:
        jax_side.close()
    assert jax_side.proc.returncode == 0 and torch_side.proc.returncode == 0
