"""Strict JAX flags for the whole suite, so that silent broadcasting and dtype bugs fail loudly; and a compilation
cache of the suite's own, shared by its workers, so that it neither writes into the user's `~/.cache/evonas/jax` nor
reads from it (a run here is as cold as on a fresh CI machine); and the figures tests record for the end of the run."""

import atexit
import os
import shutil
import tempfile

# One cache for the whole run: pytest-xdist's workers inherit it from the process that starts them, which alone
# removes it at the end; so does every subprocess a test starts. A program compiles once, whichever worker meets it
# first. Without a size limit JAX neither locks the cache nor scans the whole directory on each write (the
# executed-FLOPs test alone writes hundreds of eager programs); an entry read while another process still writes it
# fails to decompress, and JAX then warns and compiles the program itself.
if "EVONAS_TESTS_JAX_CACHE" not in os.environ:  # the first process of the run
    os.environ["EVONAS_TESTS_JAX_CACHE"] = tempfile.mkdtemp(prefix="evonas-tests-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["EVONAS_TESTS_JAX_CACHE"], ignore_errors=True)
CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["EVONAS_TESTS_JAX_CACHE"]
# Every program, however quick to compile: tests build the same small standalone models and searches again and again.
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

import jax  # after the cache directory is set, which jax reads when imported

jax.config.update("jax_numpy_rank_promotion", "raise")  # an implicit [N] + [M, N] broadcast is an error


def pytest_terminal_summary(terminalreporter):
    """Figures a test records as its "summary" property, printed at the end of the run (pytest-xdist's workers
    send properties, not output, back to the terminal)."""
    for report in terminalreporter.stats.get("passed", []):
        for name, value in report.user_properties:
            if name == "summary":
                terminalreporter.write_line(value)
