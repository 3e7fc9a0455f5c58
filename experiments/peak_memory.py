"""The peak memory of the running process, as the benchmark's child processes report it."""

from pathlib import Path


def peak_rss_bytes() -> int:
    """This process's peak resident set, VmHWM: unlike ru_maxrss it does not carry the parent's peak across exec."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
