"""A change is never stopped half-way: signals wait from its journal to the journal's removal
(``critical``), and output to a closed pipe is dropped rather than raised
(``giftbox promote … | head -1`` still completes the promotion it started).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

from giftbox.ui import Reporter

_DEFERRED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE)


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """From the journal to its removal, SIGTERM, SIGINT, SIGHUP and SIGPIPE wait: the change
    completes (or, before its swap, is undone) and the signal is then delivered as before.
    Handlers, not a blocked mask: tools started meanwhile (gpg, its agent) get the defaults."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda n, _f: caught.append(n)) for s in _DEFERRED_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for num in dict.fromkeys(caught):
            os.kill(os.getpid(), num)


class _QuietOnClosed(Reporter):
    """A reporter whose output may be a closed pipe (``giftbox promote … | head -1``): the
    change goes on silently rather than stopping half-way at a write."""

    def __init__(self, inner: Reporter) -> None:
        super().__init__(inner.stream, quiet=inner.quiet, ci_groups=inner.ci_groups)

    def _say(self, text: str) -> None:
        if self.quiet:
            return
        try:
            print(text, file=self.stream, flush=True)
        except (OSError, ValueError):  # EPIPE, or the stream closed under us
            self.quiet = True

    def info(self, message: str) -> None:
        self._say(message)

    def detail(self, message: str) -> None:
        self._say(f"    {message}")


def quiet_on_closed_output(reporter: Reporter) -> Reporter:
    return reporter if isinstance(reporter, _QuietOnClosed) else _QuietOnClosed(reporter)
