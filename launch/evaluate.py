r"""FID, sFID and precision/recall: reference statistics, and evaluation of samples against them.

Reference statistics of a dataset (Inception pool3 + spatial features, a uniform subset of pool3
rows kept for precision/recall):
    python launch/evaluate.py --compute_ref --dataset=cifar10 --jpeg_quality=75 --out=cifar10.npz
    python launch/evaluate.py --compute_ref --config=configs/dctdiff_ffhq256.py --out=ffhq256.npz
    (--config takes dataset, split, data_dir and resolution from a training config; flags win.)

Samples from an .npz (key 'images' or 'arr_0', uint8 NHWC) or a folder of PNG/JPEG files:
    python launch/evaluate.py --samples=samples.npz --ref=cifar10.npz --jpeg_quality=95 \
        --out_json=fid.json

Samples drawn from a training checkpoint (EMA weights):
    python launch/evaluate.py --workdir=runs/cifar10 --ref=cifar10.npz --num=50000 \
        --sampler=dpm_solver --nfe=50 --jpeg_quality=95

--jpeg_quality passes images through a JPEG encode/decode (4:2:0): for references, the quality the
dataset is stored at (the DCTdiff reference stores CIFAR-10 at 75); for samples, 95 mimics the
reference's OpenCV writes. The setting and the reference's metadata are printed with every result.
"""

import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

config_flags.DEFINE_config_file(
    "config", None, "Training config; --compute_ref reads its data fields.", lock_config=False
)
flags.DEFINE_bool("compute_ref", False, "Compute reference statistics of a dataset.")
flags.DEFINE_string("dataset", None, "Source name (tfds name, prepared folder, 'synthetic').")
flags.DEFINE_string("split", None, "Split (default: the config's, else 'train').")
flags.DEFINE_string("data_dir", None, "tfds data_dir.")
flags.DEFINE_integer("resolution", None, "Image resolution (default: the config's / native).")
flags.DEFINE_integer(
    "num", None, "Images: reference (default all), samples (default all / 50000 for --workdir)."
)
flags.DEFINE_string("out", None, "--compute_ref: output .npz.")
flags.DEFINE_integer("jpeg_quality", None, "JPEG round trip quality; default: lossless.")
flags.DEFINE_string("inception_weights", None, "Inception weights file (default: the cached).")
flags.DEFINE_integer("batch_size", 100, "Images per feature (and sampling) batch.")
flags.DEFINE_integer("max_keep", 50_000, "--compute_ref: pool3 rows kept for precision/recall.")
flags.DEFINE_string("samples", None, "Samples: .npz ('images' or 'arr_0') or an image folder.")
flags.DEFINE_string("ref", None, "Reference statistics .npz.")
flags.DEFINE_string("out_json", None, "Write the results here as JSON.")
flags.DEFINE_integer("k", 3, "k of precision/recall.")
flags.DEFINE_string("workdir", None, "Training workdir: sample from its checkpoint.")
flags.DEFINE_integer("step", None, "--workdir: checkpoint step (default: latest).")
flags.DEFINE_string("sampler", None, "--workdir: sampler name (default: the run config's).")
flags.DEFINE_integer("nfe", None, "--workdir: function evaluations (default: the run config's).")
flags.DEFINE_integer("seed", 0, "--workdir: sampling seed.")
FLAGS = flags.FLAGS

NPZ_KEYS = ("images", "arr_0")


# ------------------------------------------------------------------------------------------------
# Testable pieces (a feature_fn is injected; the Inception network is only loaded in main)
# ------------------------------------------------------------------------------------------------


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
        raise app.UsageError("--compute_ref needs --dataset (or a --config with dataset.name).")
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
    from dctjax.data import sources
    from dctjax.eval import evaluators, metrics

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


def sample_batches(path: str, batch_size: int, num: int | None = None):
    """(count, iterator of uint8 (n, H, W, 3) batches) of the images in an .npz/.npy file or a
    folder of image files (sorted paths; all must have the same size)."""
    import numpy as np

    from dctjax.data import prepare

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
    `sample_batches`) against reference statistics (ReferenceStats or .npz path)."""
    import numpy as np

    from dctjax.eval import evaluators, metrics

    if not isinstance(reference, metrics.ReferenceStats):
        reference = metrics.load_reference(reference)
    if isinstance(images, str | os.PathLike):
        _, batches = sample_batches(os.fspath(images), batch_size)
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


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------


def _feature_fn():
    """The FID Inception, its batches split over every device (batch size rounded up to fit)."""
    from dctjax.eval.inception import load_inception
    from dctjax.train import sharding

    mesh = sharding.make_mesh()
    batch_size = sharding.round_to_devices(FLAGS.batch_size, mesh)
    return load_inception(FLAGS.inception_weights, batch_size=batch_size, mesh=mesh)


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
) -> dict[str, float]:
    """FID / sFID / precision / recall of `num` samples from a training checkpoint's EMA weights."""
    import jax

    from dctjax import sampling
    from dctjax.eval import evaluators

    model = sampling.load_workdir_sampler(workdir, step=step, use_ema=True)
    evaluator = evaluators.FidEvaluator(feature_fn, reference, num, batch_size, jpeg_quality, k=k)

    def sample_fn(key, n):
        return model.sample(key, n, sampler=sampler, nfe=nfe, batch_size=batch_size)

    return evaluator.evaluate(sample_fn, jax.random.key(seed))


def main(argv):
    del argv
    modes = [m for m in ("compute_ref", "samples", "workdir") if FLAGS[m].value]
    if len(modes) != 1:
        raise app.UsageError("Pass exactly one of --compute_ref, --samples=PATH, --workdir=DIR.")
    start = time.time()
    from dctjax.train import sharding

    sharding.maybe_initialize_distributed()
    import jax

    jax.config.update("jax_threefry_partitionable", True)
    from dctjax.eval import metrics

    if FLAGS.compute_ref:
        if not FLAGS.out:
            raise app.UsageError("--compute_ref needs --out=PATH.npz.")
        s = data_settings(
            FLAGS.config,
            dataset=FLAGS.dataset,
            split=FLAGS.split,
            data_dir=FLAGS.data_dir,
            resolution=FLAGS.resolution,
        )
        ref = compute_reference(
            _feature_fn(),
            dataset=s["dataset"],
            split=s["split"],
            data_dir=s["data_dir"],
            resolution=s["resolution"],
            num=FLAGS.num,
            out=FLAGS.out,
            jpeg_quality=FLAGS.jpeg_quality,
            batch_size=FLAGS.batch_size,
            max_keep=FLAGS.max_keep,
            source_kwargs=s["kwargs"],
        )
        print(f"{FLAGS.out}: {ref.summary()} ({time.time() - start:.0f} s)")
        return

    if not FLAGS.ref:
        raise app.UsageError("--samples and --workdir need --ref=REFERENCE.npz.")
    reference = metrics.load_reference(FLAGS.ref)
    feature_fn = _feature_fn()
    if FLAGS.samples:
        what = FLAGS.samples
        _, batches = sample_batches(FLAGS.samples, FLAGS.batch_size, FLAGS.num)
        results = evaluate_images(
            batches, feature_fn, reference, jpeg_quality=FLAGS.jpeg_quality, k=FLAGS.k
        )
    else:
        what = (
            f"{FLAGS.workdir} step={FLAGS.step or 'latest'} sampler={FLAGS.sampler or 'config'} "
            f"nfe={FLAGS.nfe or 'config'} seed={FLAGS.seed}"
        )
        results = evaluate_workdir(
            FLAGS.workdir,
            feature_fn,
            reference,
            num=FLAGS.num or 50_000,
            batch_size=FLAGS.batch_size,
            step=FLAGS.step,
            sampler=FLAGS.sampler,
            nfe=FLAGS.nfe,
            seed=FLAGS.seed,
            jpeg_quality=FLAGS.jpeg_quality,
            k=FLAGS.k,
        )
    print(format_results(results, reference, FLAGS.jpeg_quality, what))
    print(f"({time.time() - start:.0f} s)")
    if FLAGS.out_json:
        write_json(
            {
                "metrics": results,
                "samples": what,
                "jpeg_quality": FLAGS.jpeg_quality,
                "reference": {"path": FLAGS.ref, **reference.metadata},
            },
            FLAGS.out_json,
        )


if __name__ == "__main__":
    app.run(main)
