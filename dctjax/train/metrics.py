"""Metric writers and the NaN/Inf guard.

`make_writer` returns clu's default writer (TensorBoard event files + logging; only the main process
writes files) when clu's metric writers import, which needs tensorflow-cpu and tensorboard. Without
them (or with `use_clu=False`) it returns `JsonlWriter`: the same write_scalars / write_images /
write_texts / write_hparams / flush / close interface, appending JSON lines to
`workdir/metrics.jsonl`, PNG files under `workdir/images/`, and logging every scalar.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

METRICS_FILE = "metrics.jsonl"
IMAGES_DIR = "images"


def clu_writers_available() -> bool:
    """Whether clu.metric_writers imports (it needs TensorFlow and TensorBoard)."""
    try:
        from clu import metric_writers  # noqa: F401
    except ImportError:
        return False
    return True


def _to_python(value: Any) -> Any:
    value = np.asarray(jax.device_get(value))
    return value.item() if value.size == 1 else value.tolist()


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, int | float) else str(value)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return image[..., 0] if image.shape[-1] == 1 else image


class JsonlWriter:
    """TF-free metric writer: JSON lines + PNGs (main process) and logging (all processes)."""

    def __init__(self, logdir: str | os.PathLike, just_logging: bool = False):
        self.logdir = os.fspath(logdir)
        self.just_logging = just_logging
        self._lock = threading.Lock()
        self._file = None
        if not just_logging:
            os.makedirs(self.logdir, exist_ok=True)
            self._file = open(os.path.join(self.logdir, METRICS_FILE), "a", encoding="utf-8")  # noqa: SIM115

    def _append(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            with self._lock:
                self._file.write(json.dumps(record, allow_nan=True) + "\n")

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        values = {k: _to_python(v) for k, v in scalars.items()}
        logging.info("[%d] %s", step, ", ".join(f"{k}={_fmt(v)}" for k, v in values.items()))
        self._append({"step": int(step), "scalars": values})

    def write_images(self, step: int, images: Mapping[str, Any]) -> None:
        """images: name -> (N, H, W, C) or (H, W, C), uint8 or float in [0, 1]."""
        paths: dict[str, list[str]] = {}
        for name, batch in images.items():
            batch = np.asarray(jax.device_get(batch))
            batch = batch[None] if batch.ndim == 3 else batch
            paths[name] = []
            if self.just_logging:
                continue
            from PIL import Image

            folder = os.path.join(self.logdir, IMAGES_DIR)
            os.makedirs(folder, exist_ok=True)
            safe = name.replace("/", "_")
            for i, image in enumerate(batch):
                rel = os.path.join(IMAGES_DIR, f"{safe}_{int(step)}_{i}.png")
                Image.fromarray(_to_uint8(image)).save(os.path.join(self.logdir, rel))
                paths[name].append(rel)
        logging.info("[%d] images: %s", step, ", ".join(images))
        self._append({"step": int(step), "images": paths})

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        logging.info("[%d] %s", step, ", ".join(f"{k}={v}" for k, v in texts.items()))
        self._append({"step": int(step), "texts": dict(texts)})

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        logging.info("hparams: %s", dict(hparams))
        self._append({"hparams": json.loads(json.dumps(dict(hparams), default=str))})

    def flush(self) -> None:
        if self._file is not None:
            with self._lock:
                self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            with self._lock:
                self._file.close()
                self._file = None


def make_writer(
    workdir: str | os.PathLike,
    is_main_process: bool | None = None,
    *,
    use_clu: bool | None = None,
    asynchronous: bool = True,
) -> Any:
    """The run's metric writer.

    Args:
      workdir: event files / metrics.jsonl go here.
      is_main_process: only it writes files (default: jax.process_index() == 0); others only log.
      use_clu: True requires clu (ImportError if unavailable), False forces the JSON-lines writer,
        None picks clu when it imports.
      asynchronous: clu's asynchronous writer (writes on a background thread).
    """
    if is_main_process is None:
        is_main_process = jax.process_index() == 0
    if use_clu is None:
        use_clu = clu_writers_available()
    if use_clu:
        from clu import metric_writers

        return metric_writers.create_default_writer(
            os.fspath(workdir), just_logging=not is_main_process, asynchronous=asynchronous
        )
    return JsonlWriter(workdir, just_logging=not is_main_process)


def check_finite(metrics: Mapping[str, Any], step: int, *, first_step: int | None = None) -> None:
    """FloatingPointError naming the step (range) and every metric holding NaN or Inf.

    `first_step`: the first step the metrics cover (e.g. the previous log step + 1), so the message
    gives the range in which training diverged.
    """
    bad = {}
    for name, value in metrics.items():
        array = np.asarray(jax.device_get(value))
        if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
            bad[name] = (
                array.item() if array.size == 1 else f"{(~np.isfinite(array)).sum()} non-finite"
            )
    if bad:
        where = f"step {step}" if first_step is None else f"steps {first_step}..{step}"
        listed = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise FloatingPointError(
            f"Non-finite metric(s) at {where}: {listed}. Stopping; the last checkpoint was not "
            "overwritten."
        )
