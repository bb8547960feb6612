"""Sample from a trained run of any family (EMA weights of the latest checkpoint by default).

    python launch/sample.py --workdir=runs/quickstart --num=64 --sampler=dpm_solver --nfe=20 \
        --seed=0 --out=grid.png
    python launch/sample.py --workdir=runs/imagenet64 --num=1000 --labels=207 --format=npz \
        --out=samples.npz
    python launch/sample.py --workdir=runs/cifar10 --num=50000 --format=png --out=samples_dir/

DCTransformer runs (the autoregressive family) take --temperature, --top_k, --top_p, --nomasks and
--max_chunks instead of --sampler / --nfe / --guidance, and two conditioning tasks (spec §6):

    python launch/sample.py --workdir=runs/imagenet --upsample=lowres/ --out=upsampled/
    python launch/sample.py --workdir=runs/openimages --colorize=grey.npz --format=npz --out=c.npz

Autoencoder runs (the autoencoder family) reconstruct a folder or .npz of images with
--reconstruct=DIR (without it they decode latents drawn from the N(0, I) prior):

    python launch/sample.py --workdir=runs/ae_quickstart --reconstruct=images/ --out=rec.png

--upsample keeps the first DCT channel of Y, Cb and Cr of each image (B x downsampled content) and
samples the rest; --colorize keeps the Y plane and samples the chroma. Each takes a folder of
images (sorted by name; centre-cropped and resized to the model's resolution) or an .npz with
'images' (and 'labels', used for a class-conditional model unless --labels is given); --num
defaults to the number of images.

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
flags.DEFINE_float(
    "temperature", None, "DCTransformer: sampling temperature (default 1; 0 greedy)."
)
flags.DEFINE_integer("top_k", None, "DCTransformer: keep the k most likely classes (0: all).")
flags.DEFINE_float("top_p", None, "DCTransformer: nucleus mass (1: no truncation).")
flags.DEFINE_bool("masks", None, "DCTransformer: validity masks (default on; --nomasks off).")
flags.DEFINE_integer("max_chunks", None, "DCTransformer: most chunks per sample.")
flags.DEFINE_string("upsample", None, "DCTransformer: folder or .npz of images to upsample.")
flags.DEFINE_string("colorize", None, "DCTransformer: folder or .npz of images to colorize.")
flags.DEFINE_string("reconstruct", None, "Autoencoder: folder or .npz of images to reconstruct.")
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


def load_context(path: str, resolution: int):
    """A folder of images (sorted names) or an .npz ('images', optional 'labels') -> uint8
    (N, R, R, 3) images centre-cropped and resized to `resolution`, and the labels or None."""
    import numpy as np

    from dctjax.data import prepare

    if os.path.isdir(path):
        names = sorted(
            f for f in os.listdir(path)
            if not f.startswith(".") and f.lower().endswith(prepare.IMAGE_EXTENSIONS)
        )  # fmt: skip
        if not names:
            raise ValueError(f"{path} holds no images ({', '.join(prepare.IMAGE_EXTENSIONS)}).")
        images = [
            np.asarray(prepare.to_rgb(prepare.load_image(os.path.join(path, f)))) for f in names
        ]
        labels = None
    elif path.endswith(".npz") and os.path.isfile(path):
        with np.load(path) as data:
            if "images" not in data:
                raise ValueError(f"{path} has no 'images' array (found {sorted(data.files)}).")
            images = list(data["images"])
            labels = np.asarray(data["labels"], np.int32) if "labels" in data else None
    else:
        raise ValueError(f"{path} is neither a folder of images nor an .npz file.")
    images = np.stack(
        [
            prepare.resize_array(prepare.rgb_array(np.asarray(im, np.uint8)), resolution)
            for im in images
        ]
    )
    return images, labels


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
    tasks = [
        (name, path)
        for name, path in (
            ("upsample", FLAGS.upsample), ("colorize", FLAGS.colorize),
            ("reconstruct", FLAGS.reconstruct),
        )
        if path
    ]  # fmt: skip
    if len(tasks) > 1:
        raise app.UsageError("--upsample, --colorize and --reconstruct are tasks; give one.")
    with user_errors():
        kwargs = json.loads(FLAGS.sampler_kwargs) if FLAGS.sampler_kwargs else {}
        sampler = load_workdir_sampler(FLAGS.workdir, FLAGS.step, use_ema=FLAGS.ema)
        num, context, context_labels = FLAGS.num, None, None
        task, path = tasks[0] if tasks else (None, None)
        if path:
            context, context_labels = load_context(path, sampler.resolution)
            num = FLAGS.num if FLAGS["num"].present else len(context)
            if num > len(context):
                raise ValueError(f"--num={num} but {path} holds {len(context)} images.")
            context = context[:num]
            kwargs["task"] = task
        labels = parse_labels(FLAGS.labels, num)
        if labels is None and context_labels is not None and sampler.num_classes:
            labels = context_labels[:num]
        if labels is None and sampler.num_classes:
            labels = sampler.default_labels(jax.random.key(FLAGS.seed), num)
        ar_flags = dict(
            temperature=FLAGS.temperature, top_k=FLAGS.top_k, top_p=FLAGS.top_p,
            masks=FLAGS.masks, max_chunks=FLAGS.max_chunks,
        )  # fmt: skip
        options = dict(sampler=FLAGS.sampler, nfe=FLAGS.nfe, guidance=FLAGS.guidance)
        options.update({k: v for k, v in ar_flags.items() if v is not None}, **kwargs)
        sampler.model.family.sample_options(sampler.config, sampler.model, **options)
    images = sampler.sample(
        jax.random.key(FLAGS.seed),
        num,
        labels,
        batch_size=FLAGS.batch_size,
        progress=True,
        context=context,
        **options,
    )
    if jax.process_index() == 0:
        paths = write_output(images, labels, FLAGS.out, FLAGS.format)
        logging.info("step %d: wrote %d samples to %s", sampler.step, len(images), FLAGS.out)
        print(f"wrote {len(images)} samples ({len(paths)} file(s)) to {FLAGS.out}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    app.run(lambda argv: run_main(main, argv))
