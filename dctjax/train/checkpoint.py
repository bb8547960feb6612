"""Checkpoints of a run: train state + grain iterator + config, via orbax's CheckpointManager.

Layout: `workdir/checkpoints/<step>/{state, data, config}`:
  state:  the TrainState (params, opt_state, ema_params, step, typed rng key), `StandardSave`;
  data:   the grain iterator's state (`grain.checkpoint.CheckpointSave`), when an iterator is given;
  config: the run's config as JSON.
`<step>` is the number of updates done (`int(state.step)`). Writes are atomic (orbax writes into
`<step>.orbax-checkpoint-tmp*` and renames it on commit), so a crash mid-write leaves the previous
checkpoint intact; unfinished temporary directories are ignored and removed when a Checkpointer
opens the directory. Restores take an abstract target (`state.abstract_train_state`) whose
ShapeDtypeStructs carry the *new* run's shardings, so a checkpoint restores into any mesh/topology.

Preemption: call `reached_preemption(step)` every step on every host. It is True when JAX's
preemption sync point is reached (multi-host runs started with `jax.distributed.initialize`, which
handles the cluster's SIGTERM) or, in a single-process run, once SIGTERM has been received (a handler
installed by the Checkpointer; a second SIGTERM terminates as usual). Then: save, wait, exit with
PREEMPTED_EXIT_CODE.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
from collections.abc import Mapping
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from dctjax.data import pipeline

CHECKPOINT_DIR = "checkpoints"
PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again"; requeue scripts can test for it
_policies = ocp.checkpoint_managers
# Replicated arrays are written in slices, one per replica, only when a slice holds >= 1 MiB:
# slicing the many small leaves (biases, norms, optimiser moments) costs one compiled gather
# each and dominated saving time (~2.5 s a save for a small model on 8 devices), for no gain.
MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL = 1 << 20
_array_handler = ocp.type_handlers.get_type_handler(jax.Array)
if hasattr(_array_handler, "_min_slice_bytes_for_replica_parallel"):  # orbax's ArrayHandler
    _array_handler._min_slice_bytes_for_replica_parallel = MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-able dict of a ConfigDict/mapping (non-JSON values become strings)."""
    if hasattr(config, "to_json_best_effort"):  # ml_collections.ConfigDict
        return json.loads(config.to_json_best_effort())
    if isinstance(config, Mapping):
        return json.loads(json.dumps(dict(config), default=str))
    raise TypeError(f"Expected a ConfigDict or mapping, got {type(config).__name__}.")


class _SigtermFlag:
    """One process-wide SIGTERM handler, installed while any Checkpointer uses it."""

    received = threading.Event()
    _users = 0
    _previous: Any = None

    @classmethod
    def acquire(cls) -> None:
        if cls._users == 0:
            cls.received.clear()
            cls._previous = signal.signal(signal.SIGTERM, cls._handler)
        cls._users += 1

    @classmethod
    def release(cls) -> None:
        cls._users -= 1
        if cls._users == 0 and signal.getsignal(signal.SIGTERM) == cls._handler:
            signal.signal(signal.SIGTERM, cls._previous)

    @classmethod
    def _handler(cls, signum: int, frame: Any) -> None:
        if cls.received.is_set():  # a second SIGTERM: behave as without us
            signal.signal(signal.SIGTERM, cls._previous or signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        cls.received.set()
        logging.warning("SIGTERM received: a checkpoint will be saved at the next step.")


def absolute(path: str | os.PathLike) -> epath.Path:
    """`path` as an absolute epath (orbax refuses relative paths); URIs (gs://...) unchanged."""
    if "://" in os.fspath(path):
        return epath.Path(path)
    return epath.Path(os.path.abspath(os.fspath(path)))


def _on_disk(state: Any) -> Any:
    """The tree written for `state`: a one-EMA TrainState without its empty `extra_emas`, so runs
    with one EMA keep the layout of checkpoints written before several EMAs existed."""
    if getattr(state, "extra_emas", None) == ():
        fields = dataclasses.fields(state)
        return {f.name: getattr(state, f.name) for f in fields if f.name != "extra_emas"}
    return state


class Checkpointer:
    """Saves and restores a run's checkpoints under `workdir/checkpoints` (all hosts call it).

    Args:
      workdir: the run's directory.
      keep: keep the latest `keep` checkpoints (None: all).
      keep_every: also keep every checkpoint whose step is a multiple of this.
      best_metric: also keep the `keep_best` checkpoints with the best `metrics[best_metric]` (pass
        `metrics=` to `save`), e.g. 'fid' with best_mode='min'.
      async_save: write in a background thread (`save` returns after the device -> host copy).
      config: a ConfigDict/mapping stored as JSON with every checkpoint.
      handle_sigterm: single-process runs only: SIGTERM makes `reached_preemption` True.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        keep: int | None = 3,
        keep_every: int | None = None,
        best_metric: str | None = None,
        best_mode: str = "min",
        keep_best: int = 1,
        async_save: bool = True,
        config: Any = None,
        handle_sigterm: bool = True,
    ):
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}.")
        policies: list[Any] = [_policies.LatestN(keep)]
        if keep_every:
            policies.append(_policies.EveryNSteps(keep_every))
        if best_metric:
            worst = float("inf") if best_mode == "min" else float("-inf")
            policies.append(
                _policies.BestN(
                    get_metric_fn=lambda m: m.get(best_metric, worst),
                    reverse=best_mode == "min",
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies[0]
            if len(policies) == 1
            else _policies.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self.directory = absolute(workdir) / CHECKPOINT_DIR
        self._mngr = ocp.CheckpointManager(self.directory, options=options)
        self._config = None if config is None else config_to_dict(config)
        self._handles_sigterm = (
            handle_sigterm
            and jax.process_count() == 1
            and threading.current_thread() is threading.main_thread()
        )
        if self._handles_sigterm:
            _SigtermFlag.acquire()

    def reached_preemption(self, step: int) -> bool:
        """True when the run should save now and exit (see the module docstring)."""
        if self._handles_sigterm and _SigtermFlag.received.is_set():
            return True
        return self._mngr.reached_preemption(step)

    # -- queries ------------------------------------------------------------------------------
    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mngr.all_steps())

    def _has_item(self, step: int, name: str) -> bool:
        path = ocp.step.find_step_path(self.directory, ocp.step.standard_name_format(), step=step)
        return (path / name).exists()

    # -- save / restore -----------------------------------------------------------------------
    def save(
        self,
        step: int,
        state: Any,
        iterator: grain.DatasetIterator | None = None,
        *,
        metrics: Mapping[str, float] | None = None,
    ) -> bool:
        """Saves the state (and iterator, config) as `step`; False if `step` is already saved."""
        step = int(step)
        if step in self._mngr.all_steps():
            return False
        items: dict[str, Any] = {"state": ocp.args.StandardSave(_on_disk(state))}
        if iterator is not None:
            items["data"] = pipeline.iterator_save_args(iterator)
        if self._config is not None:
            items["config"] = ocp.args.JsonSave(self._config)
        if metrics is not None:
            metrics = {k: float(jax.device_get(v)) for k, v in metrics.items()}
        return self._mngr.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

    def restore(
        self, step: int, abstract_state: Any, iterator: grain.DatasetIterator | None = None
    ) -> Any:
        """The state at `step`, laid out as `abstract_state`'s shardings; sets `iterator` in place."""
        items: dict[str, Any] = {"state": ocp.args.StandardRestore(_on_disk(abstract_state))}
        if iterator is not None:
            if self._has_item(step, "data"):
                items["data"] = pipeline.iterator_restore_args(iterator)
            else:
                logging.warning("Checkpoint %d holds no data iterator; it starts afresh.", step)
        restored = self._mngr.restore(step, args=ocp.args.Composite(**items))["state"]
        if isinstance(restored, dict) and not isinstance(abstract_state, dict):
            return abstract_state.replace(**restored)
        return restored

    def restore_latest(
        self, abstract_state: Any, iterator: grain.DatasetIterator | None = None
    ) -> tuple[Any, int] | None:
        """(state, step) from the latest complete checkpoint, or None when there is none."""
        step = self.latest_step()
        if step is None:
            return None
        return self.restore(step, abstract_state, iterator), step

    def restore_config(self, step: int | None = None) -> dict[str, Any] | None:
        """The config saved with `step` (default: latest), or None."""
        step = self.latest_step() if step is None else step
        if step is None or not self._has_item(step, "config"):
            return None
        restored = self._mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        return restored["config"]

    def wait_until_finished(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        """Waits for pending writes, closes the manager and restores the SIGTERM handler."""
        self._mngr.wait_until_finished()
        self._mngr.close()
        if self._handles_sigterm:
            _SigtermFlag.release()
            self._handles_sigterm = False

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def resolve_step_dir(path: str | os.PathLike, step: int | None = None) -> epath.Path:
    """The directory of one complete checkpoint.

    `path`: a workdir, its checkpoints directory, or one step's directory. `step`: which step
    (default: the latest complete one). FileNotFoundError names what is missing.
    """
    path = absolute(path)
    if (path / "state").is_dir():
        return path
    root = path / CHECKPOINT_DIR if (path / CHECKPOINT_DIR).is_dir() else path
    if step is not None:
        try:
            found = ocp.step.find_step_path(root, ocp.step.standard_name_format(), step=int(step))
        except ValueError:
            found = None
        if found is None or not (found / "state").is_dir():
            raise FileNotFoundError(f"No checkpoint for step {step} under {path}.")
        return found
    latest = ocp.step.latest_step_metadata(root, ocp.step.standard_name_format())
    if latest is None:
        raise FileNotFoundError(f"No complete checkpoint under {path}.")
    return latest.path


def _abstract_like(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def restore_weights(step_dir: str | os.PathLike, target: dict[str, Any]) -> dict[str, Any]:
    """Restores only the state entries named in `target` (e.g. {'ema_params': abstract_tree}).

    `target` leaves are `jax.ShapeDtypeStruct`s with shardings; the optimiser state is not read.
    """
    return ocp.PyTreeCheckpointer().restore(
        epath.Path(step_dir) / "state",
        args=ocp.args.PyTreeRestore(
            item=target,
            restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True,
        ),
    )


def init_from(path: str | os.PathLike, state: Any, *, use_ema_for_params: bool = False) -> Any:
    """`state` with params and ema_params loaded from a checkpoint (weights-only fine-tuning).

    `path`: a workdir, its checkpoints directory (latest step) or one step's directory. Shapes and
    shardings come from `state`; step, optimiser state and rng are kept (a fresh run's).
    `use_ema_for_params`: start both params and EMA from the checkpoint's EMA weights.
    """
    step_dir = resolve_step_dir(path)
    target = {
        "params": _abstract_like(state.params),
        "ema_params": _abstract_like(state.ema_params),
    }
    restored = restore_weights(step_dir, target)
    logging.info("Initialised params and EMA from %s.", step_dir)
    ema = restored["ema_params"]
    params = jax.tree.map(lambda x: x.copy(), ema) if use_ema_for_params else restored["params"]
    return state.replace(params=params, ema_params=ema)
