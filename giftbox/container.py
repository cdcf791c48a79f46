"""The one place that runs builder containers, in the manner of cibuildwheel's ``OCIContainer``.

    with Container(builder, Arch.ppc64le, settings, reporter,
                   mounts=[Mount(src, "/src"), Mount(out, "/out", read_only=False)]) as c:
        c.call(["/opt/giftbox-tools/bin/pip-compile", "--version"])

The rest of giftbox never builds a docker command line: it hands argv lists to ``call`` (no shell
in between, so spec fields cannot become shell syntax) and files to ``copy_into``/``copy_out``.

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
import platform
import re
import shutil
import signal
import tarfile
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import docker
import docker.errors
import docker.types

from giftbox.distros import Arch
from giftbox.errors import BuilderError, BuildError
from giftbox.settings import Settings
from giftbox.ui import NULL_REPORTER, Reporter

if TYPE_CHECKING:
    from giftbox.builders import BuilderImage

# Every container we start carries this label, so leftovers are findable (tests, prune).
LABEL = "org.giftbox.container"
OWNER_LABEL = "org.giftbox.owner-pid"
CA_PATH = "/run/giftbox/ca-bundle.crt"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")

_ENGINE_HINT = (
    "Start a Docker engine and try again: as root `dockerd --iptables=false &` (or "
    "`systemctl start docker` where systemd runs it), or point DOCKER_HOST at a running engine "
    "(e.g. DOCKER_HOST=unix:///run/docker.sock).")


def connect(timeout: float | None = None) -> docker.DockerClient:
    """A client for the engine named by DOCKER_HOST (default socket otherwise), known to answer.

    ``timeout`` bounds each wait on the engine afterwards; None waits as long as it takes, since
    a build step can be silent for many minutes (compiling under qemu) without being stuck.
    """
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:  # the SDK raises DockerException, requests' and urllib3's errors
        raise BuilderError(f"no container engine answered at {mask_url(where)}: "
                           f"{_first_line(exc)}", hint=_ENGINE_HINT) from None
    client.api.timeout = timeout
    return client


def host_arch() -> Arch:
    return Arch.parse(platform.machine())


def check_platform(arch: Arch) -> None:
    """Refuse a foreign arch early when the kernel cannot run its binaries through qemu.

    Without the binfmt handler the engine fails later with a cryptic "exec format error"; with it
    registered but lacking the F flag the interpreter is looked up inside the container and the
    failure is just as cryptic.
    """
    if arch is host_arch():
        return
    entry = BINFMT_DIR / f"qemu-{arch.qemu}"
    how = ("Enable qemu user emulation for it: `apt-get install qemu-user-static binfmt-support`, "
           "`mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc` if it is not mounted, "
           f"then `update-binfmts --enable qemu-{arch.qemu}`.")
    if not (BINFMT_DIR / "status").exists():
        raise BuilderError(f"cannot run {arch.value} containers on this {host_arch().value} "
                           f"host: binfmt_misc is not mounted at {BINFMT_DIR}", hint=how)
    if not entry.exists():
        raise BuilderError(f"cannot run {arch.value} containers on this {host_arch().value} "
                           f"host: no qemu binfmt handler registered ({entry} is missing)",
                           hint=how)
    text = entry.read_text()
    if not text.startswith("enabled"):
        raise BuilderError(f"cannot run {arch.value} containers on this {host_arch().value} "
                           f"host: the qemu binfmt handler {entry} is disabled", hint=how)
    flags = next((line.split(":", 1)[1] for line in text.splitlines()
                  if line.startswith("flags:")), "")
    if "F" not in flags:
        raise BuilderError(
            f"the qemu binfmt handler {entry} lacks the F (fix binary) flag, so containers "
            "cannot find the emulator", hint="Use the registration shipped by qemu-user-static "
            f"(`update-binfmts --disable qemu-{arch.qemu} && update-binfmts --enable "
            f"qemu-{arch.qemu}`), which sets F.")


def mask_url(url: str) -> str:
    """``https://user:***@host/...``: safe to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def url_secrets(urls: Sequence[str]) -> tuple[str, ...]:
    """The passwords (and tokens used as user names) in index URLs: what must never be printed."""
    found: list[str] = []
    for url in urls:
        parts = urlsplit(url)
        if parts.password:
            found.append(parts.password)
        elif parts.username and "@" in parts.netloc:
            found.append(parts.username)  # a bare token as user name is a secret too
    return tuple(s for s in found if len(s) >= 3)


def mask(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class Container:
    """A running builder container; removed on exit whatever happened inside the block."""

    def __init__(self, image: BuilderImage | str, arch: Arch, settings: Settings,
                 reporter: Reporter = NULL_REPORTER, *, mounts: Sequence[Mount] = (),
                 env: Mapping[str, str] | None = None, workdir: str = "/work",
                 engine_timeout: float | None = None) -> None:
        if not isinstance(image, str) and image.arch is not arch:
            raise BuilderError(f"builder {image.tag} is {image.arch.value}, not {arch.value}")
        self.image = image if isinstance(image, str) else image.tag
        self.arch = arch
        self.settings = settings
        self.reporter = reporter
        self.mounts = tuple(mounts)
        self.env = dict(env or {})
        self.workdir = workdir
        self.engine_timeout = engine_timeout
        self.name = f"giftbox-{re.sub(r'[^a-z0-9]+', '-', self.image.lower())[:60]}-" \
                    f"{uuid.uuid4().hex[:8]}"
        self._secrets = url_secrets([settings.index_url, *settings.extra_index_urls])
        self._client: docker.DockerClient | None = None
        self._container: Any = None
        self._previous_sigterm: Any = None
        self._installed_sigterm = False

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Container:
        for m in self.mounts:
            if not PurePosixPath(m.target).is_absolute():
                raise BuilderError(f"mount target '{m.target}' is not an absolute path")
            if not m.source.exists():
                raise BuilderError(f"mount source {m.source} does not exist",
                                   hint="create it before starting the container")
        check_platform(self.arch)
        self._client = connect(self.engine_timeout)
        try:
            self._client.images.get(self.image)
        except docker.errors.ImageNotFound:
            raise BuilderError(f"builder image {self.image} is not present",
                               hint="run `giftbox builder ensure` for it first") from None
        self._install_sigterm()
        try:
            self._start()
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._cleanup()

    def _install_sigterm(self) -> None:
        # A SIGTERM (CI cancelling a job) must unwind through __exit__ like Ctrl-C does,
        # otherwise the container outlives us. Signals can only be set from the main thread.
        with contextlib.suppress(ValueError):
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
            self._installed_sigterm = True

    def _start(self) -> None:
        assert self._client is not None
        mounts = [docker.types.Mount(target=m.target, source=str(m.source.resolve()),
                                     type="bind", read_only=m.read_only) for m in self.mounts]
        if self.settings.ca_bundle:
            mounts.append(docker.types.Mount(target=CA_PATH,
                                             source=str(self.settings.ca_bundle.resolve()),
                                             type="bind", read_only=True))
        self._container = self._client.containers.create(
            self.image, command=["sleep", "infinity"], name=self.name,
            platform=self.arch.platform, network_mode="host", init=True, mounts=mounts,
            working_dir=self.workdir, labels={LABEL: "1", OWNER_LABEL: str(os.getpid())},
            detach=True)
        self._container.start()
        self._container.reload()
        if self._container.status != "running":
            logs = self._container.logs(tail=20).decode(errors="replace")
            raise BuilderError(f"builder container {self.name} from {self.image} did not start "
                               f"(status {self._container.status})", hint=logs.strip() or None)
        if self.workdir:
            self._exec_plain(["mkdir", "-p", self.workdir])

    def _cleanup(self) -> None:
        # A second Ctrl-C while removing would leave the container behind: hold signals off.
        try:
            previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
            previous_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        except ValueError:
            previous_int = previous_term = None
        try:
            if self._client is not None:
                with contextlib.suppress(docker.errors.NotFound):
                    self._client.api.remove_container(self.name, force=True, v=True)
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                self.reporter.info(f"warning: could not remove container {self.name}: "
                                   f"{_first_line(exc)}")
        finally:
            self._container = None
            if previous_int is not None:
                signal.signal(signal.SIGINT, previous_int)
                signal.signal(signal.SIGTERM, previous_term)
            if self._installed_sigterm:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
                self._installed_sigterm = False
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- running commands ------------------------------------------------------------------

    def _environment(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        return {**host_env(self.settings), **self.env, **(extra or {})}

    def _exec_plain(self, argv: list[str]) -> None:
        result = self.call(argv, stream=False, check=True)
        del result

    def _running(self) -> Any:
        if self._container is None or self._client is None:
            raise BuilderError("the container is not running: use `with Container(...) as c:`")
        return self._client

    def call(self, argv: list[str], *, env: Mapping[str, str] | None = None,
             cwd: str | None = None, check: bool = True, log_path: Path | None = None,
             stream: bool = True) -> CallResult:
        """Run argv (no shell) inside the container; stream its output, timestamped, to the
        reporter (when ``stream``) and to ``log_path``; return exit code and output."""
        client = self._running()
        if not argv or not all(isinstance(a, str) for a in argv):
            raise BuilderError(f"call needs a non-empty list of strings, got {argv!r}")
        shown = mask(" ".join(argv), self._secrets)
        exec_id = client.api.exec_create(
            self.name, cmd=list(argv), environment=self._environment(env),
            workdir=cwd or self.workdir or None, stdout=True, stderr=True, tty=False)["Id"]
        start = time.monotonic()
        lines: list[str] = []
        log = log_path.open("a", encoding="utf-8") if log_path else None
        try:
            if log:
                log.write(f"{_stamp()} $ {shown}\n")
            pending = b""
            for chunk in client.api.exec_start(exec_id, stream=True, demux=False):
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    self._line(raw, start, lines, log, stream)
            if pending:
                self._line(pending, start, lines, log, stream)
            returncode = client.api.exec_inspect(exec_id)["ExitCode"]
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
        client = self._running()
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
            if not client.api.put_archive(self.name, str(target.parent), buf):
                raise BuilderError(f"the engine refused to copy {host_path} to {container_path}")

    def copy_out(self, container_path: str, host_path: Path) -> None:
        """Copy a file or directory out of the container to ``host_path`` (replacing it)."""
        client = self._running()
        host_path = Path(host_path)
        try:
            chunks, _stat = client.api.get_archive(self.name, container_path)
        except docker.errors.NotFound:
            raise BuilderError(f"cannot copy {container_path} out of the container: "
                               "it does not exist") from None
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


def leftover_containers(client: docker.DockerClient | None = None) -> list[str]:
    """Names of giftbox containers that exist now (for tests and for prune)."""
    client = client or connect()
    return [c.name for c in client.containers.list(all=True, filters={"label": LABEL})]
