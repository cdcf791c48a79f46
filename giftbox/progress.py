"""The terminal display of several targets running at once, and each target's reporter.

``make_display`` picks one: ``SerialDisplay`` (one target at a time: everything the reporter
says goes through, as in ``giftbox build``), ``LineDisplay`` (not a terminal, e.g. CI: one line
per stage event, prefixed with its target) or ``LiveDisplay`` (a terminal: one line per
running target, redrawn in place). Each target gets its own ``TargetReporter``, which keeps a
transcript of its stages (the log the report links to) and feeds the shared display.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from giftbox.ui import Reporter

if TYPE_CHECKING:
    from giftbox.targets import Outcome



class Display:
    """Where per-target reporters send their events. Thread-safe."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.lock = threading.Lock()

    def start(self, targets: Sequence[str]) -> None:
        pass

    def stage(self, target: str, name: str, event: str, elapsed: float | None = None) -> None:
        pass

    def line(self, target: str, text: str) -> None:
        pass

    def finish(self, target: str, outcome: Outcome) -> None:
        with self.lock:
            print(outcome.line(), file=self.stream, flush=True)

    def close(self) -> None:
        pass


class SerialDisplay(Display):
    """One target at a time: everything the reporter says goes through, as in ``build``."""

    def line(self, target: str, text: str) -> None:
        with self.lock:
            print(text, file=self.stream, flush=True)


class LineDisplay(Display):
    """Not a terminal (CI): one line per stage event, prefixed with its target, so that
    interleaved targets stay readable in a log."""

    def stage(self, target: str, name: str, event: str, elapsed: float | None = None) -> None:
        suffix = f" after {elapsed:.1f}s" if elapsed is not None else ""
        with self.lock:
            print(f"[{target}] {event} {name}{suffix}", file=self.stream, flush=True)


class LiveDisplay(Display):
    """A terminal: one line per target, redrawn in place, with its stage and elapsed time."""

    def __init__(self, stream: TextIO | None = None, interval: float = 0.5) -> None:
        super().__init__(stream)
        self.interval = interval
        self.rows: dict[str, list[Any]] = {}  # target -> [state, stage, started, ended]
        self.drawn = 0
        self.done: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self, targets: Sequence[str]) -> None:
        for t in targets:
            self.rows[t] = ["queued", "", None, None]
        self._thread.start()

    def stage(self, target: str, name: str, event: str, elapsed: float | None = None) -> None:
        with self.lock:
            row = self.rows.setdefault(target, ["queued", "", None, None])
            if row[2] is None:
                row[0], row[2] = "running", time.monotonic()
            if event == "start":
                row[1] = name

    def finish(self, target: str, outcome: Outcome) -> None:
        with self.lock:
            row = self.rows.setdefault(target, ["queued", "", None, None])
            row[0], row[1], row[3] = outcome.outcome, outcome.version or outcome.detail, \
                time.monotonic()
            # Finished targets are printed once above the live block, never redrawn.
            self.done.append(outcome.line())
            self._draw()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self.lock:
                self._draw()

    def _draw(self) -> None:
        out = self.stream
        width = _term_width()
        if self.drawn:
            out.write(f"\x1b[{self.drawn}F\x1b[J")  # back to the block's top, clear below
        for text in self.done:
            out.write(text + "\n")
        self.done.clear()
        now = time.monotonic()
        live = [(t, r) for t, r in self.rows.items() if r[0] in ("queued", "running")]
        for target, (state, stage, started, _ended) in live:
            elapsed = f"{now - started:6.0f}s" if started is not None else "      "
            text = f"  {state:<7} {elapsed}  {target:<36} {stage}"
            out.write(text[: width - 1] + "\n")
        self.drawn = len(live)
        out.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with self.lock:
            self._draw()


def _term_width() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except OSError:
        return 120


def make_display(jobs: int, stream: TextIO | None = None, *,
                 smart_terminal: bool = True) -> Display:
    """One line per stage for one job; for several, a live table on a terminal that can
    redraw (``Settings.smart_terminal``), else one line per event."""
    stream = stream or sys.stderr
    if jobs <= 1:
        return SerialDisplay(stream)
    if stream.isatty() and smart_terminal:
        return LiveDisplay(stream)
    return LineDisplay(stream)


class TargetReporter(Reporter):
    """A Reporter for one target: a transcript file (the target's log) plus the display."""

    def __init__(self, target: str, display: Display, transcript: Path) -> None:
        transcript.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(transcript, "w")  # noqa: SIM115 - closed by close()
        super().__init__(self._file)
        # Parallel targets interleave: CI log groups would nest nonsensically.
        self.ci_groups = False
        self.target = target
        self.display = display
        self.transcript = transcript

    def info(self, message: str) -> None:
        super().info(message)
        self.display.line(self.target, message)

    def detail(self, message: str) -> None:
        super().detail(message)
        self.display.line(self.target, f"    {message}")

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.display.stage(self.target, name, "start")
        start = time.monotonic()
        try:
            with super().stage(name):
                yield
        except BaseException:
            self.display.stage(self.target, name, "failed", time.monotonic() - start)
            raise
        self.display.stage(self.target, name, "done", time.monotonic() - start)

    def close(self) -> None:
        self._file.close()
