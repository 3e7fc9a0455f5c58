"""Python config files, big_vision's convention: `--config FILE.py[:ARG]` runs the module's `get_config(ARG)`.

A config file is a program that returns the config a JSON `--config` file would hold:

    def get_config(arg=None):
        smoke = arg == "smoke"
        return {"num_children": 4 if smoke else 96, "space": {"widths": [32, 64]}}

`--config FILE.py` calls `get_config()` (the full run); `--config FILE.py:smoke` calls `get_config("smoke")`,
the text after the colon passed as one string, which the module interprets (CI uses `smoke`). The module's
directory is importable while it loads, so configs may share settings through a module beside them. Its
docstring states the command, the expected runtime and the expected result. Every way it can fail (no file,
a failing import, no `get_config`, `get_config` raising or returning something other than a dict) is a
one-line `ConfigError` naming the file; the dict's keys and values are checked by the same `Option`
declarations as a JSON file's.
"""

import contextlib
import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evonas.errors import ConfigError, InputError

_PYTHON = re.compile(r"(?P<path>.+\.py)(?::(?P<arg>.*))?", re.DOTALL)


def split_spec(spec: str) -> tuple[Path, str | None] | None:
    """(path, arg) of a Python config spec `FILE.py[:ARG]`; None if `spec` names no .py file (a JSON file)."""
    match = _PYTHON.fullmatch(str(spec))
    return None if match is None else (Path(match["path"]), match["arg"])


def is_python_config(spec: str) -> bool:
    return split_spec(spec) is not None


def load_python_config(spec: str, function: str = "get_config", label: str = "--config") -> dict[str, Any]:
    """What `function(ARG)` of the module `FILE.py` returns for `spec` = `FILE.py[:ARG]`, as plain JSON values.

    The values go through JSON (tuples become lists), so that config.json records exactly what the run used.

    Raises:
        ConfigError: one line naming the file (after `label`, the option or argument that gave it): it cannot
            be read or imported, has no `function`, which raised or returned something other than a dict of
            JSON values.
    """
    path, arg = split_spec(spec) or (Path(spec), None)
    call = f"{function}({'' if arg is None else repr(arg)})"
    module = load_module(path, label)
    make = getattr(module, function, None)
    if not callable(make):
        raise ConfigError(f"{label} {path} has no {function}() function; a Python config defines "
                          f"{function}(arg=None) returning a dict of config keys")
    try:
        values = make() if arg is None else make(arg)
    except Exception as error:  # noqa: BLE001 - any failure of the user's code is one line naming the file
        raise ConfigError(f"{label} {path}: {call} raised {_one_line(error)}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{label} {path}: {call} must return a dict of config keys, got {type(values).__name__}")
    try:
        return json.loads(json.dumps(values))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{label} {path}: {call} returned a value that is not JSON data: {error}") from None


def load_module(path: Path, label: str = "--config"):
    """The module in `path`, imported under a private name, with its directory importable while it runs."""
    if not path.is_file():
        reason = "it is a directory" if path.is_dir() else "no such file"
        raise InputError(f"{label} {path}: cannot read it ({reason})")
    module_spec = importlib.util.spec_from_file_location(f"evonas_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        with _importable(path.resolve().parent):
            module_spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - a syntax error, a failed import, ... in the user's file
        raise ConfigError(f"{label} {path}: importing it raised {_one_line(error)}") from None
    return module


@contextlib.contextmanager
def _importable(directory: Path) -> Iterator[None]:
    """`directory` on sys.path; the modules imported from it are forgotten after, so another config directory's
    module of the same name (e.g. common.py) is not mistaken for it."""
    before = set(sys.modules)
    sys.path.insert(0, str(directory))
    try:
        yield
    finally:
        sys.path.remove(str(directory))
        for name in set(sys.modules) - before:
            origin = getattr(sys.modules[name], "__file__", None)
            if origin and Path(origin).resolve().parent == directory:
                del sys.modules[name]


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__
