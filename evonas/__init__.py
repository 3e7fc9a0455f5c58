"""evonas: evolutionary neural-architecture search for text models, in JAX."""

from evonas.allocator import configure_allocator

ALLOCATOR = configure_allocator()  # first, before JAX allocates: evonas/allocator.py says why
