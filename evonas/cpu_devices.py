"""One JAX CPU device per core, asked for at import, so that a CPU host trains population members side by side.

XLA:CPU runs a program on a device one kernel after another, and a population member's step is a chain
of small kernels that mostly keep one core busy. Given a device per core, the member axis is split over
them as over GPUs, and each core trains its own members: on 2 cores, 2 devices trained 1.9x (16 tiny
genomes) and 1.5x (8 mid ones) the member-steps per second of 1, with the same losses
(`experiments/README.md`). A standalone model's jitted step runs as fast on either setting, and more
devices than cores was slower than one per core.
"""

import os

import jax

FORCED_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def configure_cpu_devices() -> int | None:
    """Asks JAX for one CPU device per core this process may run on; returns that count, or None where it
    leaves JAX alone: a count already chosen (`JAX_NUM_CPU_DEVICES`, `jax_num_cpu_devices` or XLA_FLAGS'
    `--xla_force_host_platform_device_count`), or JAX's backends already started by the importer.
    GPU and TPU hosts are unaffected: their population runs on the accelerators."""
    if jax.config.jax_num_cpu_devices >= 0 or FORCED_DEVICES_FLAG in os.environ.get("XLA_FLAGS", ""):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        jax.config.update("jax_num_cpu_devices", cores)
    except RuntimeError:  # the backends already exist; their devices stay as they are
        return None
    return cores
