"""evonas: evolutionary neural-architecture search for text models, in JAX."""

from evonas.allocator import configure_allocator
from evonas.cpu_devices import configure_cpu_devices

ALLOCATOR = configure_allocator()  # first, before JAX allocates: evonas/allocator.py says why
CPU_DEVICES = configure_cpu_devices()  # before JAX starts its backends: evonas/cpu_devices.py says why
