import platform
import subprocess
import sys

import pytest

REPORT = "import evonas; print(evonas.ALLOCATOR)"


def allocator_reported(env: dict[str, str]) -> str:
    """What a fresh process that imports evonas reports, under extra environment variables."""
    result = subprocess.run([sys.executable, "-c", REPORT], env=env, capture_output=True, text=True, check=True)
    return result.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_importing_evonas_makes_glibc_keep_freed_memory():
    assert allocator_reported({}).startswith("glibc mallopt MALLOC_MMAP_MAX_=0")


def test_opt_out_keeps_glibc_defaults():
    assert "mallopt" not in allocator_reported({"EVONAS_MALLOPT": "0"})


def test_preloaded_allocator_is_left_alone():
    assert allocator_reported({"LD_PRELOAD": "libjemalloc.so.2-not-present"}) == "jemalloc (LD_PRELOAD)"
