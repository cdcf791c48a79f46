"""What the operator sees: named, timed stages, and progress on long work.

Stages print to stderr so that ``--json`` leaves stdout for the one machine-readable result.
Under GitHub Actions stages fold into groups, as cibuildwheel's logger does.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TextIO


class Reporter:
    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False,
                 ci_groups: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.ci_groups = ci_groups  # Settings.ci_groups: fold stages into GitHub log groups

    def info(self, message: str) -> None:
        if not self.quiet:
            print(message, file=self.stream, flush=True)

    def detail(self, message: str) -> None:
        if not self.quiet:
            print(f"    {message}", file=self.stream, flush=True)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """A named step: announced, timed, and reported as done or failed."""
        if self.ci_groups:
            self.info(f"::group::{name}")
        else:
            self.info(f"==> {name}")
        start = time.monotonic()
        try:
            yield
        except BaseException:
            elapsed = time.monotonic() - start
            if self.ci_groups:
                self.info("::endgroup::")
            self.info(f"    {name}: failed after {elapsed:.1f}s")
            raise
        elapsed = time.monotonic() - start
        if self.ci_groups:
            self.info("::endgroup::")
        self.info(f"    {name}: done in {elapsed:.1f}s")


NULL_REPORTER = Reporter(quiet=True)
