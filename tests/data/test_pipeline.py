"""grain pipeline: determinism, epochs, flips, resume (state and orbax), host sharding, global
batches on 8 devices, multiprocess prefetch."""

import itertools

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import flags

from dctjax.data import pipeline, synthetic

N = 40


class IndexSource:
    """Example i: label i; image (2, 3, 3) whose column 0 is 255 (so flips show), rest i % 251."""

    num_classes = None

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict:
        image = np.full((2, 3, 3), i % 251, np.uint8)
        image[:, 0] = 255
        return {"image": image, "label": np.int32(i)}


def _take(ds, n: int) -> list[dict]:
    return list(itertools.islice(iter(ds), n))


def _assert_batches_equal(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])


def test_determinism_epochs_and_flips():
    make = lambda seed: pipeline.make_dataset(IndexSource(), global_batch_size=8, seed=seed)  # noqa: E731
    first = _take(make(1), 10)  # two epochs
    _assert_batches_equal(first, _take(make(1), 10))
    assert not np.array_equal(first[0]["label"], _take(make(2), 1)[0]["label"])
    epoch1 = np.concatenate([b["label"] for b in first[:5]])
    epoch2 = np.concatenate([b["label"] for b in first[5:]])
    assert sorted(epoch1) == list(range(N)) and sorted(epoch2) == list(range(N))
    assert not np.array_equal(epoch1, epoch2)  # reshuffled each epoch
    assert not np.array_equal(epoch1, np.arange(N))
    images = np.concatenate([b["image"] for b in first])
    flipped = images[:, 0, -1, 0] == 255
    assert 0.25 < flipped.mean() < 0.75
    assert np.all(images[~flipped, :, 0] == 255)


def test_switches_and_finite_epochs():
    ds = pipeline.make_dataset(
        IndexSource(), global_batch_size=16, seed=0, num_epochs=1, shuffle=False, random_flip=False
    )
    batches = list(ds)
    assert len(batches) == 2  # 40 // 16, remainder dropped
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), np.arange(32))
    assert np.all(np.concatenate([b["image"] for b in batches])[:, :, 0] == 255)


def test_state_restore_matches_uninterrupted(tmp_path):
    make = lambda: pipeline.make_dataset(IndexSource(), global_batch_size=4, seed=7)  # noqa: E731
    reference = _take(make(), 14)

    it = iter(make())
    _take(it, 6)
    state = it.get_state()
    resumed = iter(make())
    resumed.set_state(state)
    _assert_batches_equal(_take(resumed, 8), reference[6:])

    mngr = ocp.CheckpointManager(tmp_path / "ckpt")
    mngr.save(6, args=ocp.args.Composite(data=pipeline.iterator_save_args(it)))
    mngr.wait_until_finished()
    _take(it, 3)  # the saved state must not move with the live iterator
    restored = iter(make())
    mngr.restore(6, args=ocp.args.Composite(data=pipeline.iterator_restore_args(restored)))
    mngr.close()
    _assert_batches_equal(_take(restored, 8), reference[6:])


def test_two_hosts_disjoint_and_cover_epoch():
    kwargs = dict(global_batch_size=8, seed=3, num_epochs=1, process_count=2)
    hosts = [
        list(pipeline.make_dataset(IndexSource(), process_index=p, **kwargs)) for p in range(2)
    ]
    single = list(pipeline.make_dataset(IndexSource(), global_batch_size=8, seed=3, num_epochs=1))
    assert all(b["label"].shape == (4,) for h in hosts for b in h)
    labels = [np.concatenate([b["label"] for b in h]) for h in hosts]
    assert not set(labels[0]) & set(labels[1])
    assert sorted(np.concatenate(labels)) == list(range(N))

    # Global batch k holds the same examples (and flips) whatever the host count.
    def by_label(batches: list[dict]) -> dict[int, bytes]:
        return {
            int(lab): img.tobytes()
            for b in batches
            for lab, img in zip(b["label"], b["image"], strict=True)
        }

    for k, b in enumerate(single):
        assert by_label([hosts[0][k], hosts[1][k]]) == by_label([b])


def test_batch_not_divisible_and_bad_process():
    with pytest.raises(ValueError, match="multiple of the process count"):
        pipeline.make_dataset(IndexSource(), global_batch_size=9, seed=0, process_count=2)
    with pytest.raises(ValueError, match="process_index"):
        pipeline.make_dataset(
            IndexSource(), global_batch_size=8, seed=0, process_index=2, process_count=2
        )
    with pytest.raises(ValueError, match="no full global batch"):
        pipeline.make_dataset(IndexSource(), global_batch_size=64, seed=0, num_epochs=1)


def test_make_global_batch_8_devices():
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharding = jax.sharding.NamedSharding(mesh, jax.P("data"))
    src = synthetic.SyntheticShapes(8, num_examples=32)
    host = next(iter(pipeline.make_dataset(src, global_batch_size=16, seed=0)))
    batch = pipeline.make_global_batch(host, sharding)
    assert batch["image"].shape == (16, 8, 8, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
    assert batch["image"].sharding == sharding
    assert {s.data.shape for s in batch["image"].addressable_shards} == {(2, 8, 8, 3)}
    np.testing.assert_array_equal(np.asarray(batch["image"]), host["image"])
    np.testing.assert_array_equal(np.asarray(batch["label"]), host["label"])


def test_multiprocess_prefetch_matches_in_process():
    flags.FLAGS.mark_as_parsed()
    src = synthetic.SyntheticShapes(16, num_examples=24)
    make = lambda w: pipeline.make_dataset(src, global_batch_size=4, seed=5, worker_count=w)  # noqa: E731
    _assert_batches_equal(_take(make(2), 9), _take(make(0), 9))


def _signal_dispositions(_):
    import signal

    from dctjax.data.pipeline import worker_init

    worker_init(0, 1)
    return signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)


def test_workers_leave_sigterm_to_the_trainer():
    """A preemption signals the whole process group; grain workers ignore it, so the trainer can
    save, then stop them and free their shared-memory batches (checked in a spawned process)."""
    import multiprocessing
    import signal
    from concurrent.futures import ProcessPoolExecutor

    # ProcessPoolExecutor stops its worker with a sentinel; Pool.__exit__ would SIGTERM it, which
    # this very worker now ignores (and Pool's terminate then waits on it forever)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        term, intr = pool.submit(_signal_dispositions, 0).result(timeout=120)
    assert term == signal.SIG_IGN and intr == signal.SIG_IGN
