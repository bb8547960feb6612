"""DCTdiff vs the pixel U-ViT vs the DCTransformer, and JiT with vs without Spectral Forcing, at
small scale: a proxy Frechet distance against NFE.

    python benchmarks/quality_small.py [--datasets=synthetic,fashion_mnist,photos] [--steps=2000]
        [--num_samples=500] [--nfes=10,20,50,100] [--samplers=dpm_solver,euler_ode]
        [--kinds=dct,pixel,dctransformer,jit_sf,jit_nosf,dct:snr_scale=2,pixel:prediction=eps]
        [--pixel_patch=8] [--dct_snr_scale=rule] [--pixel_snr_scale=1]
        [--workdir=runs/quality_small] [--json=quality_small.json] [--grids=docs]

For each dataset available offline (the built-in synthetic shapes; Fashion-MNIST from Debian's
`dataset-fashion-mnist`, read by the 'idx' source and resized to 32x32 RGB; 'photos': crops of
scikit-image's bundled photos, the 'photo_crops' source, labelled by photo):
  1. trains DCTdiff (U-ViT on B=4, L=8 DCT tokens: 16 tokens of 48 features) and the pixel U-ViT
     (patch --pixel_patch, default 2B = 8: 16 tokens, equal compute) with the same U-ViT width/
     depth, batch, optimiser, prediction and number of steps: the quickstart recipe. DCTdiff's c is
     --dct_snr_scale, by default the variance-matching rule of `launch/dct_stats.py --choices`
     measured on the dataset; the pixel model's is --pixel_snr_scale (1: the plain VP-SDE). A
     --kinds entry KIND:KEY=VALUE[+KEY=VALUE] changes one knob (`KNOBS`: snr_scale, prediction,
     loss_weighting, low_freqs, patch) for an ablation; each entry has its own workdir. Runs
     resume; finished runs are reused.
  1a. trains the DCTransformer (the autoregressive family) from the recipe of
     `configs/dctransformer_quickstart.py`: size 'S' (--ar_size), 32 px, sparse DCT with B=4,
     quality 75, clip 255, chunks of 96 targets with 32 overlap, batch 16, lr 1e-3, for the same
     number of steps (--steps; --batch_size, when given, sets every kind's batch). L_max of its
     length filtering is the P95 of the sparse lengths of 20,000 training images of the dataset
     (SPARSE_STATS_IMAGES; cached in --workdir). It is sampled once per dataset with the config's
     defaults (temperature 1, no top-k / top-p, validity masks on, default max_chunks): one row,
     no sampler or NFE ('-');
  1b. with --kinds including jit_sf / jit_nosf: trains JiT (the flow family, unconditional) with a
     coarse patch (8 at 32 px: 16 tokens, where [002] reports SF helping most) with and without
     Spectral Forcing, same width/depth/steps/batch, sampled with Heun;
  2. trains a small CNN classifier on the dataset's labels and uses its penultimate layer (64-d)
     as the feature space: a PROXY for FID (no Inception weights offline), labelled as such. Its
     weights are cached in --workdir, so every invocation scores with the same network.
  3. samples `num_samples` images per (model, sampler, NFE) from the EMA weights (the
     DCTransformer's recipe keeps no EMA: its trained weights) and reports the Frechet distance of
     their features to those of `num_samples` training images, next to the
     distance between two disjoint sets of real images of that size (the floor at this N).

The paper's direction [000 Table "FID vs NFE"]: DCTdiff ahead, by the most at low NFE. The
DCTransformer's row is read beside them at equal steps (its step is per chunk of 96 targets at
batch 16, not per image at batch 64: the Training table gives each kind's batch and seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks._timing import print_table, write_json  # noqa: E402
from configs import dctransformer_quickstart, jit_quickstart, quickstart  # noqa: E402
from dctjax.data import dataset_stats, dct_choices, sources  # noqa: E402
from dctjax.eval.metrics import frechet_distance  # noqa: E402
from dctjax.sampling import image_grid, load_workdir_sampler  # noqa: E402
from dctjax.train import checkpoint, loop  # noqa: E402

DATASETS = {
    # name -> (source name, make_source kwargs, number of classes)
    "synthetic": ("synthetic", {"num_examples": 50_000}, 4),
    "fashion_mnist": ("idx", {}, 10),
    "photos": ("photo_crops", {}, len(sources.PHOTO_CROPS_PHOTOS)),  # needs scikit-image
}
RESOLUTION = 32
CLASSIFIER_POOL = 20_000  # training images the proxy classifier is trained on
SPARSE_STATS_IMAGES = 20_000  # training images whose sparse lengths give the DCTransformer's L_max
RULE_IMAGES = 5_000  # training images of the variance-matching c


def available(name: str) -> bool:
    if name == "fashion_mnist":
        return os.path.isdir(sources.FASHION_MNIST_DIR)
    if name == "photos":
        import importlib.util

        return importlib.util.find_spec("skimage") is not None
    return name in DATASETS


def source(name: str, split: str = "train"):
    src_name, kwargs, _ = DATASETS[name]
    if name == "synthetic" and split != "train":
        kwargs = {}
    return sources.make_source(src_name, split, resolution=RESOLUTION, **kwargs)


def images_of(src, indices) -> tuple[np.ndarray, np.ndarray]:
    items = [src[int(i)] for i in indices]
    return np.stack([it["image"] for it in items]), np.array([it["label"] for it in items])


# ---- the two diffusion models ------------------------------------------------------------------
def dct_stats_file(name: str, workdir: str) -> str:
    path = os.path.join(workdir, f"{name}_stats_b4.json")
    if not os.path.exists(path):
        stats = dataset_statistics_for(name)
        dataset_stats.write_json(stats, path)
    return path


def dataset_statistics_for(name: str) -> dict:
    return dataset_stats.dataset_statistics(source(name), 4, 16, num_images=5000, name=name)


def sparse_max_length(name: str, workdir: str, block_size: int, quality: int, clip: int) -> int:
    """L_max of the DCTransformer's length filtering on `name`: the P95 of the sparse sequence
    lengths (non-zeros + STOP) of SPARSE_STATS_IMAGES random training images, as
    `launch/dct_stats.py` reports it (cached as JSON in `workdir`)."""
    path = os.path.join(workdir, f"{name}_sparse_b{block_size}_q{quality}_c{clip}.json")
    if not os.path.exists(path):
        stats = dataset_stats.dataset_statistics(
            source(name), 4, 16, num_images=SPARSE_STATS_IMAGES, name=name,
            quality=quality, sparse_block_size=block_size, clip=clip,
        )  # fmt: skip
        dataset_stats.write_json(stats, path)
    with open(path) as f:
        return int(json.load(f)["sparse"]["max_length"])


KINDS = {
    "dct": "DCTdiff",
    "pixel": "pixel U-ViT",
    "dctransformer": "DCTransformer",
    "jit_sf": "JiT/8 + SF",
    "jit_nosf": "JiT/8",
}
AUTOREGRESSIVE_KINDS = ("dctransformer",)  # sampled once with the config's defaults: no NFE


def dctransformer_config(name: str, args: argparse.Namespace, workdir: str):
    """The DCTransformer quickstart recipe (configs/dctransformer_quickstart.py) on `name` at the
    script's resolution, size --ar_size, L_max measured on `name`, --steps steps."""
    c = dctransformer_quickstart.get_config()
    src_name, kwargs, _ = DATASETS[name]
    c.dataset.name = src_name
    c.dataset.num_examples = kwargs.get("num_examples")
    c.dataset.data_dir = None
    c.resolution = RESOLUTION  # every source is read at 32 px (Fashion-MNIST: resized from 28)
    rk = c.representation_kwargs
    rk.max_length = sparse_max_length(name, workdir, rk.block_size, rk.quality, rk.clip)
    c.model_kwargs.size = args.ar_size
    # the quickstart's 100-step warm-up (1/6 of its 600 steps), shorter for shorter runs (the
    # cosine decay needs total steps > warm-up)
    c.optim.warmup_steps = min(c.optim.warmup_steps, args.steps // 6)
    return run_settings(c, args)


def run_settings(c, args: argparse.Namespace):
    """Every kind: --steps, a checkpoint halfway, one grid at the end, no eval, --batch_size,
    --worker_count."""
    c.total_steps = args.steps
    c.checkpoint_every = max(args.steps // 2, 1)
    c.sample_every = args.steps
    c.log_every = 100
    c.eval.every = 0
    if args.batch_size:
        c.batch_size = args.batch_size
    if args.worker_count is not None:
        c.input.worker_count = args.worker_count
    return c


# ---- runs: a kind plus one-knob overrides -------------------------------------------------------
# --kinds entries are KIND or KIND:KEY=VALUE[+KEY=VALUE...], e.g. 'dct:snr_scale=2',
# 'pixel:prediction=eps', 'dct:loss_weighting=none+low_freqs=16'. Keys (dct / pixel kinds):
KNOBS = {
    "snr_scale": "c: a number, or for dct 'rule' / 'rule*K' (variance matching, times K)",
    "prediction": "eps | x0 | v",
    "loss_weighting": "ebfr (dct: the representation's EBFR) | inverse_std | none",
    "low_freqs": "dct: zigzag frequencies kept per block (1..B^2)",
    "patch": "pixel: patch size (default --pixel_patch)",
}


def parse_run(entry: str) -> tuple[str, dict]:
    """'dct:snr_scale=rule*2+prediction=eps' -> ('dct', {'snr_scale': 'rule*2', 'prediction': 'eps'})."""
    kind, _, rest = entry.strip().partition(":")
    if kind not in KINDS:
        raise ValueError(
            f"unknown kind {kind!r} in --kinds entry {entry!r}; choose from {list(KINDS)}"
        )
    overrides = {}
    for part in filter(None, rest.split("+")):
        key, sep, value = part.partition("=")
        if not sep or key not in KNOBS:
            raise ValueError(
                f"bad override {part!r} in {entry!r}: use KEY=VALUE with KEY one of {list(KNOBS)}"
            )
        if kind not in ("dct", "pixel"):
            raise ValueError(
                f"overrides apply to the dct and pixel kinds, not {kind!r} ({entry!r})"
            )
        overrides[key] = value
    return kind, overrides


def run_name(kind: str, overrides: dict) -> str:
    """The run's label in the tables and JSON, its --kinds entry: 'dct', 'dct:snr_scale=2'."""
    knobs = "+".join(f"{k}={v}" for k, v in overrides.items())
    return f"{kind}:{knobs}" if knobs else kind


def run_dir(name: str, kind: str, overrides: dict) -> str:
    slug = "".join(f"_{k}{v}" for k, v in overrides.items()).replace("*", "x")
    return f"{name}_{kind}{slug}"


def rule_snr_scale(name: str, workdir: str, low_freqs: int, stats_path: str) -> dict:
    """The variance-matching c of `launch/dct_stats.py --choices` for B=4 and `low_freqs` on
    5,000 training images of `name` (cached as JSON in `workdir`)."""
    path = os.path.join(workdir, f"{name}_snr_rule_b4_l{low_freqs}.json")
    if not os.path.exists(path):
        with open(stats_path) as f:
            eta = json.load(f)["eta"]
        src = source(name)
        order = np.random.default_rng(0).permutation(len(src))[:RULE_IMAGES]
        batches = (images_of(src, order[i : i + 500])[0] for i in range(0, len(order), 500))
        out = dct_choices.dct_choices(batches, 4, eta, low_freqs, candidates=[low_freqs])
        write_json(path, out["snr"])
    with open(path) as f:
        return json.load(f)


def resolve_snr_scale(value, name: str, low_freqs: int, stats_path: str, workdir: str) -> float:
    """A number, 'rule' or 'rule*K' -> c."""
    text = str(value)
    if text.startswith("rule"):
        factor = float(text.split("*", 1)[1]) if "*" in text else 1.0
        return factor * rule_snr_scale(name, workdir, low_freqs, stats_path)["snr_scale"]
    return float(text)


def model_config(name: str, kind: str, args: argparse.Namespace, workdir: str, overrides=None):
    """The quickstart recipe on `name` with U-ViT for both representations (kind: dct | pixel;
    the pixel patch --pixel_patch, 2B = equal tokens by default; c from --dct_snr_scale /
    --pixel_snr_scale), then `overrides` (one knob of the ablation); or the JiT quickstart
    recipe, unconditional, patch 8 (kind: jit_sf | jit_nosf), or the DCTransformer quickstart
    recipe (kind: dctransformer)."""
    overrides = dict(overrides or {})
    if kind == "dctransformer":
        return dctransformer_config(name, args, workdir)
    if kind.startswith("jit"):
        c = jit_quickstart.get_config("sf" if kind == "jit_sf" else "nosf")
        c.model_kwargs.patch_size = args.jit_patch
        c.dataset.num_classes = 0
        c.label_dropout = 0.0
        c.sample.guidance = None
    else:
        c = quickstart.get_config("pixel" if kind == "pixel" else None)
    src_name, kwargs, _ = DATASETS[name]
    c.dataset.name = src_name
    c.dataset.num_examples = kwargs.get("num_examples")
    c.dataset.data_dir = None
    if kind == "dct":
        c.model = "uvit"
        rk = c.representation_kwargs
        rk.stats = dct_stats_file(name, workdir)
        rk.low_freqs = int(overrides.pop("low_freqs", rk.low_freqs))
        snr = overrides.pop("snr_scale", args.dct_snr_scale)
        c.diffusion.snr_scale = resolve_snr_scale(snr, name, rk.low_freqs, rk.stats, workdir)
    elif kind == "pixel":
        c.model_kwargs.patch_size = int(overrides.pop("patch", args.pixel_patch))
        c.diffusion.snr_scale = float(overrides.pop("snr_scale", args.pixel_snr_scale))
    if "low_freqs" in overrides or "patch" in overrides:
        raise ValueError(
            f"low_freqs is a dct knob and patch a pixel knob; got {overrides} for {kind}"
        )
    if "prediction" in overrides:
        c.diffusion.prediction = overrides.pop("prediction")
    if "loss_weighting" in overrides:
        w = overrides.pop("loss_weighting")
        c.diffusion.loss_weighting = "representation" if w == "ebfr" else w
    c.model_kwargs.update(embed_dim=args.embed_dim, depth=args.depth, num_heads=4)
    return run_settings(c, args)


def train(name: str, kind: str, args: argparse.Namespace, overrides=None) -> tuple[str, float]:
    """Trains (or resumes, or reuses) one model; returns its workdir and training seconds."""
    workdir = os.path.join(args.workdir, run_dir(name, kind, overrides or {}))
    os.makedirs(workdir, exist_ok=True)
    c = model_config(name, kind, args, args.workdir, overrides)
    with checkpoint.Checkpointer(workdir, handle_sigterm=False) as ck:
        done = (ck.latest_step() or 0) >= args.steps
    t0 = time.perf_counter()
    if not done:
        loop.train_and_evaluate(c, workdir)
    return workdir, time.perf_counter() - t0


# ---- the proxy feature network -----------------------------------------------------------------
class SmallCNN(nnx.Module):
    """32x32x3 -> 64-d features -> logits. The features define the proxy Frechet distance."""

    def __init__(self, num_classes: int, *, rngs: nnx.Rngs, feature_dim: int = 64):
        self.c1 = nnx.Conv(3, 32, (3, 3), rngs=rngs)
        self.c2 = nnx.Conv(32, 64, (3, 3), rngs=rngs)
        self.c3 = nnx.Conv(64, 128, (3, 3), rngs=rngs)
        self.fc = nnx.Linear(128, feature_dim, rngs=rngs)
        self.out = nnx.Linear(feature_dim, num_classes, rngs=rngs)

    def features(self, images: jax.Array) -> jax.Array:
        x = images.astype(jnp.float32) / 127.5 - 1.0
        x = nnx.max_pool(nnx.relu(self.c1(x)), (2, 2), (2, 2))
        x = nnx.max_pool(nnx.relu(self.c2(x)), (2, 2), (2, 2))
        x = nnx.relu(self.c3(x)).mean(axis=(1, 2))
        return nnx.relu(self.fc(x))

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.out(self.features(images))


def train_classifier(name: str, steps: int, seed: int = 0) -> tuple[SmallCNN, float]:
    """Trains the proxy network on the training split; returns it and its held-out accuracy."""
    num_classes = DATASETS[name][2]
    src = source(name)
    rng = np.random.default_rng(seed)
    pool = rng.permutation(len(src))[: min(len(src), CLASSIFIER_POOL)]
    x_all, y_all = images_of(src, pool)
    model = SmallCNN(num_classes, rngs=nnx.Rngs(seed))
    opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, x, y):
        def loss_fn(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    for _ in range(steps):
        idx = rng.integers(0, len(x_all), 128)
        step(model, opt, jnp.asarray(x_all[idx]), jnp.asarray(y_all[idx]))
    test = source(name, "test")
    xt, yt = images_of(test, np.arange(min(len(test), 2000)))
    acc = float((np.asarray(nnx.jit(lambda m, x: m(x))(model, xt)).argmax(-1) == yt).mean())
    return model, acc


def cached_classifier(name: str, steps: int, workdir: str, seed: int = 0) -> tuple[SmallCNN, float]:
    """`train_classifier`, its weights and accuracy cached in `workdir`: every invocation of the
    benchmark on a dataset scores with the same feature network."""
    path = os.path.join(workdir, f"{name}_classifier_{steps}_seed{seed}.npz")
    if os.path.exists(path):
        model = SmallCNN(DATASETS[name][2], rngs=nnx.Rngs(seed))
        graphdef, state = nnx.split(model)
        flat = dict(np.load(path))
        acc = float(flat.pop("__accuracy__"))
        leaves = jax.tree_util.tree_flatten_with_path(state)[0]
        restored = [jnp.asarray(flat[jax.tree_util.keystr(k)]) for k, _ in leaves]
        treedef = jax.tree_util.tree_structure(state)
        return nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, restored)), acc
    model, acc = train_classifier(name, steps, seed)
    state = nnx.state(model)
    flat = {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_flatten_with_path(state)[0]}  # fmt: skip
    os.makedirs(workdir, exist_ok=True)
    np.savez(path + ".tmp.npz", __accuracy__=acc, **flat)
    os.replace(path + ".tmp.npz", path)
    return model, acc


def feature_fn(model: SmallCNN):
    fn = nnx.jit(lambda m, x: m.features(x))

    def features(images: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [
                np.asarray(fn(model, jnp.asarray(images[i : i + 250])))
                for i in range(0, len(images), 250)
            ]
        ).astype(np.float64)

    return features


def stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return feats.mean(0), np.cov(feats, rowvar=False)


# ---- main --------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    entries = [e for e in args.kinds.split(",") if e.strip()]
    runs_spec = [parse_run(e) for e in entries]  # errors before any training
    results = {"settings": vars(args).copy(), "datasets": {}}
    rows, train_rows = [], []
    for name in args.datasets.split(","):
        if not available(name):
            how = {"fashion_mnist": "apt-get install dataset-fashion-mnist",
                   "photos": 'pip install -e ".[bench]" (scikit-image)'}  # fmt: skip
            print(f"[skip] {name}: not installed ({how.get(name, 'unknown dataset')})")
            continue
        t0 = time.perf_counter()
        classifier, acc = cached_classifier(name, args.classifier_steps, args.workdir)
        feats = feature_fn(classifier)
        src = source(name)
        order = np.random.default_rng(1).permutation(len(src))
        n = args.num_samples
        real_a, _ = images_of(src, order[:n])
        real_b, _ = images_of(src, order[n : 2 * n])
        ref = stats(feats(real_a))
        floor = frechet_distance(*ref, *stats(feats(real_b)))
        entry = {"classifier_accuracy": acc, "real_vs_real": floor, "models": {}}
        print(f"{name}: proxy classifier accuracy {acc:.3f}, real-vs-real distance {floor:.3f} "
              f"(N={n}; {time.perf_counter() - t0:.0f} s)")  # fmt: skip
        for kind, overrides in runs_spec:
            label = run_name(kind, overrides)
            workdir, train_s = train(name, kind, args, overrides)
            sampler = load_workdir_sampler(workdir)
            m = {"train_seconds": train_s, "step": sampler.step, "fd": {}, "sample_seconds": {}}
            m["batch_size"] = int(sampler.config.batch_size)
            m["overrides"] = overrides
            if kind in ("dct", "pixel"):
                d = sampler.config.diffusion
                m["recipe"] = dict(
                    snr_scale=float(d.snr_scale), prediction=d.prediction,
                    loss_weighting=d.loss_weighting,
                    low_freqs=sampler.config.representation_kwargs.get("low_freqs"),
                    patch=sampler.config.model_kwargs.get("patch_size"),
                )  # fmt: skip
            if kind in AUTOREGRESSIVE_KINDS:
                # the config's sample defaults (temperature 1, masks on, ...); no sampler / NFE
                rk = sampler.config.representation_kwargs
                m["max_length"] = rk.max_length
                m["sample_options"] = dict(sampler.config.sample)
                runs = [("autoregressive", None, {})]
                grid_run = runs[0]
            else:
                samplers = args.flow_samplers if kind.startswith("jit") else args.samplers
                runs = [
                    (sampler_name, nfe, dict(sampler=sampler_name, nfe=nfe))
                    for sampler_name in samplers.split(",")
                    for nfe in (int(v) for v in args.nfes.split(","))
                ]
                grid_run = (samplers.split(",")[0], args.grid_nfe)
            for sampler_name, nfe, options in runs:
                t1 = time.perf_counter()
                images = sampler.sample(
                    jax.random.key(0), n, batch_size=args.sample_batch, **options
                )
                dt = time.perf_counter() - t1
                fd = frechet_distance(*ref, *stats(feats(images)))
                key = sampler_name if nfe is None else f"{sampler_name}@{nfe}"
                m["fd"][key] = fd
                m["sample_seconds"][key] = dt
                rows.append(dict(dataset=name, model=KINDS[kind], run=label,
                                 sampler=sampler_name, nfe=nfe, proxy_fd=fd, sample_s=dt))  # fmt: skip
                if args.grids and grid_run[:2] == (sampler_name, nfe):
                    os.makedirs(args.grids, exist_ok=True)
                    stem = run_dir(name, kind, overrides)
                    path = os.path.join(args.grids, f"quality_small_{stem}.png")
                    Image.fromarray(image_grid(images[:36])).save(path)
            train_rows.append(dict(dataset=name, model=KINDS[kind], run=label, step=m["step"],
                                   batch=m["batch_size"], train_s=train_s))  # fmt: skip
            entry["models"][label] = m
        results["datasets"][name] = entry
    print("\nProxy Frechet distance (small-CNN features, NOT FID; lower is better)")
    print_table(rows, ["dataset", "model", "run", "sampler", "nfe", "proxy_fd", "sample_s"])
    print("\nTraining (train_s: 0 for a finished run that was reused)")
    print_table(train_rows, ["dataset", "model", "run", "step", "batch", "train_s"])
    return results


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--datasets", default="synthetic,fashion_mnist,photos")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument(
        "--batch_size", type=int, default=None,
        help="every kind's batch; default: each quickstart's (64; the DCTransformer's 16)",
    )  # fmt: skip
    p.add_argument(
        "--worker_count", type=int, default=None,
        help="grain worker processes for every kind; default: each config's (0: read in-process)",
    )  # fmt: skip
    p.add_argument("--embed_dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=5, help="U-ViT depth (odd: in, mid, out blocks)")
    p.add_argument("--num_samples", type=int, default=500)
    p.add_argument("--sample_batch", type=int, default=250)
    p.add_argument("--nfes", default="10,20,50,100")
    p.add_argument("--samplers", default="dpm_solver,euler_ode")
    p.add_argument("--flow_samplers", default="heun", help="for the JiT kinds")
    p.add_argument(
        "--kinds", default=",".join(KINDS),
        help=f"runs: KIND or KIND:KEY=VALUE[+KEY=VALUE], KIND one of {', '.join(KINDS)}; keys: "
        + "; ".join(f"{k}: {v}" for k, v in KNOBS.items()),
    )  # fmt: skip
    p.add_argument(
        "--pixel_patch", type=int, default=8, help="pixel U-ViT patch (2B: equal tokens)"
    )
    p.add_argument(
        "--dct_snr_scale", default="rule",
        help="DCTdiff's c: a number, 'rule' (variance matching, dct_stats --choices) or 'rule*K'",
    )  # fmt: skip
    p.add_argument("--pixel_snr_scale", type=float, default=1.0, help="the pixel U-ViT's c")
    p.add_argument("--jit_patch", type=int, default=8, help="JiT patch size at 32 px")
    p.add_argument("--ar_size", default="S", help="DCTransformer size (the quickstart's 'S')")
    p.add_argument("--classifier_steps", type=int, default=1500)
    p.add_argument("--workdir", default="runs/quality_small")
    p.add_argument("--grids", default=None, help="folder for sample grids (e.g. docs)")
    p.add_argument("--grid_nfe", type=int, default=20)
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags
    jax.config.update("jax_threefry_partitionable", True)
    results = run(args)
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
