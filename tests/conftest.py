"""Strict JAX flags for the whole suite, so that silent broadcasting and dtype bugs fail loudly; and a compilation
cache of the suite's own, so that it neither writes into the user's `~/.cache/evonas/jax` nor reads from it (a run
here is as cold as on a fresh CI machine); and the figures tests record for the end of the run."""

import atexit
import os
import shutil
import tempfile

CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="evonas-tests-jax-cache-")  # subprocesses too
# Every program, however quick to compile: tests build the same small standalone models and searches again and again.
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
atexit.register(shutil.rmtree, CACHE, ignore_errors=True)

import jax  # after the cache directory is set, which jax reads when imported

jax.config.update("jax_numpy_rank_promotion", "raise")  # an implicit [N] + [M, N] broadcast is an error


def pytest_terminal_summary(terminalreporter):
    """Figures a test records as its "summary" property, printed at the end of the run (pytest-xdist's workers
    send properties, not output, back to the terminal)."""
    for report in terminalreporter.stats.get("passed", []):
        for name, value in report.user_properties:
            if name == "summary":
                terminalreporter.write_line(value)
