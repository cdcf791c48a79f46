"""Hostile sources: release tarballs that try to run commands or escape, credentialed indexes,
credentials in git URLs, and ``status``/``report`` that keep going past one bad input.

Everything is real: tarballs made with tarfile and served by a PEP 691/503 simple index on
127.0.0.1 (behind HTTP basic auth where a test says so), git the command, the giftbox CLI.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import Result, git, git_spec, write_spec

from giftbox import source
from giftbox.errors import SourceError
from giftbox.settings import Settings
from giftbox.spec import PyPIUpstream, load_spec

PASSWORD = "pa55-Wd.s3cret-7391"
USER = "builder"
TOKEN = "ghp_Tok3nAsUserName0123456789"


# --- a loopback simple index --------------------------------------------------------------


class Index:
    """A PEP 691 (JSON) and PEP 503 (HTML) simple index on 127.0.0.1 serving tarballs,
    optionally behind HTTP basic auth; it records each request and its Authorization."""

    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        self.files: dict[str, dict[str, bytes]] = {}  # project -> filename -> bytes
        self.requests: list[tuple[str, str | None]] = []
        self.redirects: dict[str, str] = {}  # path -> Location
        self.expected = (None if user is None else
                         "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                auth = self.headers.get("Authorization")
                index.requests.append((self.path, auth))
                if index.expected is not None and auth != index.expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="index"')
                    self.end_headers()
                    return
                if self.path in index.redirects:
                    self.send_response(302)
                    self.send_header("Location", index.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                parts = [p for p in self.path.split("/") if p]
                if len(parts) == 2 and parts[0] == "simple" and parts[1] in index.files:
                    self._page(parts[1])
                elif len(parts) == 3 and parts[0] == "files" \
                        and parts[2] in index.files.get(parts[1], {}):
                    self._send(200, "application/gzip", index.files[parts[1]][parts[2]])
                else:
                    self._send(404, "text/plain", b"not found")

            def _page(self, project: str) -> None:
                files = index.files[project]
                if "json" in (self.headers.get("Accept") or "") and project != "html-only":
                    body = json.dumps({"meta": {"api-version": "1.0"}, "name": project,
                                       "files": [{"filename": f, "url": f"../../files/{project}/{f}",
                                                  "hashes": {"sha256": _sha(d)}}
                                                 for f, d in files.items()]}).encode()
                    self._send(200, "application/vnd.pypi.simple.v1+json", body)
                else:
                    links = "".join(f'<a href="/files/{project}/{f}#sha256={_sha(d)}">{f}</a>\n'
                                    for f, d in files.items())
                    self._send(200, "text/html", f"<html><body>{links}</body></html>".encode())

            def _send(self, code: int, kind: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}/simple"

    def add(self, project: str, filename: str, data: bytes) -> str:
        self.files.setdefault(project, {})[filename] = data
        return _sha(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def index() -> Iterator[Index]:
    served = Index()
    yield served
    served.close()


@pytest.fixture
def private_index() -> Iterator[Index]:
    served = Index(USER, PASSWORD)
    yield served
    served.close()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- tarballs -----------------------------------------------------------------------------

Member = tuple[str, str, bytes | str | None]  # (kind, name, content | link target)


def tarball(members: list[Member], compress: bool = True) -> bytes:
    """A tarball with exactly these members: ("file", name, bytes), ("dir", name, None),
    ("symlink", name, target), ("hardlink", name, target), ("chr", name, None),
    ("fifo", name, None), ("exec", name, bytes)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if compress else "w") as tar:
        for kind, name, content in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            info.mode = 0o755 if kind in ("dir", "exec") else 0o644
            data = None
            if kind in ("file", "exec"):
                assert isinstance(content, bytes)
                info.size, data = len(content), io.BytesIO(content)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind in ("symlink", "hardlink"):
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = str(content)
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tar.addfile(info, data)
    return out.getvalue()


def demo_members(top: str = "demo-1.0.0") -> list[Member]:
    return [("dir", top, None),
            ("file", f"{top}/PKG-INFO", b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0.0\n"),
            ("file", f"{top}/setup.py", b"from setuptools import setup\nsetup()\n"),
            ("exec", f"{top}/bin/run", b"#!/bin/sh\necho run\n"),
            ("file", f"{top}/demo.py", b'GREETING = "hello"\r\n')]


def pypi_spec(root: Path, name: str, version: str, sha256: str) -> None:
    write_spec(root, name, "\n".join([
        f"name: {name}", 'release: "2026.1"',
        "constraints: constraints/upper-constraints-2026.1.txt",
        "upstream:", "  use: pypi", "  pypi:", f"    name: {name}", f"    version: {version}",
        f"    sha256: {sha256}",
        "package:", f"  prefix: /opt/openstack/{name}",
        "matrix:", "  distros: [debian12]", "  arches: [x86_64]", ""]))


def served_project(root: Path, index: Index, members: list[Member], name: str = "demo",
                   version: str = "1.0.0", compress: bool = True) -> str:
    sha = index.add(name, f"{name}-{version}.tar.gz", tarball(members, compress))
    pypi_spec(root, name, version, sha)
    return sha


def all_bytes_under(*folders: Path) -> Iterator[tuple[Path, bytes]]:
    for folder in folders:
        if not folder.exists():
            continue
        for dirpath, _dirs, files in os.walk(folder):
            for f in files:
                path = Path(dirpath) / f
                if not path.is_symlink():
                    yield path, path.read_bytes()


def assert_named_failure(result: Result, code: int, *needles: str) -> None:
    assert result.code == code, (result.code, result.out, result.err)
    assert "Traceback" not in result.err and "interrupted" not in result.err, result.err
    assert result.err.startswith("error: ") or "\nerror: " in result.err, result.err
    for needle in needles:
        assert needle in result.err, (needle, result.err)


# --- 1. nothing a tarball carries runs --------------------------------------------------


def hostile_git_members(marker: Path, other_repo: Path) -> dict[str, list[Member]]:
    top = "demo-1.0.0"
    touch = f"touch {marker}"
    config = (f'[core]\n\tfsmonitor = "{touch}-fsmonitor"\n\thooksPath = hooks\n'
              f'[filter "evil"]\n\tclean = "{touch}-clean"\n\tsmudge = "{touch}-smudge"\n'
              f'\trequired = true\n').encode()
    hook = f"#!/bin/sh\n{touch}-hook\n".encode()
    return {
        "config-and-attributes": demo_members(top) + [
            ("dir", f"{top}/.git", None),
            ("file", f"{top}/.git/config", config),
            ("file", f"{top}/.git/HEAD", b"ref: refs/heads/master\n"),
            ("exec", f"{top}/.git/hooks/pre-commit", hook),
            ("exec", f"{top}/hooks/post-commit", hook),
            ("file", f"{top}/.gitattributes",
             b"* filter=evil\n*.py text eol=crlf working-tree-encoding=UTF-16 ident\n"),
            ("file", f"{top}/sub/.GIT/config", config),
        ],
        "gitdir-file": demo_members(top) + [
            ("file", f"{top}/.git", f"gitdir: {other_repo}/.git\n".encode()),
        ],
    }


@pytest.mark.parametrize("variant", ["config-and-attributes", "gitdir-file"])
def test_a_tarballs_git_metadata_never_runs_nor_reaches_another_repository(
        root: Path, cache: Path, tmp_path: Path, index: Index, giftbox, variant: str) -> None:
    marker = tmp_path / "pwned"
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q", "-b", "main")
    (other / "mine").write_text("mine\n")
    git(other, "add", "mine")
    git(other, "commit", "-q", "-m", "the operator's own repository")
    before = git(other, "for-each-ref"), git(other, "status", "--porcelain")
    sha = served_project(root, index, hostile_git_members(marker, other)[variant])

    result = giftbox("source", "demo", "--into", str(tmp_path / "src"),
                     env={"PIP_INDEX_URL": index.url()})
    assert result.code == 0, result.err
    tree = tmp_path / "src"
    assert not list(tmp_path.glob("pwned*")), "a command from the tarball ran"
    assert (git(other, "for-each-ref"), git(other, "status", "--porcelain")) == before
    # The commit holds the tarball's bytes unconverted (no eol, encoding, ident, filter) and
    # nothing from its .git; the checkout is the commit's bytes.
    listed = git(tree, "ls-tree", "-r", "--name-only", "giftbox-upstream").splitlines()
    assert not [p for p in listed if ".git/" in p.lower() or p == ".git"], listed
    assert git(tree, "show", "giftbox-upstream:demo.py") == 'GREETING = "hello"'
    assert (tree / "demo.py").read_bytes() == b'GREETING = "hello"\r\n'
    assert git(tree, "ls-tree", "giftbox-upstream", "bin/run").startswith("100755 ")
    if variant == "config-and-attributes":
        assert (tree / ".gitattributes").read_bytes().startswith(b"* filter=evil")
        assert not (tree / "sub").exists()

    # status --offline re-imports an uncached tarball the same way.
    import shutil
    shutil.rmtree(cache / "pypi-git")
    status = giftbox("status", "--offline", "demo")
    assert status.code == 0, status.err
    assert git(tree, "rev-parse", "giftbox-upstream")[:12] in status.out
    assert not list(tmp_path.glob("pwned*"))
    assert (cache / "pypi" / sha).is_dir()


def test_a_git_upstreams_attributes_convert_nothing_in_the_checkout(
        root: Path, tmp_path: Path, settings: Settings, upstream) -> None:
    (upstream.path / ".gitattributes").write_text("* text eol=crlf ident filter=evil\n")
    upstream.commit("Attributes", file="version.py", text="VERSION = '$Id$'\n")
    upstream.tag("1.0.0")
    write_spec(root, "demo", git_spec("demo", upstream.url, "1.0.0"))
    tree = source.prepare(load_spec(root / "specs" / "demo.yaml", root), tmp_path / "src",
                          settings)
    assert (tree.path / "version.py").read_bytes() == b"VERSION = '$Id$'\n"
    assert git(tree.path, "status", "--porcelain") == ""


def test_the_same_tarball_gives_the_same_commit_on_any_machine(settings: Settings,
                                                               tmp_path: Path,
                                                               index: Index) -> None:
    data = tarball(demo_members())
    pin = PyPIUpstream(name="demo", version="1.0.0", sha256=_sha(data))
    commits = []
    for n in (1, 2):
        cache = tmp_path / f"cache{n}"
        (cache / "pypi" / pin.sha256).mkdir(parents=True)
        (cache / "pypi" / pin.sha256 / "demo-1.0.0.tar.gz").write_bytes(data)
        other = Settings(root=settings.root, cache_dir=cache, state_dir=settings.state_dir)
        commits.append(source.resolve_pypi(pin, other))
    assert commits[0].commit == commits[1].commit
    assert commits[0].source_date_epoch == 1700000000


# --- 2. tarballs that are not a source tree: named errors, exit 3 --------------------------

T = "demo-1.0.0"
HOSTILE_TARBALLS: dict[str, tuple[Callable[[], bytes], str]] = {
    "dotdot-member": (lambda: tarball(demo_members() + [("file", f"{T}/../escaped", b"x")]),
                      "outside its directory"),
    "absolute-member": (lambda: tarball(demo_members() + [("file", "/tmp/giftbox-abs", b"x")]),
                        "absolute path"),
    "absolute-symlink": (lambda: tarball(demo_members() + [("symlink", f"{T}/etc", "/etc")]),
                         "absolute symlink"),
    "outward-symlink": (lambda: tarball(demo_members()
                                        + [("symlink", f"{T}/up", "../../../etc")]),
                        "leads outside"),
    "chained-symlinks": (lambda: tarball(demo_members() + [
        ("dir", f"{T}/d", None), ("symlink", f"{T}/d/a", ".."), ("symlink", f"{T}/d/b", "a/..")]),
        "leads outside"),
    "into-its-git": (lambda: tarball(demo_members() + [("symlink", f"{T}/g", ".git/config")]),
                     "leads outside"),
    "under-a-symlink": (lambda: tarball(demo_members() + [
        ("symlink", f"{T}/lib", "bin"), ("file", f"{T}/lib/x", b"x")]), "under the symlink"),
    "hard-link-out": (lambda: tarball(demo_members()
                                      + [("hardlink", f"{T}/passwd", "/etc/passwd")]),
                      "hard link"),
    "hard-link-up": (lambda: tarball(demo_members() + [("hardlink", f"{T}/x", "../x")]),
                     "hard link"),
    "device": (lambda: tarball(demo_members() + [("chr", f"{T}/null", None)]), "device file"),
    "fifo": (lambda: tarball(demo_members() + [("fifo", f"{T}/pipe", None)]), "FIFO"),
    "single-file": (lambda: tarball([("file", "setup.py", b"x")]), "at its top level"),
    "two-directories": (lambda: tarball(demo_members() + demo_members("other-1.0")),
                        "one top-level directory"),
    "not-a-tar": (lambda: b"<html>this is not a tarball</html>\n" * 20, "tar archive"),
    "gzip-of-text": (lambda: __import__("gzip").compress(b"plain text, not a tar\n" * 40),
                     "tar archive"),
    "truncated-gzip": (lambda: tarball(demo_members())[:200], "cannot be read"),
    # click reads an EOFError escaping a command as ^C: these two were "interrupted" (130).
    "gzip-header-only": (lambda: tarball(demo_members())[:10], "cannot be read"),
    "truncated-tar": (lambda: tarball(demo_members(), compress=False)[:1044], "cannot be read"),
    "zero-bytes": (lambda: b"", "tar archive"),
    # A terminal escape in a name is shown escaped, never sent to the terminal.
    "escape-in-a-name": (lambda: tarball(demo_members() + [
        ("symlink", f"{T}/\x1b]0;pwned\x07", "/etc")]), "\\x1b]0;pwned\\x07"),
    "empty-tar": (lambda: tarball([]), "is empty"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TARBALLS))
def test_a_tarball_that_is_not_a_source_tree_is_a_named_error(
        root: Path, cache: Path, tmp_path: Path, settings: Settings, index: Index,
        case: str) -> None:
    make, needle = HOSTILE_TARBALLS[case]
    pypi_spec(root, "demo", "1.0.0", index.add("demo", "demo-1.0.0.tar.gz", make()))
    spec = load_spec(root / "specs" / "demo.yaml", root)
    served = Settings(root=root, cache_dir=cache, state_dir=settings.state_dir,
                      index_url=index.url())
    with pytest.raises(SourceError) as info:
        source.prepare(spec, tmp_path / "src", served)
    assert info.value.exit_code == 3
    assert "demo-1.0.0.tar.gz" in info.value.message and needle in info.value.message
    assert not (tmp_path / "src").exists() and not (tmp_path / "escaped").exists()
    assert not (cache / "pypi-git").exists() or not [
        p for p in (cache / "pypi-git").iterdir() if p.suffix != ".lock"]


@pytest.mark.parametrize("case", ["gzip-header-only", "single-file"])
def test_the_cli_names_a_bad_tarball_with_the_source_exit_code(
        root: Path, tmp_path: Path, index: Index, giftbox, case: str) -> None:
    make, needle = HOSTILE_TARBALLS[case]
    pypi_spec(root, "demo", "1.0.0", index.add("demo", "demo-1.0.0.tar.gz", make()))
    result = giftbox("source", "demo", "--into", str(tmp_path / "src"),
                     env={"PIP_INDEX_URL": index.url()})
    assert_named_failure(result, 3, "demo-1.0.0.tar.gz", needle)


def test_an_inward_hard_link_and_symlink_are_kept(settings: Settings, tmp_path: Path) -> None:
    data = tarball(demo_members() + [("symlink", f"{T}/lib", "bin"),
                                     ("hardlink", f"{T}/again.py", f"{T}/demo.py"),
                                     ("symlink", f"{T}/bin/up", "../demo.py")])
    pin = PyPIUpstream(name="demo", version="1.0.0", sha256=_sha(data))
    (settings.cache_dir / "pypi" / pin.sha256).mkdir(parents=True)
    (settings.cache_dir / "pypi" / pin.sha256 / "demo-1.0.0.tar.gz").write_bytes(data)
    up = source.resolve_pypi(pin, settings)
    listing = git(up.repo, "ls-tree", "-r", up.commit)
    assert "120000 blob" in listing and "\tlib" in listing and "\tagain.py" in listing
    assert git(up.repo, "show", f"{up.commit}:lib") == "bin"


def test_a_300_character_version_is_a_named_error(settings: Settings, index: Index) -> None:
    version = "1." + "0" * 298
    name = f"demo-{version}.tar.gz"
    sha = index.add("demo", name, tarball(demo_members()))
    other = Settings(root=settings.root, cache_dir=settings.cache_dir,
                     state_dir=settings.state_dir, index_url=index.url())
    with pytest.raises(SourceError) as info:
        source.resolve_pypi(PyPIUpstream(name="demo", version=version, sha256=sha), other)
    assert "255 bytes" in (info.value.hint or "") and "cannot store" in info.value.message
    assert not (settings.cache_dir / "pypi" / sha).exists()


# --- 3. credentials -----------------------------------------------------------------------


def assert_no_secret(secret: str, result: Result, *folders: Path) -> None:
    assert secret not in result.out and secret not in result.err
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode())
    for path, data in all_bytes_under(*folders):
        assert secret.encode() not in data and encoded not in data, path


def test_a_credentialed_index_works_and_the_password_is_never_shown_or_stored(
        root: Path, cache: Path, tmp_path: Path, private_index: Index, giftbox) -> None:
    served_project(root, private_index, demo_members())
    result = giftbox("-v", "source", "demo", "--into", str(tmp_path / "src"),
                     env={"PIP_INDEX_URL": private_index.url(f"{USER}:{PASSWORD}@")})
    assert result.code == 0, result.err
    assert (tmp_path / "src" / "setup.py").is_file()
    # The index page and the file link (on the same origin) were fetched with basic auth.
    assert [p for p, a in private_index.requests if a == private_index.expected] == [
        "/simple/demo/", "/files/demo/demo-1.0.0.tar.gz"]
    assert "downloading http://127.0.0.1" in result.err
    assert_no_secret(PASSWORD, result, cache, tmp_path / "src", root)


def test_credentials_follow_a_redirect_to_the_same_origin_only(
        settings: Settings, private_index: Index, index: Index) -> None:
    data = tarball(demo_members())
    private_index.add("moved", "demo-1.0.0.tar.gz", data)
    private_index.redirects["/simple/demo/"] = "/simple/moved/"
    private_index.redirects["/files/moved/demo-1.0.0.tar.gz"] = (
        f"http://127.0.0.1:{index.port}/files/demo/demo-1.0.0.tar.gz")
    index.add("demo", "demo-1.0.0.tar.gz", data)
    with_creds = Settings(root=settings.root, cache_dir=settings.cache_dir,
                          state_dir=settings.state_dir,
                          index_url=private_index.url(f"{USER}:{PASSWORD}@"))
    up = source.resolve_pypi(PyPIUpstream(name="demo", version="1.0.0", sha256=_sha(data)),
                             with_creds)
    assert up.kind == "pypi"
    assert [a for _p, a in private_index.requests] == [private_index.expected] * 3
    assert index.requests == [("/files/demo/demo-1.0.0.tar.gz", None)]


def test_no_name_lookup_ever_carries_a_credential(settings: Settings, private_index: Index,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    sha = private_index.add("demo", "demo-1.0.0.tar.gz", tarball(demo_members()))
    looked_up: list[str] = []
    real = socket.getaddrinfo

    def recording(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        looked_up.append(str(host))
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    with_creds = Settings(root=settings.root, cache_dir=settings.cache_dir,
                          state_dir=settings.state_dir,
                          index_url=private_index.url(f"{USER}:{PASSWORD}@"))
    up = source.resolve_pypi(PyPIUpstream(name="demo", version="1.0.0", sha256=sha), with_creds)
    assert up.kind == "pypi" and looked_up and set(looked_up) == {"127.0.0.1"}


def test_a_wrong_password_fails_at_once_and_is_not_shown(
        root: Path, cache: Path, tmp_path: Path, private_index: Index, giftbox) -> None:
    served_project(root, private_index, demo_members())
    result = giftbox("source", "demo", "--into", str(tmp_path / "src"),
                     env={"PIP_INDEX_URL": private_index.url(f"{USER}:wrong-{PASSWORD}@")})
    assert_named_failure(result, 3, "HTTP 401", "with the credentials given")
    assert len(private_index.requests) == 1  # refused credentials are not retried
    assert_no_secret(PASSWORD, result, cache)


@pytest.mark.slow  # a credentialed server on loopback and whole builds' worth of git
def test_netrc_credentials_work_for_an_index_url_without_them(
        root: Path, cache: Path, tmp_path: Path, private_index: Index, giftbox) -> None:
    served_project(root, private_index, demo_members())
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    result = giftbox("source", "demo", "--into", str(tmp_path / "src"),
                     env={"PIP_INDEX_URL": private_index.url(), "NETRC": str(netrc)})
    assert result.code == 0, result.err
    assert_no_secret(PASSWORD, result, cache, tmp_path / "src")
    unauthenticated = giftbox("source", "demo", "--into", str(tmp_path / "src2"),
                              env={"PIP_INDEX_URL": private_index.url(),
                                   "NETRC": str(tmp_path / "none"), "GIFTBOX_CACHE":
                                   str(tmp_path / "cache2")})
    assert_named_failure(unauthenticated, 3, "HTTP 401", "without credentials")
    # pip in a builder has no netrc: the index URL it is given carries them, masked.
    from giftbox.container import host_env, url_secrets

    resolved = Settings.resolve(root=root, env={"PIP_INDEX_URL": private_index.url(),
                                                "NETRC": str(netrc), "HOME": str(tmp_path)})
    assert resolved.index_url == private_index.url(f"{USER}:{PASSWORD}@")
    assert host_env(resolved)["PIP_INDEX_URL"] == resolved.index_url
    assert PASSWORD in url_secrets([resolved.index_url])


def git_token_spec(root: Path, url: str) -> None:
    write_spec(root, "tokened", "\n".join([
        "name: tokened", 'release: "2026.1"',
        "constraints: constraints/upper-constraints-2026.1.txt",
        "upstream:", "  use: git", "  git:", f"    url: {url}", "    ref: 1.0.0",
        "package:", "  prefix: /opt/openstack/tokened",
        "matrix:", "  distros: [debian12]", "  arches: [x86_64]", ""]))


@pytest.mark.slow  # a credentialed server on loopback and whole builds' worth of git
def test_a_git_url_with_a_token_is_never_printed_nor_stored(
        root: Path, cache: Path, tmp_path: Path, giftbox, settings: Settings) -> None:
    url = f"https://{TOKEN}@127.0.0.1:9/openstack/nova.git"
    with pytest.raises(SourceError) as info:
        source.GitMirror(url, settings)
    assert TOKEN not in info.value.render() and "credential" in info.value.render()
    git_token_spec(root, url)
    outputs = [giftbox("source", "tokened", "--into", str(tmp_path / "src")),
               giftbox("status", "tokened"), giftbox("status", "--json", "tokened"),
               giftbox("status", "--offline", "--json"),
               giftbox("report", "--offline", "-o", str(tmp_path / "report"))]
    for result in outputs:
        assert "Traceback" not in result.err
        assert TOKEN not in result.out + result.err
    assert outputs[0].code in (2, 3)
    for path, data in all_bytes_under(cache, tmp_path / "report", root / ".giftbox"):
        assert TOKEN.encode() not in data, path


class GitHTTP:
    """git's smart HTTP protocol on 127.0.0.1 (``git http-backend`` as CGI) behind basic
    auth: a private git server."""

    def __init__(self, project_root: Path) -> None:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.requests: list[str] = []
        served = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                self._cgi()

            def do_POST(self) -> None:  # noqa: N802
                self._cgi()

            def _cgi(self) -> None:
                served.requests.append(self.path)
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(project_root),
                       "GIT_HTTP_EXPORT_ALL": "1", "REQUEST_METHOD": self.command,
                       "PATH_INFO": path, "QUERY_STRING": query, "REMOTE_USER": USER,
                       "REMOTE_ADDR": "127.0.0.1", "CONTENT_LENGTH": str(len(body)),
                       "CONTENT_TYPE": self.headers.get("Content-Type") or "",
                       "GIT_PROTOCOL": self.headers.get("Git-Protocol") or "",
                       "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
                proc = subprocess.run(["git", "http-backend"], input=body, env=env,
                                      capture_output=True, check=False)
                head, _, payload = proc.stdout.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                status = next((line.split(" ", 2)[1] for line in lines
                               if line.lower().startswith("status:")), "200")
                self.send_response(int(status))
                for line in lines:
                    name, _, value = line.partition(": ")
                    if name.lower() != "status" and value:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.slow  # a credentialed server on loopback and whole builds' worth of git
@pytest.mark.parametrize("how", ["GIT_ASKPASS", "GIFTBOX_GIT_CREDENTIAL_HELPER"])
def test_a_private_git_server_works_with_git_askpass_or_a_helper_and_nothing_stores_it(
        root: Path, cache: Path, tmp_path: Path, upstream, giftbox, how: str) -> None:
    upstream.tag("1.0.0")
    served = tmp_path / "served"
    served.mkdir()
    git(served, "clone", "-q", "--bare", str(upstream.path), "demo.git")
    server = GitHTTP(served)
    try:
        git_token_spec(root, f"http://127.0.0.1:{server.port}/demo.git")
        script = tmp_path / "credentials"
        if how == "GIT_ASKPASS":
            script.write_text(f'#!/bin/sh\ncase "$1" in Username*) echo {USER};; '
                              f'*) echo {PASSWORD};; esac\n')
        else:
            script.write_text(f'#!/bin/sh\n[ "$1" = get ] && printf "username={USER}\\n'
                              f'password={PASSWORD}\\n"\nexit 0\n')
        script.chmod(0o700)
        result = giftbox("source", "tokened", "--into", str(tmp_path / "src"),
                         env={how: str(script)})
        assert result.code == 0, result.err
        assert (tmp_path / "src" / "demo.py").is_file()
        assert_no_secret(PASSWORD, result, cache, tmp_path / "src")
        mirror = next((cache / "git").glob("demo-*.git"))
        assert git(mirror, "config", "remote.origin.url") == \
            f"http://127.0.0.1:{server.port}/demo.git"

        refused = giftbox("source", "tokened", "--into", str(tmp_path / "src2"),
                          env={"GIFTBOX_CACHE": str(tmp_path / "cache2"),
                               "GIT_ASKPASS": "/bin/false"})
        assert_named_failure(refused, 3, "cannot fetch http://127.0.0.1", "GIT_ASKPASS")
    finally:
        server.close()


def test_a_mirror_an_older_giftbox_stored_with_a_token_is_removed(settings: Settings) -> None:
    url = f"https://{TOKEN}@127.0.0.1:9/openstack/nova.git"
    legacy = settings.cache_dir / "git" / f"{source._slug(url)}.git"
    legacy.mkdir(parents=True)
    (legacy / "config").write_text(f'[remote "origin"]\n\turl = {url}\n')
    with pytest.raises(SourceError) as info:
        source.GitMirror(url, settings)
    assert "was removed" in info.value.render() and TOKEN not in info.value.render()
    assert not legacy.exists()


def test_redacted_urls_keep_the_ssh_user_and_drop_every_secret() -> None:
    from giftbox.gitutil import redact_url

    assert redact_url(f"https://{TOKEN}@host/x.git") == "https://***@host/x.git"
    assert redact_url(f"http://u:{PASSWORD}@127.0.0.1:81/simple") == \
        "http://***@127.0.0.1:81/simple"
    assert redact_url("ssh://git@review.opendev.org:29418/nova") == \
        "ssh://git@review.opendev.org:29418/nova"
    assert redact_url(f"ssh://git:{PASSWORD}@host/nova") == "ssh://***@host/nova"


# --- 4. status and report show the rest ---------------------------------------------------


def test_status_and_report_show_every_project_past_a_bad_tarball_spec_and_state(
        root: Path, cache: Path, tmp_path: Path, giftbox) -> None:
    good = tarball(demo_members())
    bad = tarball(demo_members() + [("symlink", f"{T}/etc", "/etc")])
    for name, data in (("good", good), ("bad", bad)):
        pypi_spec(root, name, "1.0.0", _sha(data))
        (cache / "pypi" / _sha(data)).mkdir(parents=True)
        (cache / "pypi" / _sha(data) / f"{name}-1.0.0.tar.gz").write_bytes(data)
    (root / "specs" / "broken.yaml").write_text("name: broken\nupstream: [\n")
    (root / "channels.yaml").write_text(
        "channels:\n  nightly:\n    key: giftbox-nightly@giftbox.invalid\n    keep: 3\n"
        "    distros: [debian12]\n  stable:\n    key: giftbox-stable@giftbox.invalid\n"
        "    keep: 3\n    distros: [debian12]\n")
    (root / "repos" / "nightly").mkdir(parents=True)
    (root / "repos" / "nightly" / "state.json").write_text('{"format": 1, "entries": [')

    status = giftbox("status", "--offline")
    assert "Traceback" not in status.err, status.err
    lines = status.out.splitlines()
    assert any(line.startswith("good ") and "-> " in line and "-> ?" not in line
               for line in lines), status.out
    assert any(line.startswith("bad ") for line in lines)
    assert "absolute symlink" in status.out and "bad-1.0.0.tar.gz" in status.out
    assert any(line.startswith("broken ") and "ERROR" in line for line in lines)
    assert "nightly:" in status.out and "state.json" in status.out
    assert status.code == 1  # the broken spec

    as_json = giftbox("status", "--offline", "--json")
    projects = {p["project"]: p for p in json.loads(as_json.out)["projects"]}
    assert projects["good"]["commit"] and projects["broken"]["error"]
    assert any("absolute symlink" in n for n in projects["bad"]["notes"])

    report = giftbox("report", "--offline", "-o", str(tmp_path / "report"))
    assert report.code == 0, report.err
    page = (tmp_path / "report" / "index.html").read_text()
    for name in ("good", "bad", "broken"):
        assert f'data-project="{name}"' in page
    assert "state.json" in page and "absolute symlink" in page
