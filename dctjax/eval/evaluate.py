"""Evaluation workflows behind `launch/evaluate.py`: reference statistics of a dataset, and FID /
sFID / precision / recall of samples read from disk or drawn from a training workdir (any family).

The feature extractor is passed in (`feature_fn`: uint8 (N, H, W, 3) -> features), so these run
with the FID Inception (`dctjax.eval.inception.load_inception`) or a stand-in in tests.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from dctjax.data import prepare, sources
from dctjax.errors import user_errors
from dctjax.eval import evaluators, metrics

NPZ_KEYS = ("images", "arr_0")


def data_settings(config=None, **overrides) -> dict:
    """dataset/split/data_dir/resolution (+ source kwargs) from a training config's data fields,
    overridden by the non-None keyword arguments."""
    s = {"dataset": None, "split": "train", "data_dir": None, "resolution": None, "kwargs": {}}
    if config is not None:
        ds = config.dataset
        s.update(dataset=ds.name, split=ds.split, data_dir=ds.get("data_dir"))
        s["resolution"] = config.get("resolution")
        if ds.get("num_examples"):
            s["kwargs"] = {"num_examples": ds.num_examples}
    if overrides.get("dataset") not in (None, s["dataset"]):
        s["kwargs"] = {}  # the config's source options belong to its own dataset
    s.update({k: v for k, v in overrides.items() if v is not None})
    if not s["dataset"]:
        raise ValueError("--compute_ref needs --dataset (or a --config with dataset.name).")
    return s


def compute_reference(
    feature_fn,
    *,
    dataset: str,
    split: str = "train",
    data_dir: str | None = None,
    resolution: int | None = None,
    num: int | None = None,
    out: str | None = None,
    jpeg_quality: int | None = None,
    batch_size: int = 100,
    max_keep: int = 50_000,
    source_kwargs: dict | None = None,
):
    """Reference statistics of `dataset` read through `make_source`; saved to `out` if given."""
    source = sources.make_source(
        dataset, split, data_dir=data_dir, resolution=resolution, **(source_kwargs or {})
    )
    ref = evaluators.reference_from_source(
        source,
        feature_fn,
        num=num,
        batch_size=batch_size,
        jpeg_quality=jpeg_quality,
        max_keep=max_keep,
        metadata={"dataset": dataset, "split": split, "source": repr(source)},
    )
    if out:
        metrics.save_reference(ref, out)
    return ref


def read_image_batches(path: str, batch_size: int, num: int | None = None):
    """Samples stored on disk: (count, iterator of uint8 (n, H, W, 3) batches) of the images in an .npz/.npy file or a
    folder of image files (sorted paths; all must have the same size)."""
    if os.path.isdir(path):
        files = prepare.list_images(path)
        if not files:
            raise ValueError(f"No image files in {path!r}.")
        files = files[:num] if num else files

        def folder_iter():
            for start in range(0, len(files), batch_size):
                images = []
                for f in files[start : start + batch_size]:
                    img = prepare.to_rgb(prepare.load_image(os.path.join(path, f)))
                    images.append(np.asarray(img))
                shapes = {im.shape for im in images}
                if len(shapes) != 1:
                    raise ValueError(f"Images in {path!r} have different sizes: {sorted(shapes)}.")
                yield np.stack(images)

        return len(files), folder_iter()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No samples at {path!r} (an .npz, .npy or image folder).")
    if path.endswith(".npy"):
        images = np.load(path, mmap_mode="r")
    else:
        with np.load(path) as z:
            key = next((k for k in NPZ_KEYS if k in z.files), None)
            if key is None:
                raise ValueError(f"{path!r} has no {' or '.join(NPZ_KEYS)} entry ({z.files}).")
            images = z[key]
    images = images[:num] if num else images
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"{path!r}: expected uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}."
        )
    batches = (np.asarray(images[i : i + batch_size]) for i in range(0, len(images), batch_size))
    return len(images), batches


def evaluate_images(
    images,
    feature_fn,
    reference,
    *,
    jpeg_quality: int | None = None,
    batch_size: int = 100,
    k: int = 3,
) -> dict:
    """Metrics of images (a uint8 (N, H, W, 3) array, an iterable of such batches, or a path for
    `read_image_batches`) against reference statistics (FIDReference or .npz path)."""
    if not isinstance(reference, metrics.FIDReference):
        reference = metrics.load_reference(reference)
    if isinstance(images, str | os.PathLike):
        _, batches = read_image_batches(os.fspath(images), batch_size)
    elif isinstance(images, np.ndarray):
        batches = (images[i : i + batch_size] for i in range(0, len(images), batch_size))
    else:
        batches = images

    def checked():
        for batch in batches:
            batch = np.asarray(batch)
            evaluators.check_resolution(reference, batch)
            yield batch

    return metrics.evaluate_samples(
        checked(), feature_fn, reference, jpeg_quality=jpeg_quality, k=k
    )


def format_results(results: dict, reference, jpeg_quality: int | None, samples: str) -> str:
    """A printable table of the metrics with the settings they depend on."""
    lines = [f"{'metric':<12}{'value':>12}"]
    for name in ("fid", "sfid", "precision", "recall", "num_samples"):
        if name in results:
            v = results[name]
            lines.append(f"{name:<12}{v:>12.4f}" if isinstance(v, float) else f"{name:<12}{v:>12}")
    meta = reference.metadata
    desc = ", ".join(
        f"{k}={meta[k]}"
        for k in ("dataset", "split", "resolution", "num", "jpeg_quality")
        if k in meta
    )
    lines.append(f"samples: {samples} (jpeg_quality={jpeg_quality})")
    lines.append(f"reference: {desc or meta.get('source', '?')}")
    return "\n".join(lines)


def write_json(results: dict, path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2, default=str)
    os.replace(tmp, path)


def evaluate_workdir(
    workdir: str,
    feature_fn: Any,
    reference: Any,
    *,
    num: int,
    batch_size: int,
    step: int | None = None,
    sampler: str | None = None,
    nfe: int | None = None,
    seed: int = 0,
    jpeg_quality: int | None = None,
    k: int = 3,
    sampler_options: dict | None = None,
) -> dict[str, float]:
    """FID / sFID / precision / recall of `num` samples from a training checkpoint's EMA weights.
    sampler_options: the family's further options (e.g. the DCTransformer's temperature)."""
    from dctjax import sampling

    with user_errors():
        model = sampling.load_workdir_sampler(workdir, step=step, use_ema=True)
    evaluator = evaluators.FidEvaluator(feature_fn, reference, num, batch_size, jpeg_quality, k=k)

    def sample_fn(key, n):
        return model.sample(
            key, n, sampler=sampler, nfe=nfe, batch_size=batch_size, **(sampler_options or {})
        )

    return evaluator.evaluate(sample_fn, jax.random.key(seed))
