"""Device mesh, parameter/batch shardings and multi-host start-up.

Axes are ('data', 'fsdp'), both `AxisType.Auto` (classic automatic partitioning; jax 0.10's
`jax.make_mesh` defaults to Explicit, and orbax does not preserve Explicit axes on restore). The
global batch is split over *all* devices (`P(('data', 'fsdp'))`); parameters are replicated or, with
the 'fsdp' strategy, split along their largest divisible axis over 'fsdp'. Switching between the two
is a config change (`strategy`, `min_size_mb`, optional regex `rules`), never a code change.

The rules look only at a leaf's path and shape, so the same call shards a whole train state: Adam's
`mu`/`nu` get exactly the shardings of the parameters they mirror, and scalars (step, counts, keys)
are replicated.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp")
STRATEGIES = ("replicate", "fsdp")
MULTIHOST_ENV = "DCTJAX_MULTIHOST"

Rules = Sequence[tuple[str, "PartitionSpec | str"]]


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
    """A ('data', 'fsdp') mesh with Auto axes over `devices` (default: all devices).

    One of the two sizes may be -1: it takes the remaining devices. ValueError if the sizes do not
    multiply to the device count.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if data == -1 and fsdp == -1:
        raise ValueError("At most one of the mesh sizes (data, fsdp) may be -1.")
    for name, size in (("data", data), ("fsdp", fsdp)):
        if size != -1 and size < 1:
            raise ValueError(f"Mesh size {name}={size} must be positive or -1.")
    if data == -1 or fsdp == -1:
        known = fsdp if data == -1 else data
        if n % known:
            raise ValueError(
                f"{n} devices cannot be split into a mesh with "
                f"{'fsdp' if data == -1 else 'data'}={known}."
            )
        data, fsdp = (n // known, fsdp) if data == -1 else (data, n // known)
    if data * fsdp != n:
        raise ValueError(
            f"The mesh data={data} x fsdp={fsdp} = {data * fsdp} does not match the {n} devices."
        )
    return jax.make_mesh((data, fsdp), AXES, axis_types=(AxisType.Auto,) * 2, devices=devices)


def round_to_devices(n: int, mesh: Mesh) -> int:
    """The smallest multiple of the mesh's device count that is >= n (a batch split over it)."""
    return -(-int(n) // mesh.size) * mesh.size


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated sharding on `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over all devices of the mesh."""
    return NamedSharding(mesh, PartitionSpec(AXES))


def _path_str(path: Sequence[Any]) -> str:
    return jax.tree_util.keystr(tuple(path), simple=True, separator="/")


def _nbytes(leaf: Any) -> int:
    dtype = leaf.dtype
    if jax.dtypes.issubdtype(dtype, jax.dtypes.extended):  # PRNG keys
        return 0
    return math.prod(leaf.shape) * np.dtype(dtype).itemsize


def fsdp_spec(shape: Sequence[int], fsdp_size: int, axis: str = "fsdp") -> PartitionSpec:
    """Shard the largest axis divisible by `fsdp_size` (ties: the later axis); P() if none."""
    if fsdp_size <= 1:
        return PartitionSpec()
    candidates = [i for i, d in enumerate(shape) if d % fsdp_size == 0]
    if not candidates:
        return PartitionSpec()
    best = max(candidates, key=lambda i: (shape[i], i))
    return PartitionSpec(*([None] * best), axis)


def param_shardings(
    abstract_params: Any,
    mesh: Mesh,
    strategy: str = "replicate",
    min_size_mb: float = 4.0,
    rules: Rules = (),
) -> Any:
    """NamedShardings (same tree structure) for a pytree of arrays or ShapeDtypeStructs.

    Args:
      abstract_params: any pytree whose leaves have `.shape` and `.dtype` (params, a whole state).
      mesh: a mesh from `make_mesh`.
      strategy: 'replicate', or 'fsdp': leaves of at least `min_size_mb` MiB are split along their
        largest axis divisible by the 'fsdp' mesh size (ties: the later axis); smaller leaves, keys,
        scalars and leaves with no divisible axis are replicated.
      min_size_mb: the FSDP size threshold in MiB.
      rules: optional (regex, spec) pairs tried first, in order; the regex is `re.search`ed in the
        leaf's '/'-joined path (e.g. 'params/blocks/0/attn/qkv/kernel/value'), and the spec is a
        PartitionSpec or a strategy name.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown sharding strategy {strategy!r}; valid: {', '.join(STRATEGIES)}.")
    for _, spec in rules:
        if isinstance(spec, str) and spec not in STRATEGIES:
            raise ValueError(f"Unknown rule strategy {spec!r}; valid: {', '.join(STRATEGIES)}.")
    fsdp_size = mesh.shape.get("fsdp", 1)
    min_bytes = min_size_mb * 2**20

    def by_strategy(name: str, leaf: Any) -> PartitionSpec:
        if name == "replicate" or _nbytes(leaf) < min_bytes or not leaf.shape:
            return PartitionSpec()
        return fsdp_spec(leaf.shape, fsdp_size)

    def one(path: Sequence[Any], leaf: Any) -> NamedSharding:
        name = _path_str(path)
        for pattern, spec in rules:
            if re.search(pattern, name):
                if isinstance(spec, str):
                    spec = by_strategy(spec, leaf)
                return NamedSharding(mesh, spec)
        return NamedSharding(mesh, by_strategy(strategy, leaf))

    return jax.tree_util.tree_map_with_path(one, abstract_params)


def tree_shardings(tree: Any) -> Any:
    """The `.sharding` of every leaf (arrays or ShapeDtypeStructs)."""
    return jax.tree.map(lambda x: x.sharding, tree)


def with_shardings(abstract: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying `shardings`: the target for jit lowering or orbax restore."""
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )


def _multihost_env_hint() -> str | None:
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS"
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
        return "SLURM_NTASKS"
    if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
        return "TPU_WORKER_HOSTNAMES"
    return None


def maybe_initialize_distributed(multihost: bool | None = None, **initialize_kwargs: Any) -> bool:
    """Calls `jax.distributed.initialize(**initialize_kwargs)` only for a multi-host run.

    A run is multi-host when `multihost` is True (the launcher's `--multihost` flag) or, when it is
    None, when the environment variable DCTJAX_MULTIHOST is 1/true/yes. `initialize()` then
    auto-detects TPU pods and SLURM; on bare GPU hosts set JAX_COORDINATOR_ADDRESS (host:port),
    JAX_NUM_PROCESSES and JAX_PROCESS_ID, or pass coordinator_address/num_processes/process_id.
    Call it first thing, before any other JAX call. Without the flag nothing happens; a warning is
    logged if the environment looks multi-host. Returns whether JAX runs distributed.
    """
    if multihost is None:
        multihost = os.environ.get(MULTIHOST_ENV, "").strip().lower() in ("1", "true", "yes")
    if not multihost:
        hint = _multihost_env_hint()
        if hint:
            logging.warning(
                "%s is set but multi-host start-up is off; pass --multihost (or set %s=1) to "
                "call jax.distributed.initialize().",
                hint,
                MULTIHOST_ENV,
            )
        return False
    if not jax.distributed.is_initialized():
        jax.distributed.initialize(**initialize_kwargs)
    logging.info("JAX distributed: process %d of %d.", jax.process_index(), jax.process_count())
    return True
