"""Strict JAX flags for the whole suite, so that silent broadcasting and dtype bugs fail loudly; and a compilation
cache of the suite's own, so that it neither writes into the user's `~/.cache/evonas/jax` nor reads from it (a run
here is as cold as on a fresh CI machine)."""

import atexit
import os
import shutil
import tempfile

CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="evonas-tests-jax-cache-")  # subprocesses too
atexit.register(shutil.rmtree, CACHE, ignore_errors=True)

import jax  # after the cache directory is set, which jax reads when imported

jax.config.update("jax_numpy_rank_promotion", "raise")  # an implicit [N] + [M, N] broadcast is an error
