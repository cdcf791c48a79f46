"""The container engine, owned here: every Docker SDK call giftbox makes goes through ``Engine``.

    with Engine(settings) as engine:      # nothing is asked of the engine yet
        check_platform(Arch.ppc64le)      # the host kernel can run it (qemu binfmt), or why not
        if engine.image(tag) is None:
            for line in engine.build(context, tag=tag, platform=Arch.ppc64le.platform): ...

It connects once, on first use, to ``settings.docker_host``, so a command that never gets as far
as the engine never needs one, and a dead engine is one error (exit 5) that says how to start
it. ``Container`` (container.py) runs builder containers through it, the builder-image policy
(builders.py) finds, pulls, builds, lists and removes images through it, and verify's MariaDB
sibling (verify.py) is started, waited on, committed and removed through it, in the manner of
cibuildwheel's ``oci_container.py``: the rest of giftbox never holds an SDK object.

The engine's answers come back as plain values (``Image``, ``ContainerInfo``, ``ContainerState``,
lines, chunks);
a request it refuses raises ``EngineError`` with its first line, for the caller to name what
it was doing. Index credentials are masked (``mask_url``, ``url_secrets``, ``mask``) before
anything the engine or a container says is printed.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

from giftbox.distros import Arch
from giftbox.errors import BuilderError
from giftbox.settings import Settings

if TYPE_CHECKING:
    import docker


def _docker() -> Any:
    """The Docker SDK, imported when first used: a command that never reaches the engine
    (a build that is a cache hit, a publish) does not pay for it and for requests (0.2 s)."""
    import docker
    import docker.errors
    import docker.types

    return docker

# Every container we start carries this label, so leftovers are findable (tests, prune).
LABEL = "org.giftbox.container"
OWNER_LABEL = "org.giftbox.owner-pid"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")

_ENGINE_HINT = (
    "Start a Docker engine and try again: as root `dockerd --iptables=false &` (or "
    "`systemctl start docker` where systemd runs it), or point DOCKER_HOST at a running engine "
    "(e.g. DOCKER_HOST=unix:///run/docker.sock).")


# -- what may be printed ---------------------------------------------------------------------


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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


# -- the platform check ----------------------------------------------------------------------


def host_arch() -> Arch:
    return Arch.parse(platform.machine())


def check_platform(arch: Arch) -> None:
    """Refuse a foreign arch early when the kernel cannot run its binaries through qemu.

    Without the binfmt handler the engine fails later with a cryptic "exec format error"; with it
    registered but lacking the F flag the interpreter is looked up inside the container and the
    failure is just as cryptic. Asks the kernel, not the engine: no connection is made.
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


# -- the engine's answers --------------------------------------------------------------------


class EngineError(BuilderError):
    """The engine refused a request; ``reason`` is what it said (its first line)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Image:
    id: str  # the content id (sha256:...)
    architecture: str  # as the engine spells it (amd64, ppc64le)
    labels: Mapping[str, str]


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class ContainerState:
    status: str  # as the engine spells it (created, running, exited)
    exit_code: int | None  # once it has exited


def _image(sdk_image: Any) -> Image:
    return Image(id=sdk_image.id, architecture=str(sdk_image.attrs.get("Architecture", "")),
                 labels=dict(sdk_image.labels or {}))


_UNANSWERED = object()


def _inspect_over_socket(host: str, ref: str) -> Image | None | object:
    """``GET /images/<ref>/json`` straight over a unix socket, without the SDK: the one call
    a cache-hit build makes (is the builder image still the one the build was keyed by?),
    spared importing the SDK and requests. Anything but a plain 200 or 404 answer is
    ``_UNANSWERED``, and the SDK asks again (and words any error)."""
    parts = urlsplit(host)
    if parts.scheme != "unix" or not parts.path:
        return _UNANSWERED
    import http.client
    import json
    import socket
    from urllib.parse import quote

    class _Unix(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(30)
            self.sock.connect(parts.path)

    conn = _Unix("localhost", timeout=30)
    try:
        conn.request("GET", f"/images/{quote(ref, safe='')}/json")
        answer = conn.getresponse()
        body = answer.read(8 << 20)
        if answer.status == 404:
            return None
        if answer.status != 200:
            return _UNANSWERED
        data = json.loads(body)
        labels = (data.get("Config") or {}).get("Labels") or {}
        return Image(id=str(data["Id"]), architecture=str(data.get("Architecture", "")),
                     labels={str(k): str(v) for k, v in labels.items()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError,
            http.client.HTTPException):
        return _UNANSWERED
    finally:
        conn.close()


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "explanation", None) or exc).strip()
    return text.splitlines()[0][:400] if text else type(exc).__name__


class Engine:
    """One connection to the engine ``settings.docker_host`` names, made on first use.

    ``timeout`` bounds each wait on the engine; None waits as long as it takes, since a build
    step can be silent for many minutes (compiling under qemu) without being stuck. Not for
    sharing between threads: each target's run makes its own.
    """

    def __init__(self, settings: Settings, *, timeout: float | None = None) -> None:
        self.host = settings.docker_host
        self.timeout = timeout
        self._client: docker.DockerClient | None = None

    @property
    def _sdk(self) -> docker.DockerClient:
        """The SDK client, connected and known to answer: for this class's methods only."""
        if self._client is None:
            try:
                client = _docker().DockerClient(base_url=self.host, timeout=30)
                client.ping()
            except Exception as exc:  # the SDK raises DockerException, requests' and urllib3's
                said = mask(first_line(exc), url_secrets([self.host]))  # it may quote the URL
                raise BuilderError(f"no container engine answered at {mask_url(self.host)}: "
                                   f"{said}", hint=_ENGINE_HINT) from None
            client.api.timeout = self.timeout
            self._client = client
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @contextlib.contextmanager
    def _waiting(self, timeout: float | None) -> Iterator[None]:
        api = self._sdk.api
        before = api.timeout
        api.timeout = timeout
        try:
            yield
        finally:
            api.timeout = before

    # -- images ----------------------------------------------------------------------------

    def image(self, ref: str) -> Image | None:
        """The image ``ref`` names (tag or id), None when the engine has none."""
        if self._client is None:
            found = _inspect_over_socket(self.host, ref)
            if found is not _UNANSWERED:
                return found  # type: ignore[return-value]
        try:
            return _image(self._sdk.images.get(ref))
        except _docker().errors.ImageNotFound:
            return None

    def exists(self, ref: str) -> bool:
        return self.image(ref) is not None

    def pull(self, ref: str, *, platform: str, timeout: float | None = None) -> Image:
        """Pull ``ref`` for ``platform`` from its registry (or the engine's mirror)."""
        with self._waiting(timeout if timeout is not None else self.timeout):
            try:
                return _image(self._sdk.images.pull(ref, platform=platform))
            except Exception as exc:  # APIError, timeouts, connection errors alike
                raise EngineError(_reason(exc)) from None

    def tag(self, ref: str, new: str) -> None:
        """Tag the image ``ref`` names as ``new`` (``repository:tag``)."""
        repository, _, tag = new.rpartition(":")
        self._sdk.images.get(ref).tag(repository, tag)

    def build(self, context: Path, *, tag: str, platform: str,
              build_args: Mapping[str, str] | None = None,
              labels: Mapping[str, str] | None = None) -> Iterator[str]:
        """Build ``context`` (its Dockerfile) as ``tag``, yielding the build's output line by
        line (unmasked: the caller knows the secrets); EngineError when the build fails."""
        events = self._sdk.api.build(path=str(context), tag=tag, platform=platform,
                                       network_mode="host", rm=True, forcerm=True, pull=False,
                                       buildargs=dict(build_args or {}),
                                       labels=dict(labels or {}), decode=True)
        pending = ""  # the engine cuts output anywhere, mid-line included
        try:
            for event in events:
                if "error" in event:
                    if pending:
                        yield pending
                    raise EngineError(str(event.get("error", "")).strip())
                *complete, pending = (pending + str(event.get("stream", ""))).split("\n")
                yield from complete
        except _docker().errors.APIError as exc:
            if pending:
                yield pending
            raise EngineError(str(exc.explanation or exc)) from None
        if pending:
            yield pending

    def tags(self, *prefixes: str) -> dict[str, str]:
        """Every tag present that starts with one of ``prefixes``, with its image id."""
        found: dict[str, str] = {}
        for image in self._sdk.images.list():
            for tag in image.tags:
                if tag.startswith(prefixes):
                    found[tag] = image.id
        return found

    def remove_image(self, ref: str) -> None:
        try:
            self._sdk.images.remove(ref)
        except _docker().errors.APIError as exc:
            raise EngineError(str(exc.explanation or exc)) from None

    # -- containers ------------------------------------------------------------------------

    def containers(self, label: str) -> list[ContainerInfo]:
        """Every container (running or not) carrying ``label`` (``key`` or ``key=value``)."""
        return [ContainerInfo(name=c.name, labels=dict(c.labels or {}))
                for c in self._sdk.containers.list(all=True, filters={"label": label})]

    def start(self, image: str, command: Sequence[str], *, name: str, platform: str,
              labels: Mapping[str, str], binds: Sequence[tuple[Path, str, bool]] = (),
              workdir: str | None = None, init: bool = True,
              tmpfs: Sequence[str] = ()) -> str:
        """Create and start container ``name`` on the host's network, with an init (unless
        ``init`` is false), the ``binds`` (host path, container path, read-only) and a tmpfs
        at each path of ``tmpfs`` (over a bind when inside one); its status once started."""
        mounts = [_docker().types.Mount(target=target, source=str(source), type="bind",
                                     read_only=read_only) for source, target, read_only in binds]
        container = self._sdk.containers.create(
            image, command=list(command), name=name, platform=platform, network_mode="host",
            init=init, mounts=mounts, working_dir=workdir, labels=dict(labels), detach=True,
            # exec: a build runs scripts from its tree (configure); Docker's default is noexec
            tmpfs={target: "exec,mode=1777" for target in tmpfs})
        container.start()
        container.reload()
        return str(container.status)

    def state(self, name: str) -> ContainerState:
        """Where container ``name`` is now: its status, and its exit code once exited."""
        try:
            attrs = self._sdk.api.inspect_container(name)
        except _docker().errors.APIError as exc:  # NotFound included
            raise EngineError(first_line(exc)) from None
        state = attrs.get("State") or {}
        code = state.get("ExitCode")
        return ContainerState(status=str(state.get("Status", "")),
                              exit_code=None if code is None else int(code))

    def wait(self, name: str, *, timeout: float) -> int:
        """Container ``name``'s exit code once it exits; EngineError after ``timeout``
        seconds, or when the engine cannot say."""
        try:
            return int(self._sdk.api.wait(name, timeout=timeout)["StatusCode"])
        except Exception as exc:  # APIError, requests' read timeout, connection errors alike
            raise EngineError(_reason(exc)) from None

    def commit(self, name: str, ref: str) -> Image:
        """Container ``name``'s file system as image ``ref`` (``repository:tag``)."""
        repository, _, tag = ref.rpartition(":")
        try:
            image_id = self._sdk.api.commit(name, repository=repository, tag=tag)["Id"]
            return _image(self._sdk.images.get(image_id))
        except _docker().errors.APIError as exc:
            raise EngineError(first_line(exc)) from None

    def logs(self, name: str, *, tail: int) -> str:
        return bytes(self._sdk.containers.get(name).logs(tail=tail)).decode(errors="replace")

    def remove_container(self, name: str) -> None:
        """Remove ``name`` with its volumes, running or not; gone already is fine."""
        try:
            self._sdk.api.remove_container(name, force=True, v=True)
        except _docker().errors.NotFound:
            pass
        except _docker().errors.APIError as exc:
            if "already in progress" not in str(exc):
                raise EngineError(first_line(exc)) from None

    def exec(self, name: str, argv: Sequence[str], *, environment: Mapping[str, str],
             workdir: str | None) -> tuple[str, Iterator[bytes]]:
        """Start ``argv`` (no shell) in container ``name``: the exec's id and its output
        (stdout and stderr together) as it comes; ``exit_code`` once that is exhausted."""
        api = self._sdk.api
        exec_id = str(api.exec_create(name, cmd=list(argv), environment=dict(environment),
                                      workdir=workdir, stdout=True, stderr=True,
                                      tty=False)["Id"])
        return exec_id, api.exec_start(exec_id, stream=True, demux=False)

    def exit_code(self, exec_id: str) -> int:
        return int(self._sdk.api.exec_inspect(exec_id)["ExitCode"])

    def exec_output(self, name: str, argv: Sequence[str], *,
                    secrets: Sequence[str] = ()) -> tuple[int, str]:
        """Run ``argv`` (no shell) in container ``name`` to its end: its exit code and its
        output (stdout and stderr together), ``secrets`` masked in that and in EngineError."""
        try:
            exec_id, chunks = self.exec(name, argv, environment={}, workdir=None)
            output = b"".join(chunks).decode(errors="replace")
            return self.exit_code(exec_id), mask(output, secrets)
        except _docker().errors.APIError as exc:  # not running, gone
            raise EngineError(mask(first_line(exc), secrets)) from None

    def put_archive(self, name: str, directory: str, tar: IO[bytes]) -> bool:
        """Unpack the tar stream into ``directory`` of container ``name``."""
        return bool(self._sdk.api.put_archive(name, directory, tar))

    def get_archive(self, name: str, path: str) -> Iterator[bytes] | None:
        """``path`` of container ``name`` as a tar stream; None when it does not exist."""
        try:
            chunks, _stat = self._sdk.api.get_archive(name, path)
        except _docker().errors.NotFound:
            return None
        return iter(chunks)


@contextlib.contextmanager
def engine_for(settings: Settings, engine: Engine | None = None) -> Iterator[Engine]:
    """``engine`` when the caller has one (left open for it), else one for this block."""
    if engine is not None:
        yield engine
        return
    with Engine(settings) as own:
        yield own
