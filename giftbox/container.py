"""The one place that runs builder containers, in the manner of cibuildwheel's ``OCIContainer``.

    with Container(builder, Arch.ppc64le, settings, reporter,
                   mounts=[Mount(src, "/src"), Mount(out, "/out", read_only=False)]) as c:
        c.call(["/opt/giftbox-tools/bin/pip-compile", "--version"])

The rest of giftbox never builds a docker command line: it hands argv lists to ``call`` (no shell
in between, so spec fields cannot become shell syntax) and files to ``copy_into``/``copy_out``.
What the engine is asked goes through ``giftbox.engine.Engine``: pass one (``engine=``) to share
its connection across the containers of a command, or let the container make its own.

Host integration is a feature, not an accident: behind a TLS-intercepting proxy nothing inside a
container can reach PyPI unless it trusts the host's CA bundle and uses the host's index. Both are
handed to every command at run time (the bundle bind-mounted read-only, the index URLs as
environment of each exec, never of the container, so ``docker inspect`` and ``docker commit``
never see them) and credentials are masked in everything we print or log.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import FrameType, TracebackType
from typing import Any, Protocol

from giftbox.distros import Arch
from giftbox.engine import (
    LABEL,
    OWNER_LABEL,
    Engine,
    EngineError,
    check_platform,
    first_line,
    mask,
    mask_url,
    url_secrets,
)
from giftbox.errors import BuilderError, BuildError
from giftbox.settings import Settings
from giftbox.ui import NULL_REPORTER, Reporter

# LABEL, OWNER_LABEL, check_platform and the maskers lived here before the engine had a module
# of its own: still importable from here.
__all__ = ["CA_PATH", "LABEL", "OWNER_LABEL", "BuilderRef", "CallResult", "CommandFailed",
           "Container", "Mount", "check_platform", "host_env", "mask", "mask_url", "url_secrets"]

CA_PATH = "/run/giftbox/ca-bundle.crt"


def host_env(settings: Settings) -> dict[str, str]:
    """The environment that makes pip, uv, requests and git inside a container behave like the
    host's: its CA bundle and its package index. Holds credentials: never log it."""
    env = {"PIP_INDEX_URL": settings.index_url, "UV_INDEX_URL": settings.index_url,
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    if settings.extra_index_urls:
        env["PIP_EXTRA_INDEX_URL"] = " ".join(settings.extra_index_urls)
        env["UV_EXTRA_INDEX_URL"] = " ".join(settings.extra_index_urls)
    if settings.ca_bundle:
        for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                     "GIT_SSL_CAINFO"):
            env[name] = CA_PATH
        # uv's bundled roots do not include a corporate CA; native TLS reads SSL_CERT_FILE.
        env["UV_NATIVE_TLS"] = "1"
    return env


@dataclass(frozen=True)
class Mount:
    """A host directory (or file) bind-mounted into the container; read-only unless said."""

    source: Path
    target: str
    read_only: bool = True


class BuilderRef(Protocol):
    """What a container needs of a builder image (``builders.BuilderImage`` is one)."""

    @property
    def tag(self) -> str: ...

    @property
    def arch(self) -> Arch: ...


@dataclass(frozen=True)
class CallResult:
    returncode: int
    output: str


class CommandFailed(BuildError):
    """A command inside a builder exited non-zero; carries its exit code and output."""

    def __init__(self, message: str, *, argv: list[str], returncode: int, output: str,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.argv = argv
        self.returncode = returncode
        self.output = output


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class Container:
    """A running builder container; removed on exit whatever happened inside the block."""

    def __init__(self, image: BuilderRef | str, arch: Arch, settings: Settings,
                 reporter: Reporter = NULL_REPORTER, *, mounts: Sequence[Mount] = (),
                 env: Mapping[str, str] | None = None, workdir: str = "/work",
                 engine_timeout: float | None = None, engine: Engine | None = None,
                 tmpfs: Sequence[str] = (), remove_in_background: bool = False) -> None:
        if not isinstance(image, str) and image.arch is not arch:
            raise BuilderError(f"builder {image.tag} is {image.arch.value}, not {arch.value}")
        self.image = image if isinstance(image, str) else image.tag
        self.arch = arch
        self.settings = settings
        self.reporter = reporter
        self.mounts = tuple(mounts)
        self.tmpfs = tuple(tmpfs)  # paths given a tmpfs of their own (scratch, never kept)
        self.env = dict(env or {})
        self.workdir = workdir
        self.engine_timeout = engine_timeout
        self.name = f"giftbox-{re.sub(r'[^a-z0-9]+', '-', self.image.lower())[:60]}-" \
                    f"{uuid.uuid4().hex[:8]}"
        self._secrets = url_secrets([settings.index_url, *settings.extra_index_urls])
        self._given_engine = engine  # the caller's: used, never closed here
        self._engine: Engine | None = None
        self._started = False
        self._previous_sigterm: Any = None
        self._installed_sigterm = False
        # a block that ended normally does not wait for the removal (see _remove_later)
        self._background = remove_in_background

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Container:
        for target in (*(m.target for m in self.mounts), *self.tmpfs):
            if not PurePosixPath(target).is_absolute():
                raise BuilderError(f"mount target '{target}' is not an absolute path")
        for m in self.mounts:
            if not m.source.exists():
                raise BuilderError(f"mount source {m.source} does not exist",
                                   hint="create it before starting the container")
        check_platform(self.arch)
        self._engine = self._given_engine or Engine(self.settings, timeout=self.engine_timeout)
        try:
            present = self._engine.exists(self.image)
        except BaseException:
            self._release_engine()
            raise
        if not present:
            self._release_engine()
            raise BuilderError(f"builder image {self.image} is not present",
                               hint="run `giftbox builder ensure` for it first")
        self._install_sigterm()
        try:
            self._start()
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None and self._background and self._started:
            self._remove_later()
        else:
            self._cleanup()

    # Containers being removed on threads of their own. The threads are not daemons: the
    # interpreter joins them before it exits, so a command ends only once its containers
    # are gone (a process killed before that leaves them to `giftbox builder prune`, as
    # any kill does); ``wait_removed`` joins them sooner.
    _removing: list[threading.Thread] = []
    _removing_lock = threading.Lock()

    def _remove_later(self) -> None:
        """Remove the container on a thread, through a connection of its own (the
        command's may be closed before the removal ends), while the caller goes on."""
        name, settings, reporter = self.name, self.settings, self.reporter
        self._started = False
        if self._installed_sigterm:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._installed_sigterm = False
        self._release_engine()

        def remove() -> None:
            try:
                with Engine(settings) as engine:
                    engine.remove_container(name)
            except Exception as exc:  # EngineError, BuilderError, the SDK's own: one line
                reason = exc.reason if isinstance(exc, EngineError) else \
                    exc.message if isinstance(exc, BuilderError) else \
                    mask(first_line(exc), url_secrets([settings.docker_host]))
                reporter.info(f"warning: could not remove container {name}: {reason}")

        thread = threading.Thread(target=remove, name=f"remove {name}")
        with Container._removing_lock:
            Container._removing[:] = [t for t in Container._removing if t.is_alive()]
            Container._removing.append(thread)
        thread.start()

    @classmethod
    def wait_removed(cls) -> None:
        """Wait for every removal started by a block that ended normally."""
        with cls._removing_lock:
            threads = list(cls._removing)
        for thread in threads:
            thread.join()

    def _install_sigterm(self) -> None:
        # A SIGTERM (CI cancelling a job) must unwind through __exit__ like Ctrl-C does,
        # otherwise the container outlives us. Signals can only be set from the main thread.
        with contextlib.suppress(ValueError):
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
            self._installed_sigterm = True

    def _start(self) -> None:
        assert self._engine is not None
        binds = [(m.source.resolve(), m.target, m.read_only) for m in self.mounts]
        if self.settings.ca_bundle:
            binds.append((self.settings.ca_bundle.resolve(), CA_PATH, True))
        self._started = True  # from here on there may be a container to remove
        status = self._engine.start(
            self.image, ["sleep", "infinity"], name=self.name, platform=self.arch.platform,
            binds=binds, workdir=self.workdir, tmpfs=self.tmpfs,
            labels={LABEL: "1", OWNER_LABEL: str(os.getpid())})
        if status != "running":
            logs = self._engine.logs(self.name, tail=20)
            raise BuilderError(f"builder container {self.name} from {self.image} did not start "
                               f"(status {status})", hint=logs.strip() or None)
        # the engine makes the working directory when the image has none (no exec for it)

    def _cleanup(self) -> None:
        # A second Ctrl-C while removing would leave the container behind: hold signals off.
        try:
            previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
            previous_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        except ValueError:
            previous_int = previous_term = None
        try:
            if self._engine is not None and self._started:
                self._engine.remove_container(self.name)
        except EngineError as exc:
            self.reporter.info(f"warning: could not remove container {self.name}: {exc.reason}")
        finally:
            self._started = False
            if previous_int is not None:
                signal.signal(signal.SIGINT, previous_int)
                signal.signal(signal.SIGTERM, previous_term)
            if self._installed_sigterm:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
                self._installed_sigterm = False
            self._release_engine()

    def _release_engine(self) -> None:
        if self._engine is not None and self._engine is not self._given_engine:
            self._engine.close()
        self._engine = None

    # -- running commands ------------------------------------------------------------------

    def _environment(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        return {**host_env(self.settings), **self.env, **(extra or {})}

    def _exec_plain(self, argv: list[str]) -> None:
        result = self.call(argv, stream=False, check=True)
        del result

    def _running(self) -> Engine:
        if not self._started or self._engine is None:
            raise BuilderError("the container is not running: use `with Container(...) as c:`")
        return self._engine

    def call(self, argv: list[str], *, env: Mapping[str, str] | None = None,
             cwd: str | None = None, check: bool = True, log_path: Path | None = None,
             stream: bool = True) -> CallResult:
        """Run argv (no shell) inside the container; stream its output, timestamped, to the
        reporter (when ``stream``) and to ``log_path``; return exit code and output."""
        engine = self._running()
        if not argv or not all(isinstance(a, str) for a in argv):
            raise BuilderError(f"call needs a non-empty list of strings, got {argv!r}")
        shown = mask(" ".join(argv), self._secrets)
        exec_id, chunks = engine.exec(self.name, argv, environment=self._environment(env),
                                      workdir=cwd or self.workdir or None)
        start = time.monotonic()
        lines: list[str] = []
        log = log_path.open("a", encoding="utf-8") if log_path else None
        try:
            if log:
                log.write(f"{_stamp()} $ {shown}\n")
            pending = b""
            for chunk in chunks:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    self._line(raw, start, lines, log, stream)
            if pending:
                self._line(pending, start, lines, log, stream)
            returncode = engine.exit_code(exec_id)
            if log:
                log.write(f"{_stamp()} exit {returncode} after "
                          f"{time.monotonic() - start:.1f}s\n")
        finally:
            if log:
                log.close()
        output = "\n".join(lines)
        if check and returncode != 0:
            tail = "\n".join(lines[-25:])
            raise CommandFailed(
                f"`{shown}` failed with exit code {returncode} in {self.image}"
                + (f":\n{tail}" if tail else ""), argv=list(argv), returncode=returncode,
                output=output, hint=f"full log: {log_path}" if log_path else None)
        return CallResult(returncode=returncode, output=output)

    def _line(self, raw: bytes, start: float, lines: list[str], log: io.TextIOBase | None,
              stream: bool) -> None:
        line = mask(raw.decode("utf-8", errors="replace").rstrip("\r"), self._secrets)
        lines.append(line)
        if log:
            log.write(f"{_stamp()} {line}\n")
        if stream:
            self.reporter.detail(f"[{time.monotonic() - start:7.1f}s] {line}")

    def exists(self, path: str) -> bool:
        return self.call(["test", "-e", path], check=False, stream=False).returncode == 0

    # -- files -----------------------------------------------------------------------------

    def copy_into(self, host_path: Path, container_path: str) -> None:
        """Copy a file or a directory tree to ``container_path`` (its parents are created)."""
        engine = self._running()
        host_path = Path(host_path)
        if not host_path.exists():
            raise BuilderError(f"cannot copy {host_path} into the container: it does not exist")
        target = PurePosixPath(container_path)
        if not target.is_absolute():
            raise BuilderError(f"container path '{container_path}' is not absolute")
        self._exec_plain(["mkdir", "-p", str(target.parent)])
        with tempfile.TemporaryFile() as buf:
            with tarfile.open(fileobj=buf, mode="w") as tar:
                tar.add(str(host_path), arcname=target.name)
            buf.seek(0)
            if not engine.put_archive(self.name, str(target.parent), buf):
                raise BuilderError(f"the engine refused to copy {host_path} to {container_path}")

    def copy_out(self, container_path: str, host_path: Path) -> None:
        """Copy a file or directory out of the container to ``host_path`` (replacing it)."""
        chunks = self._running().get_archive(self.name, container_path)
        if chunks is None:
            raise BuilderError(f"cannot copy {container_path} out of the container: "
                               "it does not exist")
        host_path = Path(host_path)
        host_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile() as buf, \
                tempfile.TemporaryDirectory(dir=host_path.parent, prefix=".giftbox-") as tmp:
            for chunk in chunks:
                buf.write(chunk)
            buf.seek(0)
            with tarfile.open(fileobj=buf, mode="r") as tar:
                # The archive comes from inside a build: refuse absolute paths, .. and devices.
                tar.extractall(tmp, filter="data")
            extracted = Path(tmp) / PurePosixPath(container_path).name
            if host_path.is_dir() and not host_path.is_symlink():
                shutil.rmtree(host_path)
            elif host_path.exists() or host_path.is_symlink():
                host_path.unlink()
            extracted.rename(host_path)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


class LazyContainer:
    """A ``Container`` entered on its first ``call`` or ``copy_into``, and left at the end of
    the ``with`` block if it was: a step whose every answer is cached needs no container.
    ``name`` is known before (the container's, once started)."""

    def __init__(self, container: Container) -> None:
        self._container = container
        self.name = container.name
        self._stack = contextlib.ExitStack()
        self.started = False

    def __enter__(self) -> LazyContainer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stack.close()

    def _running(self) -> Container:
        if not self.started:
            self._stack.enter_context(self._container)
            self.started = True
        return self._container

    def call(self, argv: list[str], **options: Any) -> CallResult:
        return self._running().call(argv, **options)

    def copy_into(self, host_path: Path, container_path: str) -> None:
        self._running().copy_into(host_path, container_path)
