"""Run directories as the user's property: checked before anything is written, never replaced by surprise.

A new search's `--out` must be absent or an empty directory; one that holds a run, or anything else, is
refused unless `--overwrite` is given, which replaces it whole. Until the new run's first checkpoint is on
disk, a failure (or Ctrl-C) undoes everything: the new directory is removed, with any parents it needed,
and a directory that `--overwrite` was replacing is put back.
"""

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from evonas.errors import RunDirError

CONFIG, SUMMARY, CHECKPOINTS = "config.json", "summary.json", "checkpoints"


def describe(path: Path) -> str:
    """What `path` holds, in words, for an error: "a finished search run", "an unfinished search run", ..."""
    if (path / SUMMARY).is_file():
        return "a finished search run"
    if (path / CONFIG).is_file():
        return "an unfinished search run"
    return "files"


def check_new(out: str | Path, overwrite: bool = False) -> None:
    """Raises a RunDirError unless a new search may be written to `out`. Writes nothing."""
    if not str(out):
        raise RunDirError("--out is empty; name a directory")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file; give a directory (absent or empty)")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunDirError(f"--out {out}: {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK | os.X_OK) and not out.exists():
                raise RunDirError(f"--out {out}: cannot create it, {parent} is not writable")
            break
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise RunDirError(f"--out {out} holds {describe(out)}; choose another directory, `--resume {out}` to "
                              f"continue an unfinished run, or --overwrite to replace it whole")
        resolved = out.resolve()
        if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
            raise RunDirError(f"--out {out} holds the current directory, which --overwrite cannot replace")
        if not os.access(resolved.parent, os.W_OK | os.X_OK):
            raise RunDirError(f"--out {out}: cannot replace it, {resolved.parent} is not writable")


@contextlib.contextmanager
def created(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Makes `out` a new, empty directory for the body of the `with`, which writes the run's first files.

    If the body raises (KeyboardInterrupt included), `out` is removed with the parents made for it, and a
    directory that `overwrite` replaced is restored; once the body has finished, the old one is deleted.
    """
    check_new(out, overwrite)
    out = Path(out).resolve()
    existed = out.is_dir()
    first_made = next((p for p in [*reversed(out.parents), out] if not p.exists()), out)
    replaced = None
    if existed and any(out.iterdir()):
        replaced = out.with_name(f".{out.name}.replaced-{os.getpid()}")
        out.rename(replaced)
    try:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunDirError(f"--out {out}: cannot create it ({error.strerror})") from None
        yield out
    except BaseException:
        shutil.rmtree(out if existed else first_made, ignore_errors=True)
        if replaced is not None:
            replaced.rename(out)
        elif existed:
            out.mkdir()  # as empty as it was
        raise
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def generations_done(run_dir: str | Path) -> int | None:
    """Generations that the run's newest checkpoint covers; None if it has none (or is no run)."""
    steps = [int(p.name) for p in (Path(run_dir) / CHECKPOINTS).glob("*") if p.name.isdigit()]
    return max(steps) if steps else None


def num_generations(run_dir: str | Path) -> int | None:
    """Generations the run was configured for, from its config.json; None if that cannot be read."""
    try:
        config = json.loads((Path(run_dir) / CONFIG).read_text())["config"]
        return config["num_children"] // config["children_per_generation"]
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return None


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / SUMMARY).is_file()
