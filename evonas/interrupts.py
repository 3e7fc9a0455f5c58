"""Ctrl-C that is never lost.

Python turns SIGINT into a KeyboardInterrupt wherever the main thread happens to be. When that is inside a
garbage-collection callback or a `__del__` (JAX runs one at every collection), Python prints "Exception ignored"
and drops it, and the search would run on to the end. Inside `remembered()`, a SIGINT still raises at once, and is
also remembered, so that `check()` at the search's next safe point (a generation's start) raises it again; the
dropped one is not printed, since it is not lost.
"""

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

_pending = False


def _on_sigint(signum, frame):
    global _pending
    _pending = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def remembered() -> Iterator[None]:
    """SIGINT handling for the body: raise now, and remember for `check` (only in the main thread, and only where
    SIGINT is not ignored: a search started under `nohup`, or as a script's background job, keeps ignoring it)."""
    global _pending
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return
    _pending = False
    previous, previous_hook = signal.signal(signal.SIGINT, _on_sigint), sys.unraisablehook

    def hook(unraisable):  # a dropped Ctrl-C is raised again by `check`, so its traceback would only confuse
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous_hook(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook
        _pending = False


def check() -> None:
    """Raises KeyboardInterrupt if a SIGINT came inside `remembered()`, even one Python dropped on the way."""
    if _pending:
        raise KeyboardInterrupt
