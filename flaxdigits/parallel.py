"""Data-parallel training the JAX way: a 1-D `data` mesh, `NamedSharding`, `jax.distributed`.

Each global batch is split over the mesh's devices along its batch axis; parameters and the
optimizer state are replicated, and XLA's SPMD partitioner inserts the gradient all-reduce. The
shuffle and the augmentation's random numbers are drawn replicated, so a run on N devices sees
exactly the batches of a one-device run; only the order of the gradient sums differs.

Across processes (hosts), `initialize` starts JAX's distributed runtime; the mesh then spans
every process's devices, and every process runs the same program on its own devices' shard of
each batch. On CPU the collectives go through gloo (JAX's default CPU implementation).
"""

from __future__ import annotations

import socket
import time
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from flaxdigits.errors import InputError

AXIS = "data"
INIT_TIMEOUT = 120  # seconds for all processes to find the coordinator and each other
INIT_GRACE = 5  # more seconds JAX's registration gets after the coordinator was reached


def data_mesh(devices: int | None = None) -> Mesh | None:
    """A 1-D `data` mesh over the first `devices` devices (None: all of them, across processes),
    or None when that is one device: a one-device run stays the plain single-device program."""
    available = jax.devices()
    n = len(available) if devices is None else int(devices)
    if n < 1:
        raise InputError(f"devices must be at least 1, got {n}")
    if n > len(available):
        hint = (f" (for {n} CPU devices, set JAX_NUM_CPU_DEVICES={n} before starting)"
                if available[0].platform == "cpu" else "")
        raise InputError(f"{n} devices asked for, but {len(available)} visible{hint}")
    if jax.process_count() > 1 and n != len(available):
        raise InputError(f"with {jax.process_count()} processes the mesh spans all "
                         f"{len(available)} devices; --devices {n} would leave some idle")
    if n == 1:
        return None
    # Auto axes: the compiler propagates the batch sharding from one constraint per epoch.
    return jax.make_mesh((n,), (AXIS,), axis_types=(AxisType.Auto,), devices=available[:n])


def mesh_size(mesh: Mesh | None) -> int:
    """The number of devices a mesh spans (1 for no mesh)."""
    return 1 if mesh is None else mesh.size


def check_batch(batch_size: int, mesh: Mesh | None) -> None:
    """Refuse a batch size that does not split evenly over the mesh's devices."""
    n = mesh_size(mesh)
    if batch_size % n:
        raise InputError(f"batch size {batch_size} is not divisible by the {n} devices: each "
                         f"device takes an equal share of every batch (try "
                         f"{max(n, batch_size // n * n)})")


def batch_sharding(mesh: Mesh, batch_axis: int, ndim: int) -> NamedSharding:
    """Arrays split over the mesh along `batch_axis`, whole along the others."""
    spec = [None] * ndim
    spec[batch_axis] = AXIS
    return NamedSharding(mesh, PartitionSpec(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
    """Arrays held whole by every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def constrain(x: Any, sharding: NamedSharding | None) -> Any:
    """`x` (a pytree) under a sharding constraint inside a traced program; as is without one."""
    if sharding is None:
        return x
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, sharding), x)


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Every array of `tree` placed whole on every device of `mesh` (as is without a mesh).

    Built from each process's own copy (`make_array_from_callback`), so it works across
    processes too, where every process holds the same values (the data, a seeded init).
    """
    if mesh is None:
        return tree
    sharding = replicated(mesh)

    def put(a):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(a)
            return jax.random.wrap_key_data(put(jax.random.key_data(a)), impl=impl)
        host = np.asarray(a)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def local(tree: Any) -> Any:
    """A replicated global `tree` as this process's single-device copy (for evaluation,
    checkpoints and the returned model), as is when it already lives on one device."""
    def one(a):
        if isinstance(a, jax.Array) and len(a.sharding.device_set) > 1:
            if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
                return a  # keys stay with the program that uses them
            return a.addressable_data(0)
        return a

    return jax.tree.map(one, tree)


def is_primary() -> bool:
    """Whether this is process 0, the one that writes checkpoints and reports."""
    return jax.process_index() == 0


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout: int = INIT_TIMEOUT) -> None:
    """Join a multi-process run through `jax.distributed.initialize`, before any JAX work.

    With no arguments JAX detects the cluster (Slurm, Open MPI, Cloud TPU pods) or reads
    $JAX_COORDINATOR_ADDRESS. A process other than 0 first checks that the coordinator accepts
    connections within `timeout` seconds: JAX's own client aborts the whole process (no Python
    exception) when it cannot register, so an unreachable address would end in a stack trace;
    peers that never come still end that way, after `timeout` + INIT_GRACE seconds.
    """
    if timeout < 1:
        raise InputError(f"the initialization timeout must be at least 1 s, got {timeout}")
    if num_processes is not None and num_processes < 1:
        raise InputError(f"--num-processes must be at least 1, got {num_processes}")
    if process_id is not None and num_processes is not None and not \
            0 <= process_id < num_processes:
        raise InputError(f"--process-id must be in 0..{num_processes - 1}, got {process_id}")
    if coordinator is not None:
        host, port = split_address(coordinator)
        if process_id:  # process 0 runs the coordinator itself
            wait_for(host, port, timeout)
    jax.distributed.initialize(coordinator, num_processes, process_id,
                               initialization_timeout=timeout + INIT_GRACE)


def split_address(address: str) -> tuple[str, int]:
    """HOST:PORT (or [IPv6]:PORT) as (host, port), or a one-line error."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"the coordinator must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def wait_for(host: str, port: int, timeout: float) -> None:
    """Return once HOST:PORT accepts a TCP connection; an InputError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(2.0, timeout)):
                return
        except OSError as e:
            reason = e.strerror or type(e).__name__
            if time.monotonic() + 0.25 >= deadline:
                raise InputError(f"cannot reach the coordinator at {host}:{port} within "
                                 f"{timeout:g} s ({reason}): start process 0 first, or check "
                                 f"the address") from None
            time.sleep(0.25)
