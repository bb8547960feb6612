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
import time

from absl import app, flags
from ml_collections import config_flags

from dctjax.errors import run_main, user_errors

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
flags.DEFINE_string(
    "sampler_kwargs", None,
    "--workdir: more sampling options as JSON, e.g. '{\"temperature\": 0.9}' (DCTransformer).",
)  # fmt: skip
FLAGS = flags.FLAGS


def _feature_fn():
    """The FID Inception, its batches split over every device (batch size rounded up to fit)."""
    from dctjax.eval.inception import load_inception
    from dctjax.train import sharding

    mesh = sharding.make_mesh()
    batch_size = sharding.round_to_devices(FLAGS.batch_size, mesh)
    return load_inception(FLAGS.inception_weights, batch_size=batch_size, mesh=mesh)


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
    from dctjax.eval.evaluate import (
        compute_reference,
        data_settings,
        evaluate_images,
        evaluate_workdir,
        format_results,
        read_image_batches,
        write_json,
    )

    if FLAGS.compute_ref:
        if not FLAGS.out:
            raise app.UsageError("--compute_ref needs --out=PATH.npz.")
        with user_errors():
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
    with user_errors():
        reference = metrics.load_reference(FLAGS.ref)
    feature_fn = _feature_fn()
    if FLAGS.samples:
        what = FLAGS.samples
        with user_errors():
            _, batches = read_image_batches(FLAGS.samples, FLAGS.batch_size, FLAGS.num)
        results = evaluate_images(
            batches, feature_fn, reference, jpeg_quality=FLAGS.jpeg_quality, k=FLAGS.k
        )
    else:
        what = (
            f"{FLAGS.workdir} step={FLAGS.step or 'latest'} sampler={FLAGS.sampler or 'config'} "
            f"nfe={FLAGS.nfe or 'config'} seed={FLAGS.seed}"
            + (f" {FLAGS.sampler_kwargs}" if FLAGS.sampler_kwargs else "")
        )
        with user_errors():
            options = json.loads(FLAGS.sampler_kwargs) if FLAGS.sampler_kwargs else {}
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
            sampler_options=options,
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
    app.run(lambda argv: run_main(main, argv))
