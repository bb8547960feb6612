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


# ---- DCTransformer rows of benchmarks/train_step.py (the autoregressive family) ---------------


def test_dct_train_step_rows_report_tokens_and_flops(tmp_path, capsys):
    """A tiny dct_quickstart row (size T, one example per device): timed on a real batch, fields
    present and sane."""
    import json

    import jax

    from benchmarks import train_step

    out = tmp_path / "dct.json"
    batch = jax.device_count()  # the tests' 8 host devices
    train_step.main(["--settings=dct_quickstart", "--sizes=T", f"--batch={batch}", f"--json={out}"])
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["setting"], row["model"], row["family"]) == (
        "dct_quickstart", "dctransformer-T", "autoregressive",
    )  # fmt: skip
    assert (row["resolution"], row["block_size"], row["grid"]) == (32, 4, "8x8")
    assert row["slots"] == row["chunk_size"] + 32 and row["max_seq_len"] == 1537
    assert row["gflops_per_chunk"] > 0 and row["params"] > 0
    assert row["step_s"] > 0 and row["tokens_per_s"] > 0
    assert 0 < row["tokens_per_chunk"] <= row["chunk_size"]
    assert row["tokens_per_s"] <= row["tokens_per_s_bound"] * (1 + 1e-9)
    assert row["tokens_per_s"] == pytest.approx(row["tokens_per_chunk"] * row["chunks_per_s"])
    assert row["temp_bytes"] > 0 and row["argument_bytes"] > 0
    if jax.default_backend() == "cpu":
        assert row["mfu"] is None
    header = capsys.readouterr().out
    assert "gflops_per_chunk" in header and "tokens_per_s_bound" in header


def test_dct_memory_check_follows_the_chunk_not_the_sequence():
    """Two resolutions with the same DCT grid (32 px B=4, 64 px B=8): L_max grows 4x, the step's
    temporary memory stays put (only the encoder-image input and the channel vocabulary grow)."""
    import jax

    from benchmarks import train_step

    assert train_step.parse_memory_points("384,768/16", 8) == [(384, 8), (768, 16)]
    assert train_step.default_memory_points("lsun") == [(384, 8), (768, 16), (768, 8)]
    batch = jax.device_count()  # one example per device, as the check's per-device batch
    rows = train_step.memory_check(
        "lsun", [(32, 4), (64, 8)], batch, size="T", chunk=(48, 16), via_loop=False
    )  # the loop's step compiled once per point (via_loop=True adds its logging variant)
    a, b = rows
    assert a["grid"] == b["grid"] == "8x8" and a["slots"] == b["slots"] == 64
    assert b["max_seq_len"] == 4 * (a["max_seq_len"] - 1) + 1
    assert b["max_seq_len_ratio"] == pytest.approx(4.0, rel=1e-3)
    assert b["encoder_image_ratio"] == 4.0
    assert a["temp_bytes"] > 0 and a["argument_bytes"] > 0 and a["per_device_batch"] == 1
    assert b["temp_ratio"] == pytest.approx(1.0, abs=0.1)  # measured: 1.02
    assert a["gflops_per_chunk"] > 0


# ----------------------------------------------------------------------------- DCTransformer
# benchmarks/torch_dctransformer_step.py: dctjax's autoregressive train step against PyTorch.


def test_torch_dctransformer_step_sides_agree(tmp_path):
    """Both workers build the same model from the same initial parameters and batch (real
    training examples): equal parameter counts, the same first losses, every part runs."""
    pytest.importorskip("torch")
    import numpy as np

    from benchmarks import torch_dctransformer_step as bench

    c = bench.dct_config("t")
    batch = bench.make_batch(c)
    assert batch["input_mask"].shape == (2, 32) and batch["loss_mask"].any()
    path = str(tmp_path / "t.npz")
    np.savez(path, **batch)
    jax_side, torch_side = bench.start_workers("t", c.batch_size, path, torch_threads=1)
    try:
        assert torch_side.info["params"] == jax_side.info["params"]
        assert jax_side.info["keeps_host_memory"] is True
        assert torch_side.info["keeps_host_memory"] is False
        assert np.isclose(torch_side.info["lr_at_10"], jax_side.info["lr_at_10"], rtol=1e-6)
        steps = range(4)  # LR 0, 5e-4, 1e-3, 1e-3 (a 2-step warm-up), Adam, clip 1
        jax_losses = [jax_side.part("step") for _ in steps]
        torch_losses = [torch_side.part("step") for _ in steps]
        np.testing.assert_allclose(jax_losses, torch_losses, rtol=2e-4)
        assert jax_losses[-1] < jax_losses[0] - 0.05  # the updates are not trivial
        for part in ("forward", "grad", "attention"):
            jax_side.part(part)
            torch_side.part(part)
        t = _timing.interleaved_median_seconds(
            {"jax": jax_side.step, "torch": torch_side.step}, repeats=2, warmup=0
        )
        assert t["jax"] > 0 and t["torch"] > 0
    finally:
        jax_side.close()
        torch_side.close()
    assert jax_side.proc.returncode == 0 and torch_side.proc.returncode == 0


# ---- benchmarks/quality_small.py: the proxy Frechet distance of each kind ----------------------


def test_quality_small_reports_the_dctransformer_beside_dctdiff(tmp_path, monkeypatch, capsys):
    """A tiny run on the synthetic shapes (--kinds restricts it to DCTdiff and the DCTransformer,
    2 steps, 8 samples): DCTdiff gets a row per (sampler, NFE), the DCTransformer one row with no
    sampler or NFE, both with a finite proxy distance, from the quickstart recipe's codec."""
    import json

    import numpy as np

    from benchmarks import quality_small

    monkeypatch.setattr(quality_small, "SPARSE_STATS_IMAGES", 256)
    monkeypatch.setattr(quality_small, "CLASSIFIER_POOL", 256)
    monkeypatch.setattr(quality_small, "dataset_statistics_for", lambda name: (
        quality_small.dataset_stats.dataset_statistics(
            quality_small.source(name), 4, 16, num_images=256, name=name)
    ))  # fmt: skip
    out = tmp_path / "q.json"
    quality_small.main([
        "--datasets=synthetic", "--kinds=dct,dctransformer", "--steps=2", "--batch_size=8",
        "--embed_dim=32", "--depth=1", "--ar_size=T", "--num_samples=8", "--sample_batch=8",
        "--samplers=euler_ode", "--nfes=2", "--classifier_steps=2", f"--workdir={tmp_path}",
        f"--json={out}",
    ])  # fmt: skip
    models = json.loads(out.read_text())["datasets"]["synthetic"]["models"]
    assert list(models["dct"]["fd"]) == ["euler_ode@2"]
    ar = models["dctransformer"]
    assert list(ar["fd"]) == ["autoregressive"] and np.isfinite(ar["fd"]["autoregressive"])
    assert ar["step"] == 2 and ar["batch_size"] == 8
    assert 0 < ar["max_length"] <= 1024 and ar["sample_options"]["temperature"] == 1.0
    assert ar["sample_options"]["masks"] is True
    config = quality_small.load_workdir_sampler(tmp_path / "synthetic_dctransformer").config
    rk = config.representation_kwargs
    assert (config.resolution, rk.block_size, rk.quality, rk.clip) == (32, 4, 75, 255)
    assert (rk.chunk_size, rk.overlap, config.model_kwargs.size) == (96, 32, "T")
    fd_table, train_table = capsys.readouterr().out.split("NOT FID")[1].split("Training")
    (row,) = [line.split() for line in fd_table.splitlines() if "DCTransformer" in line]
    assert row[3:5] == ["autoregressive", "-"]  # sampler, nfe
    (row,) = [line.split() for line in train_table.splitlines() if "DCTransformer" in line]
    assert row[3:5] == ["2", "8"]  # step, batch


# ---- DCTransformer rows of benchmarks/sampling.py ---------------------------------------------


def test_dct_sampling_rows_report_speed_and_memory(tmp_path, capsys):
    """A tiny --dctransformer run (size T, 16 px B=4, a 48 + 16 slot slice, 2 samples): the
    deterministic walk gives the expected lengths, the rows are sane, and the cached sampler's
    temp memory does not grow with max_chunks beyond the sequence buffer."""
    import json

    from benchmarks import sampling

    out = tmp_path / "dct.json"
    sampling.main([
        "--dctransformer", "--dct_size=T", "--dct_points=16/4", "--dct_chunk=48/16",
        "--dct_batch=2", "--repeats=1", "--dct_max_chunks=1,3", "--dct_uncached_elements=8",
        f"--json={out}",
    ])  # fmt: skip
    payload = json.loads(out.read_text())
    speed, memory = payload["dctransformer"], payload["dctransformer_memory"]
    by_name = {r["sampler"]: r for r in speed}
    assert set(by_name) == {"cached, chunk", "cached, short", "uncached, short"}
    chunk, short, uncached = (by_name[k] for k in ("cached, chunk", "cached, short",
                                                   "uncached, short"))  # fmt: skip
    assert chunk["elements_per_sample"] == 48 and chunk["slots"] == 64
    # 16 px, B=4: a 4x4 grid, 4 even-even cells per chroma channel: 2 channels + STOP
    assert short["elements_per_sample"] == uncached["elements_per_sample"] == 9
    for r in speed:
        assert r["elements"] == 2 * r["elements_per_sample"]
        assert r["seconds"] > 0 and r["elements_per_s"] > 0 and r["images_per_s"] > 0
        assert r["image_length"] > 1
        assert r["ms_per_element"] == pytest.approx(1e3 * r["seconds"] / r["elements"])
        assert r["speedup"] == pytest.approx(r["elements_per_s"] / uncached["elements_per_s"])
    assert uncached["speedup"] == 1.0 and uncached["cached"] is False
    small, large = memory
    assert (small["max_chunks"], large["max_chunks"]) == (1, 3)
    assert small["temp_bytes"] > 0 and small["argument_bytes"] > 0
    assert large["seq_buffer_bytes"] == 3 * small["seq_buffer_bytes"]
    assert large["output_bytes"] > small["output_bytes"]  # the returned sequence grows
    assert large["temp_delta_bytes"] <= 2 * large["buffer_delta_bytes"] + 64 * 1024
    printed = capsys.readouterr().out
    assert "uncached, short" in printed and "temp_delta_per_buffer_delta" in printed


def test_quality_small_runs_apply_one_knob_each(tmp_path, monkeypatch):
    """--kinds entries KIND:KEY=VALUE[+...] set one knob of the quickstart recipe: the pixel patch
    defaults to 2B (equal tokens), DCTdiff's c defaults to the variance-matching rule of
    dct_stats --choices on the dataset (checked against c = v_pixels / v_tokens in NumPy), 'rule*K'
    scales it, 'ebfr' is the representation's weights; bad entries fail before any training."""
    import json

    import numpy as np

    from benchmarks import quality_small as q
    from dctjax.representations import make_representation

    monkeypatch.setattr(q, "RULE_IMAGES", 64)
    monkeypatch.setattr(q, "dataset_statistics_for", lambda name: (
        q.dataset_stats.dataset_statistics(q.source(name), 4, 16, num_images=64, name=name)
    ))  # fmt: skip
    args = q.parse_args([f"--workdir={tmp_path}"])
    assert q.parse_run("dct") == ("dct", {})
    kind, over = q.parse_run("dct:snr_scale=rule*2+loss_weighting=ebfr")
    assert (kind, over) == ("dct", {"snr_scale": "rule*2", "loss_weighting": "ebfr"})
    assert q.run_name(kind, over) == "dct:snr_scale=rule*2+loss_weighting=ebfr"
    assert q.run_dir("synthetic", kind, over) == "synthetic_dct_snr_scalerulex2_loss_weightingebfr"
    for bad, match in [
        ("dcT", "unknown kind"),
        ("dct:eta=3", "bad override"),
        ("dct:snr_scale", "bad override"),
        ("jit_sf:prediction=v", "overrides"),
    ]:
        with pytest.raises(ValueError, match=match):
            q.parse_run(bad)
    with pytest.raises(ValueError, match="pixel knob"):
        q.model_config("synthetic", "dct", args, str(tmp_path), {"patch": "2"})

    pixel = q.model_config("synthetic", "pixel", args, str(tmp_path))
    assert pixel.model_kwargs.patch_size == 8 and pixel.diffusion.snr_scale == 1.0
    dct = q.model_config("synthetic", "dct", args, str(tmp_path))
    rk = dct.representation_kwargs
    # the rule from its definition, on the same 64 images
    src = q.source("synthetic")
    order = np.random.default_rng(0).permutation(len(src))[:64]
    images = q.images_of(src, order)[0]
    assert rk.low_freqs == 8
    with open(rk.stats) as f:
        eta = json.load(f)["eta"]
    rep = make_representation("dct_tokens", resolution=32, block_size=4, low_freqs=8, eta=eta)
    tokens = np.asarray(rep.encode(images), np.float64)
    v_pix = (images / 127.5 - 1.0).reshape(64, -1).var(axis=0).mean()
    v_tok = tokens.reshape(64, -1).var(axis=0).mean()
    assert dct.diffusion.snr_scale == pytest.approx(v_pix / v_tok, abs=0.006)
    twice = q.model_config("synthetic", "dct", args, str(tmp_path), {"snr_scale": "rule*2"})
    assert twice.diffusion.snr_scale == pytest.approx(2 * dct.diffusion.snr_scale)
    one = q.model_config("synthetic", "dct", args, str(tmp_path),
                         {"low_freqs": "16", "loss_weighting": "ebfr", "prediction": "eps"})  # fmt: skip
    assert one.representation_kwargs.low_freqs == 16
    assert (one.diffusion.loss_weighting, one.diffusion.prediction) == ("representation", "eps")
    assert pixel.input.worker_count == 2  # the config's
    inproc = q.model_config("synthetic", "pixel", q.parse_args([f"--workdir={tmp_path}",
                                                                "--worker_count=0"]), str(tmp_path))  # fmt: skip
    assert inproc.input.worker_count == 0


def test_kernel_gradient_rows_compare_both_routes(tmp_path, monkeypatch, capsys):
    """Both compiled steps run (the tiny setting's 64 rows take the routed kernel with a threshold
    of 16), from the same state and batch: the same loss; the JSON holds one row per setting."""
    import json

    from benchmarks import kernel_gradient
    from dctjax.models import layers

    monkeypatch.setattr(layers, "CPU_KERNEL_GRAD_MIN_ROWS", 16)
    out = tmp_path / "kg.json"
    kernel_gradient.main(["--settings=dct_t", "--rounds=2", f"--json={out}"])
    (row,) = json.loads(out.read_text())["rows"]
    assert row["setting"] == "dct_t" and row["rounds"] == 2
    assert row["routed_s"] > 0 and row["eigen_s"] > 0
    assert row["routed_over_eigen"] == pytest.approx(row["routed_s"] / row["eigen_s"])
    assert row["loss_routed"] == pytest.approx(row["loss_eigen"], rel=1e-5)
    assert "routed_over_eigen" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        kernel_gradient.main(["--settings=nope"])
