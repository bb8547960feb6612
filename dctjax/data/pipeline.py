"""The grain input pipeline shared by every model, and per-host -> global batch assembly.

    source -> shuffle(seed) -> repeat(num_epochs) -> random horizontal flip (seeded per example)
      -> host slice [process_index::process_count] -> [host transform of the representation]
      -> batch(global_batch // process_count) -> to_iter_dataset -> mp_prefetch(worker_count)

Shuffle and flip are functions of (seed, global example index), applied before the host slice, so
the examples in global batch k do not depend on the number of hosts (only their order does). Each
epoch is shuffled differently. Batches are {'image': (B, H, W, 3) uint8, 'label': (B,) int32}.

Representations that encode on device (pixels, dct_tokens) see those uint8 batches inside the train
step. A representation with a host transform (sparse_dct: encode, length filtering, chunk
selection, all per example and random) is applied here, after the host slice so each host encodes
only its own examples; dropped examples are filtered out before batching, and the batch then holds
the transform's arrays plus 'label'.

The iterator (`iter(dataset)`) is checkpointable: `get_state()`/`set_state()`, or with orbax
    mngr.save(step, args=ocp.args.Composite(..., data=iterator_save_args(it)))
    mngr.restore(step, args=ocp.args.Composite(..., data=iterator_restore_args(it)))
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import grain
import jax
import numpy as np

from dctjax.data.sources import RandomAccessSource


class HostTransform(grain.transforms.RandomMap):
    """Runs `representation.training_example(image, rng)` per example; None means dropped."""

    def __init__(self, representation: Any):
        self.representation = representation

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict | None:
        out = self.representation.training_example(element["image"], rng)
        if out is None:
            return None
        return {**out, "label": element["label"]}


def _is_kept(element: Any) -> bool:
    return element is not None


class RandomFlip(grain.transforms.RandomMap):
    """Flips example['image'] (H, W, C) left-right with probability p."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        if rng.random() < self.p:
            element = {**element, "image": element["image"][:, ::-1]}
        return element


def worker_init(worker_index: int, worker_count: int) -> None:
    """Runs in each grain worker process: leave SIGTERM and SIGINT to the trainer.

    A cluster's preemption (or Ctrl-C) signals the whole process group. The trainer saves and then
    closes the pipeline, which stops the workers and frees the shared-memory batches they hold; a
    worker killed by the signal itself would leave those segments behind. On Linux a worker is
    also killed when the trainer process dies, so none outlives it.
    """
    del worker_index, worker_count
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)


def per_host_batch_size(global_batch_size: int, process_count: int) -> int:
    """global_batch_size // process_count; ValueError unless it divides exactly."""
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"The global batch size ({global_batch_size}) must be a positive multiple of the "
            f"process count ({process_count})."
        )
    return global_batch_size // process_count


def make_dataset(
    source: RandomAccessSource,
    *,
    global_batch_size: int,
    seed: int,
    num_epochs: int | None = None,
    shuffle: bool = True,
    random_flip: bool = True,
    drop_remainder: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    worker_count: int = 0,
    worker_buffer_size: int = 2,
    read_options: grain.ReadOptions | None = None,
    representation: Any = None,
) -> grain.IterDataset:
    """This host's batches: {'image': (B, H, W, 3) uint8, 'label': (B,) int32}, B = per-host batch.

    Args:
      source: random-access source (see `dctjax.data.sources.make_source`).
      global_batch_size: summed over hosts; must be divisible by process_count.
      seed: seeds the shuffle and the flips (a uint32).
      num_epochs: None repeats forever.
      shuffle, random_flip: switches (both off for evaluation pipelines).
      drop_remainder: drop a last incomplete batch (only matters when num_epochs is set).
      process_index, process_count: default to jax.process_index() / jax.process_count().
      worker_count: grain worker processes (0: read in this process with threads).
      worker_buffer_size: batches buffered per worker.
      read_options: grain.ReadOptions for the threaded reads. None: one reader thread per core
        (grain's default of 16 threads contends for the GIL on small machines).
      representation: if it has a host-side `training_example(image, rng)` (sparse_dct), that
        runs per example in the pipeline; otherwise the pipeline yields uint8 images.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count}).")
    batch_size = per_host_batch_size(global_batch_size, process_count)
    if len(source) == 0:
        raise ValueError(f"The source {source!r} is empty.")
    if num_epochs is not None and drop_remainder and len(source) * num_epochs < global_batch_size:
        raise ValueError(
            f"{num_epochs} epoch(s) of {len(source)} examples hold no full global batch of "
            f"{global_batch_size}."
        )

    if read_options is None:
        read_options = grain.ReadOptions(num_threads=min(16, os.cpu_count() or 1))
    ds = grain.MapDataset.source(source).seed(seed)
    if shuffle:
        ds = ds.shuffle()
    ds = ds.repeat(num_epochs)
    if random_flip:
        ds = ds.random_map(RandomFlip())
    ds = ds[process_index::process_count]
    if hasattr(representation, "training_example"):
        ds = ds.random_map(HostTransform(representation))
        it_ds = ds.to_iter_dataset(read_options).filter(_is_kept)
        it_ds = it_ds.batch(batch_size, drop_remainder=drop_remainder)
    else:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        it_ds = ds.to_iter_dataset(read_options)
    if worker_count > 0:
        it_ds = it_ds.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=worker_count, per_worker_buffer_size=worker_buffer_size
            ),
            worker_init_fn=worker_init,
        )
    return it_ds


def make_global_batch(host_batch: Any, sharding: jax.sharding.Sharding) -> Any:
    """Per-host batch pytree (leading axis B_host) -> global jax.Arrays (leading axis
    B_host * process_count) laid out by `sharding` (e.g. NamedSharding(mesh, P('data')))."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), host_batch
    )


def iterator_save_args(iterator: grain.DatasetIterator) -> Any:
    """orbax save args for the iterator, for an `ocp.args.Composite` entry."""
    return grain.checkpoint.CheckpointSave(iterator)


def iterator_restore_args(iterator: grain.DatasetIterator) -> Any:
    """orbax restore args that set `iterator`'s state in place, for an `ocp.args.Composite`."""
    return grain.checkpoint.CheckpointRestore(iterator)
