"""Where members run: one mesh axis over every device of every process, placing, padding, balancing,
gathering, and the memory budget. Nothing here knows what a member computes."""

import functools
import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MEMBERS = "members"  # the one mesh axis: population members are split over it


def member_mesh() -> Mesh:
    """Every device of every process on the member axis."""
    return Mesh(np.asarray(jax.devices()), (MEMBERS,))


def platform(mesh: Mesh) -> str:
    return mesh.devices.flat[0].platform


def compiler_options(mesh: Mesh) -> dict[str, int] | None:
    """XLA options of the population programs. On CPU, LLVM's -O1 instead of -O2: their thousands of small
    kernels (every branch of every switch) compiled 14% faster (tiny space) and ran 0-20% faster per genome;
    the standalone models' programs gained nothing from it (measured in experiments/README.md)."""
    return {"xla_backend_optimization_level": 1} if platform(mesh) == "cpu" else None


def shard(fn, mesh: Mesh, layout: str):
    """`fn` split over the mesh's devices. `layout` says per argument: m (a leading member axis, split), r
    (replicated), k (a key: replicated if scalar, else one per member) or d (a leading device axis, one entry
    per device, which `fn` sees without it)."""
    num_devices = mesh.devices.size

    @functools.wraps(fn)
    def sharded(*args):
        num_members = jax.tree.leaves(args[0])[0].shape[0]
        if num_members % num_devices:
            raise ValueError(f"{num_members} members do not split evenly over {num_devices} devices; "
                             f"pad them to a multiple (padded_size)")
        specs = tuple(P() if kind == "r" or (kind == "k" and arg.ndim == 0) else P(MEMBERS)
                      for kind, arg in zip(layout, args))

        def local(*args):
            return fn(*(jax.tree.map(lambda a: a[0], arg) if kind == "d" else arg for kind, arg in zip(layout, args)))

        return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P(MEMBERS), check_vma=False)(*args)

    return sharded


def place(mesh: Mesh, tree, spec):
    """Host arrays placed on the mesh with `spec` (across processes too); PRNG keys included."""
    sharding = NamedSharding(mesh, spec)

    def put(leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(leaf)), impl=jax.random.key_impl(leaf))
        leaf = np.asarray(leaf)
        return jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])

    return jax.tree.map(put, tree)


def replicate(mesh: Mesh, tree):
    """On every device, e.g. a dataset split."""
    return place(mesh, tree, P())


def distribute(mesh: Mesh, tree):
    """A leading member (or device) axis split over the devices."""
    return place(mesh, tree, P(MEMBERS))


def to_host(x: jax.Array) -> np.ndarray:
    """All of a member-sharded array on every process' host."""
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def padded_size(num_members: int, num_devices: int) -> int:
    """The smallest member count at least `num_members` that splits evenly over the devices."""
    return -(-num_members // num_devices) * num_devices


def pad_members(rows, total: int):
    """Repeats the last member up to `total` members (e.g. `padded_size`); padding members are computed and
    dropped. Host (numpy) rows stay on the host."""
    return rows[np.minimum(np.arange(total), len(rows) - 1)]


def balanced_order(costs: np.ndarray, num_devices: int) -> np.ndarray:
    """An order of the members whose consecutive equal blocks (one per device) have about equal total cost:
    the costliest member first, each to the least loaded device that still has room."""
    per_device = len(costs) // num_devices
    blocks, loads = [[] for _ in range(num_devices)], np.zeros(num_devices)
    for member in np.argsort(-costs, kind="stable"):
        device = min((d for d in range(num_devices) if len(blocks[d]) < per_device), key=lambda d: loads[d])
        blocks[device].append(member)
        loads[device] += costs[member]
    return np.concatenate(blocks)


def memory_budget_bytes() -> int:
    """Half of what the local devices can hold: their memory on accelerators, the machine's RAM on CPU."""
    devices = jax.local_devices()
    stats = devices[0].memory_stats() if devices[0].platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return stats["bytes_limit"] * len(devices) // 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
