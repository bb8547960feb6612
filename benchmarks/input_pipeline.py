"""Input pipeline throughput: images/s delivered to the device for each representation at 32, 64,
256 and 512 px, with 0 and 2 grain worker processes.

    python benchmarks/input_pipeline.py [--json=input_pipeline.json] [--quick]

Two sources: the built-in synthetic one (its per-example rendering included: it is what the
quickstart reads) and a prepared array_record folder (PNG decode per example: what real data costs),
made once per resolution in a temporary directory from synthetic images written as PNG files and
then `prepare_folder`, and read for as many epochs as needed.

One step is what a train loop does before its model runs: `next(it)` -> `make_global_batch` onto a
1-device data sharding -> for pixels and dct_tokens the jitted `rep.encode` (sparse_dct encodes and
chunks on the host, inside the pipeline) -> block until ready. Each pipeline is timed in steady
state: its first batch (worker start-up included, reported as `startup_s`), a warm-up of 16 batches
and 0.5 s, then one window of at least 24 batches and 1.5 s (--quick: 4 batches and 0.1 s, then 8
batches and 0.25 s, at 32 and 256 px only); images/s = batch * batches / window. pixels and
dct_tokens read the same uint8 pipeline (one iterator, one window each). `device_encode_ips` is the
jitted encode alone on a batch already on the device, so a reader sees whether host loading or
device encoding dominates. On a CPU-only machine the "device" is the host's cores, so encoding and
loading share them.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import grain
import jax
import numpy as np
from absl import flags
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from PIL import Image

from benchmarks._timing import median_seconds, print_table, write_json
from dctjax.data import pipeline, prepare, sources
from dctjax.representations import make_representation

RESOLUTIONS = (32, 64, 256, 512)
WORKERS = (0, 2)
BATCH = {32: 64, 64: 64, 256: 16, 512: 8}  # global batch per resolution
DCT_BLOCK = {32: 2, 64: 2, 256: 4, 512: 8}  # dct_tokens block size (DCTdiff's choices)
SPARSE_BLOCK = {32: 4, 64: 8, 256: 8, 512: 8}  # sparse_dct block size
FOLDER_IMAGES = {32: 256, 64: 256, 256: 64, 512: 32}  # images in each prepared folder
SYNTHETIC_EXAMPLES = 50_000
SEED = 0


def representations(res: int) -> dict:
    b = DCT_BLOCK[res]
    return {
        "pixels": make_representation("pixels", resolution=res),
        # Stats-free: eta close to the shipped statistics' (about 0.94 * 128 * B); unit weights.
        "dct_tokens": make_representation(
            "dct_tokens", resolution=res, block_size=b, eta=0.94 * 128 * b
        ),
        "sparse_dct": make_representation(
            "sparse_dct",
            resolution=res,
            block_size=SPARSE_BLOCK[res],
            quality=75,
            chunk_size=896,
            overlap=128,
        ),
    }


def prepare_folder_dataset(root: Path, res: int, num_images: int) -> Path:
    """Synthetic images -> PNG files -> `prepare_folder` at `res`; returns the prepared dir."""
    png_dir, out_dir = root / f"png_{res}", root / f"prepared_{res}"
    png_dir.mkdir()
    src = sources.make_source("synthetic", "train", resolution=res, num_examples=num_images)
    for i in range(num_images):
        Image.fromarray(src[i]["image"]).save(png_dir / f"{i:05d}.png")
    prepare.prepare_folder(png_dir, out_dir, res, progress=False)
    return out_dir


def open_source(kind: str, res: int, root: Path) -> sources.RandomAccessSource:
    if kind == "synthetic":
        return sources.make_source(
            "synthetic", "train", resolution=res, num_examples=SYNTHETIC_EXAMPLES
        )
    return sources.make_source(str(prepare_folder_dataset(root, res, FOLDER_IMAGES[res])), "train")


def run_window(
    it: Iterator, step: Callable[[dict], None], min_batches: int, window_s: float
) -> tuple[int, float]:
    """Steps until at least `min_batches` batches and `window_s` seconds; (batches, seconds)."""
    n, t0 = 0, time.perf_counter()
    while True:
        step(next(it))
        n += 1
        dt = time.perf_counter() - t0
        if n >= min_batches and dt >= window_s:
            return n, dt


def bench_pipeline(
    src: sources.RandomAccessSource,
    *,
    batch: int,
    workers: int,
    steps: dict[str, Callable[[dict], None]],
    representation,
    args: argparse.Namespace,
) -> list[dict]:
    """One pipeline, timed once per entry of `steps` (name -> step); rows without labels."""
    ds = pipeline.make_dataset(
        src,
        global_batch_size=batch,
        seed=SEED,
        num_epochs=None,
        worker_count=workers,
        representation=representation,
    )
    it = iter(ds)
    try:
        t0 = time.perf_counter()
        first = next(it)
        startup = time.perf_counter() - t0
        step0 = next(iter(steps.values()))
        step0(first)
        run_window(it, step0, args.warmup_batches, args.warmup)
        rows = []
        for name, step in steps.items():
            n, dt = run_window(it, step, args.min_batches, args.window)
            rows.append(
                dict(
                    representation=name,
                    images_per_s=batch * n / dt,
                    batches=n,
                    window_s=dt,
                    startup_s=startup,
                )
            )
        return rows
    finally:
        it.close()


def device_encoders(reps: dict, images: jax.Array, repeats: int) -> tuple[dict, dict]:
    """Jitted, compiled encoders of the device representations, and the images/s of each alone
    on the device-resident batch `images`."""
    encoders, encode_ips = {}, {}
    for name in ("pixels", "dct_tokens"):
        enc = jax.jit(reps[name].encode)
        enc(images).block_until_ready()
        t = median_seconds(lambda enc=enc: enc(images).block_until_ready(), repeats)
        encoders[name], encode_ips[name] = enc, images.shape[0] / t
    return encoders, encode_ips


def bench_resolution(
    res: int, sharding: NamedSharding, tmp: Path, args: argparse.Namespace
) -> list[dict]:
    batch = BATCH[res]
    reps = representations(res)
    sample = sources.make_source("synthetic", "train", resolution=res, num_examples=batch)
    images = jax.device_put(np.stack([sample[i]["image"] for i in range(batch)]), sharding)
    encoders, encode_ips = device_encoders(reps, images, args.repeats)

    def device_step(host: dict, enc: Callable) -> None:
        enc(pipeline.make_global_batch(host, sharding)["image"]).block_until_ready()

    def host_step(host: dict) -> None:  # sparse_dct: already encoded and chunked on the host
        jax.block_until_ready(pipeline.make_global_batch(host, sharding))

    image_steps = {
        name: (lambda host, enc=enc: device_step(host, enc)) for name, enc in encoders.items()
    }
    rows = []
    for kind in ("synthetic", "folder"):
        src = open_source(kind, res, tmp)
        for workers in WORKERS:
            common = dict(batch=batch, workers=workers, args=args)
            out = bench_pipeline(src, steps=image_steps, representation=None, **common)
            out += bench_pipeline(
                src, steps={"sparse_dct": host_step}, representation=reps["sparse_dct"], **common
            )
            for r in out:
                r.update(
                    source=kind,
                    resolution=res,
                    workers=workers,
                    batch=batch,
                    device_encode_ips=encode_ips.get(r["representation"]),
                )
                print(
                    f"  {kind:9s} {res:4d}px {r['representation']:10s} workers={workers} "
                    f"{r['images_per_s']:9.1f} img/s",
                    file=sys.stderr,
                    flush=True,
                )
            rows += out
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.add_argument("--quick", action="store_true", help="short windows, 32 and 256 px only")
    args = p.parse_args()
    # Windows long in batches: with 0 workers grain's reader threads (16 by default) each build a
    # whole batch, so batches arrive in bursts, and the first ~16 arrive together.
    threads = grain.ReadOptions().num_threads
    args.window = 0.25 if args.quick else 1.5
    args.warmup = 0.1 if args.quick else 0.5
    args.warmup_batches = 4 if args.quick else threads
    args.min_batches = 8 if args.quick else 24
    resolutions = (32, 256) if args.quick else RESOLUTIONS
    args.repeats = 3 if args.quick else 10
    # grain's worker processes need parsed absl flags; this script takes its own arguments.
    flags.FLAGS.mark_as_parsed()

    device = jax.devices()[0]
    sharding = NamedSharding(Mesh(np.array([device]), ("data",)), PartitionSpec("data"))
    t_start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for res in resolutions:
            rows += bench_resolution(res, sharding, Path(tmp), args)
    total = time.perf_counter() - t_start

    columns = ["source", "resolution", "representation", "workers", "batch", "images_per_s",
               "device_encode_ips", "batches", "window_s", "startup_s"]  # fmt: skip
    print_table(rows, columns)
    print(f"total {total:.1f} s")
    write_json(
        args.json,
        dict(
            machine=dict(
                cores=os.cpu_count(),
                processor=platform.processor() or platform.machine(),
                python=platform.python_version(),
                jax=jax.__version__,
                grain=metadata.version("grain"),
                backend=jax.default_backend(),
                device=str(device.device_kind),
            ),
            settings=dict(
                quick=args.quick,
                window_s=args.window,
                warmup_s=args.warmup,
                min_batches=args.min_batches,
                warmup_batches=args.warmup_batches,
                synthetic_examples=SYNTHETIC_EXAMPLES,
                folder_images={str(r): FOLDER_IMAGES[r] for r in resolutions},
                dct_block_size={str(r): DCT_BLOCK[r] for r in resolutions},
                sparse_block_size={str(r): SPARSE_BLOCK[r] for r in resolutions},
                total_s=total,
            ),
            rows=rows,
        ),
    )


if __name__ == "__main__":
    main()
