"""Where the target-sensitive packaging commands run: the host, or the target's builder.

Two packaging steps must see the *target* distro, not the machine giftbox runs on:
``dpkg-shlibdeps`` (which package, at which version, provides each library an extension links)
and the ``apt-cache`` check that every runtime dependency exists in the target's archive. They
go through a ``Runner``; everything else (dpkg-deb, rpmbuild, lintian, rpmlint) reads only the
staged tree and runs on the host.

The seam is two methods:

* ``run(argv, cwd=...)`` runs an argument list (never a shell string) and returns its exit code
  and output;
* ``share(host_dir)`` is a context manager that makes a host directory visible to the runner and
  yields the path the runner sees it under (the same path on the host; a copy inside a
  container, removed afterwards).

``HostRunner`` is the default (and what the tests use on this Debian 12 host). In production the
build stage wraps the target's builder container: ``ContainerRunner(container)`` needs only the
``call``/``copy_into`` methods of ``giftbox.container.Container``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from giftbox import host
from giftbox.errors import PackageError


@dataclass(frozen=True)
class RunResult:
    returncode: int
    output: str  # stdout (and, for a container, stderr interleaved)
    errors: str = ""


class Runner(Protocol):
    """Runs target-sensitive commands; see the module docstring."""

    #: a short description for messages: "host", "container giftbox-debian12-..."
    where: str

    def run(self, argv: Sequence[str], *, cwd: str | None = None) -> RunResult: ...

    def share(self, host_dir: Path) -> contextlib.AbstractContextManager[str]: ...


class HostRunner:
    """Runs on this machine (``giftbox.host``): right when the host is the target distro."""

    where = "host"

    def run(self, argv: Sequence[str], *, cwd: str | None = None) -> RunResult:
        proc = host.run(argv, error=PackageError,
                        needed_for="to see the target distro's libraries and archive",
                        otherwise="pass a runner for the builder", cwd=cwd or None)
        return RunResult(proc.returncode, proc.stdout, proc.stderr)

    @contextlib.contextmanager
    def share(self, host_dir: Path) -> Iterator[str]:
        yield str(host_dir)


class ContainerRunner:
    """Runs inside a running builder container (``giftbox.container.Container`` or anything
    with the same ``call(argv, cwd=, check=, stream=)`` and ``copy_into(host, path)``)."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self.where = f"container {getattr(container, 'name', container)!s}"

    def run(self, argv: Sequence[str], *, cwd: str | None = None) -> RunResult:
        result = self.container.call(list(argv), cwd=cwd, check=False, stream=False)
        return RunResult(int(result.returncode), str(result.output))

    @contextlib.contextmanager
    def share(self, host_dir: Path) -> Iterator[str]:
        target = f"/tmp/giftbox-package-{uuid.uuid4().hex[:12]}/{host_dir.name}"
        self.container.copy_into(host_dir, target)
        try:
            yield target
        finally:
            self.container.call(["rm", "-rf", target.rsplit("/", 1)[0]], check=False,
                                stream=False)
