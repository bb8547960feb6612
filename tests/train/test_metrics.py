"""Metric writers (clu tfevents and the JSON-lines fallback), the NaN/Inf guard, and durations."""

import glob
import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from dctjax.train import metrics, schedule


def test_jsonl_fallback_writer(tmp_path):
    writer = metrics.make_writer(tmp_path, is_main_process=True, use_clu=False)
    assert isinstance(writer, metrics.JsonlWriter)
    writer.write_hparams({"lr": 1e-4, "size": "S"})
    writer.write_scalars(10, {"loss": jnp.float32(0.5), "lr": 1e-4, "step_count": np.int32(3)})
    gray = np.linspace(0, 1, 2 * 4 * 4).reshape(2, 4, 4, 1)
    rgb = np.full((3, 5, 3), 200, np.uint8)
    writer.write_images(10, {"samples/grid": gray, "rgb": rgb})
    writer.write_texts(11, {"note": "hello"})
    writer.flush()
    writer.close()
    lines = [json.loads(x) for x in open(tmp_path / metrics.METRICS_FILE)]
    assert lines[0] == {"hparams": {"lr": 1e-4, "size": "S"}}
    assert lines[1] == {"step": 10, "scalars": {"loss": 0.5, "lr": 1e-4, "step_count": 3}}
    assert lines[2]["images"]["samples/grid"] == [
        os.path.join("images", f"samples_grid_10_{i}.png") for i in range(2)
    ]
    png = np.asarray(Image.open(tmp_path / lines[2]["images"]["samples/grid"][1]))
    np.testing.assert_array_equal(png, np.rint(gray[1, ..., 0] * 255).astype(np.uint8))
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / lines[2]["images"]["rgb"][0])), rgb
    )
    assert lines[3] == {"step": 11, "texts": {"note": "hello"}}


def test_non_main_process_only_logs(tmp_path):
    writer = metrics.make_writer(tmp_path / "w", is_main_process=False, use_clu=False)
    writer.write_scalars(1, {"loss": 1.0})
    writer.write_images(1, {"x": np.zeros((1, 2, 2, 3), np.uint8)})
    writer.close()
    assert not os.path.exists(tmp_path / "w")


@pytest.mark.skipif(not metrics.clu_writers_available(), reason="clu writers need TF")
def test_clu_writer_writes_tfevents(tmp_path):
    writer = metrics.make_writer(tmp_path, is_main_process=True, use_clu=True, asynchronous=False)
    assert not isinstance(writer, metrics.JsonlWriter)
    writer.write_scalars(3, {"loss": 0.25})
    writer.write_images(3, {"grid": np.zeros((1, 4, 4, 3), np.float32)})
    writer.flush()
    writer.close()
    events = glob.glob(str(tmp_path / "events.out.tfevents*"))
    assert events and os.path.getsize(events[0]) > 0
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    acc.Reload()
    (event,) = acc.Tensors("loss")
    assert event.step == 3
    assert float(tensor_util.make_ndarray(event.tensor_proto)) == 0.25


def test_check_finite():
    metrics.check_finite({"loss": jnp.float32(1.0), "n": 3, "v": np.ones(3)}, step=5)
    with pytest.raises(FloatingPointError, match=r"step 7: loss=nan") as info:
        metrics.check_finite({"loss": jnp.float32(np.nan), "grad_norm": 2.0}, step=7)
    assert "grad_norm" not in str(info.value)
    with pytest.raises(
        FloatingPointError, match=r"steps 101\.\.200: .*grad_norm=inf.*v=1 non-finite"
    ):
        metrics.check_finite(
            {"loss": 1.0, "grad_norm": np.inf, "v": np.array([0.0, -np.inf])}, 200, first_step=101
        )


# -- durations ---------------------------------------------------------------------------------
def test_steps_from():
    cfg = ml_collections.ConfigDict(
        {
            "total_steps": 1000,
            "log_every_epochs": 0.5,
            "ckpt_every_examples": 640,
            "eval_every_steps": None,
        }
    )
    assert schedule.steps_from(cfg, "total") == 1000
    assert schedule.steps_from(cfg, "log_every", batch_size=64, num_examples=1000) == 7  # 500 // 64
    assert schedule.steps_from(cfg, "ckpt_every", batch_size=64) == 10
    assert schedule.steps_from(cfg, "eval_every", default=None) is None
    assert schedule.steps_from({"x_epochs": 2}, "x", batch_size=10, num_examples=25) == 5
    with pytest.raises(ValueError, match="Set one of eval_every_steps"):
        schedule.steps_from(cfg, "eval_every")
    with pytest.raises(ValueError, match="only one of"):
        schedule.steps_from({"a_steps": 1, "a_epochs": 1}, "a")
    with pytest.raises(ValueError, match="batch_size"):
        schedule.steps_from(cfg, "ckpt_every")
    with pytest.raises(ValueError, match="number of examples"):
        schedule.steps_from(cfg, "log_every", batch_size=64)


def test_is_periodic():
    fired = [s for s in range(1, 1001) if schedule.is_periodic(s, 300, 1000)]
    assert fired == [300, 600, 900, 1000]
    # 80 is 5 < 0.25 * 40 steps before the final step 85, which acts anyway: skipped.
    assert [s for s in range(1, 101) if schedule.is_periodic(s, 40, 85)] == [40, 85]
    assert [s for s in range(1, 101) if schedule.is_periodic(s, 40, 90)] == [40, 80, 90]
    assert [s for s in range(1, 101) if schedule.is_periodic(s, 40, 85, last=False)] == [40]
    assert [s for s in range(1, 101) if schedule.is_periodic(s, 40, 85, drop_close_to_last=0)] == [
        40,
        80,
        85,
    ]
    assert schedule.is_periodic(1, 40, 90, first=True)
    assert not schedule.is_periodic(1, 40, 90)
    assert [s for s in range(1, 11) if schedule.is_periodic(s, None, 10)] == [10]
    assert [s for s in range(1, 11) if schedule.is_periodic(s, 0, None)] == []
    assert [s for s in range(1, 11) if schedule.is_periodic(s, 4)] == [4, 8]
