"""Strict JAX flags for the whole suite, so that silent broadcasting and dtype bugs fail loudly."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")  # an implicit [N] + [M, N] broadcast is an error
