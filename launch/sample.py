"""Sample from a trained run of any family (EMA weights of the latest checkpoint by default).

    python launch/sample.py --workdir=runs/quickstart --num=64 --sampler=dpm_solver --nfe=20 \
        --seed=0 --out=grid.png
    python launch/sample.py --workdir=runs/imagenet64 --num=1000 --labels=207 --format=npz \
        --out=samples.npz
    python launch/sample.py --workdir=runs/cifar10 --num=50000 --format=png --out=samples_dir/

--format=png writes one grid when --out ends in .png, else one PNG per sample into the --out
folder; --format=npz writes {'images': uint8 (N, H, W, 3), 'labels'} to --out. The output is a
pure function of (checkpoint, --seed, --sampler, --nfe, --labels, --guidance); deterministic
samplers also give the same images for any --batch_size. Multi-host: every process runs this with
the same flags (DCTJAX_MULTIHOST=1) and process 0 writes.
"""

import json
import os

from absl import app, flags, logging

from dctjax.errors import run_main, user_errors

flags.DEFINE_string("workdir", None, "Training workdir (or a checkpoint step directory).")
flags.DEFINE_integer("num", 64, "Number of samples.")
flags.DEFINE_string("sampler", None, "Sampler name (default: the run's config.sample.sampler).")
flags.DEFINE_integer("nfe", None, "Network function evaluations (default: config.sample.nfe).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.DEFINE_bool("ema", True, "Use the EMA weights (the papers' choice); --noema for raw params.")
flags.DEFINE_string("labels", None, "Class labels: one int, a comma list of N ints, or unset.")
flags.DEFINE_float("guidance", None, "Classifier-free guidance scale (needs a null class).")
flags.DEFINE_enum("format", "png", ["png", "npz"], "Output format.")
flags.DEFINE_string("out", "samples.png", "Output .png grid, PNG folder or .npz file.")
flags.DEFINE_integer("batch_size", None, "Samples per compiled batch (default: config.sample.num).")
flags.DEFINE_string("sampler_kwargs", None, "Extra sampler options as JSON, e.g. '{\"order\": 2}'.")
FLAGS = flags.FLAGS


def parse_labels(text: str | None, num: int):
    """'3' -> 3; '1,2,3' -> array of num ints (must have num entries); None -> None."""
    import numpy as np

    if text is None or text == "":
        return None
    parts = [p for p in text.split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(
            f"--labels={text!r}: use one integer or a comma list of integers."
        ) from None
    if len(values) == 1:
        return values[0]
    if len(values) != num:
        raise ValueError(f"--labels has {len(values)} entries; --num={num} needs one or {num}.")
    return np.asarray(values, np.int32)


def write_output(images, labels, out: str, fmt: str) -> list[str]:
    """Writes samples as a grid PNG, a folder of PNGs or an .npz; returns the written paths."""
    import numpy as np
    from PIL import Image

    from dctjax.sampling import image_grid

    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    if fmt == "npz":
        from dctjax._io import savez_atomic

        arrays = {"images": images}
        if labels is not None:
            arrays["labels"] = np.broadcast_to(np.asarray(labels, np.int32), (len(images),))
        savez_atomic(out, arrays)
        return [out]
    if out.endswith(".png"):
        Image.fromarray(image_grid(images)).save(out)
        return [out]
    os.makedirs(out, exist_ok=True)
    paths = []
    for i, im in enumerate(images):
        path = os.path.join(out, f"{i:06d}.png")
        Image.fromarray(im).save(path)
        paths.append(path)
    return paths


def main(argv):
    del argv
    from dctjax.train import sharding

    sharding.maybe_initialize_distributed()
    import jax

    jax.config.update("jax_threefry_partitionable", True)
    from dctjax.sampling import load_workdir_sampler

    if FLAGS.num < 1:
        raise app.UsageError("--num must be >= 1.")
    with user_errors():
        labels = parse_labels(FLAGS.labels, FLAGS.num)
        kwargs = json.loads(FLAGS.sampler_kwargs) if FLAGS.sampler_kwargs else {}
        sampler = load_workdir_sampler(FLAGS.workdir, FLAGS.step, use_ema=FLAGS.ema)
        if labels is None and sampler.num_classes:
            labels = sampler.default_labels(jax.random.key(FLAGS.seed), FLAGS.num)
        options = dict(sampler=FLAGS.sampler, nfe=FLAGS.nfe, guidance=FLAGS.guidance, **kwargs)
        sampler.model.family.sample_options(sampler.config, sampler.model, **options)
    images = sampler.sample(
        jax.random.key(FLAGS.seed),
        FLAGS.num,
        labels,
        batch_size=FLAGS.batch_size,
        progress=True,
        **options,
    )
    if jax.process_index() == 0:
        paths = write_output(images, labels, FLAGS.out, FLAGS.format)
        logging.info("step %d: wrote %d samples to %s", sampler.step, len(images), FLAGS.out)
        print(f"wrote {len(images)} samples ({len(paths)} file(s)) to {FLAGS.out}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    app.run(lambda argv: run_main(main, argv))
