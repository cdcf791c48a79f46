"""Property-based fuzzing of what operators and attackers hand giftbox: specs and channels.yaml.

For every generated input: the outcome is a loaded value or the stage's named error (a
SpecError / RepoError in-process; an exit code from the documented set on the command line),
never another exception or a traceback; nothing is written anywhere and no process is started
while reading it (watched with a real audit hook, sys.addaudithook); what a spec is accepted
with obeys the policy of the README's Errors section. Examples are bounded and derandomized so
CI stays short and a failure reproduces.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, git_spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from giftbox.distros import load_distros
from giftbox.errors import RepoError, SpecError
from giftbox.repo.archive import walk_tar
from giftbox.repo.channels import load_channels
from giftbox.settings import Settings
from giftbox.spec import RESERVED_ACCOUNTS, load_spec, path_problem, system_dir

# --- watching for writes and processes ------------------------------------------------------

_WATCH: dict[str, Any] = {"on": False, "events": []}
_PROCESS_EVENTS = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                   "os.fork", "os.forkpty", "pty.spawn"}
_WRITE_EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.symlink", "os.link",
                 "os.truncate", "os.chmod", "os.chown", "os.utime", "shutil.rmtree",
                 "shutil.copyfile", "shutil.move"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _WATCH["on"]:
        return
    if event in _PROCESS_EVENTS or event in _WRITE_EVENTS:
        _WATCH["events"].append((event, args[:2]))
    elif event == "open" and len(args) >= 3:
        mode, flags = args[1], args[2]
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                (isinstance(flags, int) and flags & _WRITE_FLAGS):
            _WATCH["events"].append((event, args[:2]))


sys.addaudithook(_audit)


class watched:
    """Records writes and process starts inside the ``with`` block."""

    def __enter__(self) -> list[tuple[str, Any]]:
        _WATCH["events"] = []
        _WATCH["on"] = True
        return _WATCH["events"]

    def __exit__(self, *exc: object) -> None:
        _WATCH["on"] = False


# --- strategies --------------------------------------------------------------------------

HOSTILE = [
    "/", "/var/lib//", "/usr/lib", "/opt", "/opt/", "/etc", "/etc/", "/etc/shadow",
    "/etc/sudoers", "/etc/sudoers.d/demo", "/etc/demo/../shadow", "/var/lib/%(touch${IFS}x)",
    "/opt/openstack/%{name}", "/opt/$(touch x)", "/opt/`id`", "/opt/a b", "/opt/*", "-rf",
    "--upload-pack=touch x", "ext::sh -c touch% /tmp/x", "fd::3", "file:///etc/passwd",
    "https://user:pw@127.0.0.1/x", "https://ghp_token@127.0.0.1/x.git", "root", "wheel",
    "0x10", "0b11", "1:20", "9" * 400, "1." + "0" * 300, "\x00", "\x1b[31m", "a\u2028b",
    "caf\u00e9", "\ufeff", "~", "..", ".", "", " ", "nan", "-5", "yes", "maybe",
    "foo @ git+ext::sh", "foo @ file:///etc", "--index-url=http://x", "a\nb",
    "/etc/demo/demo.conf", "/opt/openstack/demo", "/var/lib/demo", "demo", "debian12",
    "x86_64", "1.0.0", "2026.1",
]
scalars = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=40),
    st.text(alphabet="/%(){}$.-_a~ \x00\x7f", max_size=30),
    st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
    st.booleans(), st.none(), st.floats(allow_nan=True, allow_infinity=True),
)
# Values that may well be accepted where they land, so accepted specs are checked too.
PLAUSIBLE = st.sampled_from([
    "/opt/openstack/demo2", "/srv/demo", "/usr/lib/demo", "/var/lib/demo-state",
    "/etc/demo/other.conf", "/etc/demo/sub/x.conf", "/etc/demo/rw.d", "/bin/sh", "demo2",
    "demo-svc", "pymemcache>=4", "oslo.config", "1.2.3", "2026.2", "debian12", "x86_64",
    "0640", True, False, 2, 7])
values = st.recursive(st.one_of(PLAUSIBLE, scalars), lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(["name", "path", "key", "x", "keep"]),
                              st.text(max_size=8)), inner, max_size=4)), max_leaves=12)

BASE_SPEC = yaml.safe_load(
    git_spec("demo", "https://opendev.org/openstack/demo.git", "1.0.0")
    + "requirements: [pymemcache]\n")
BASE_SPEC["package"].update({
    "user": {"name": "demo", "home": "/var/lib/demo"},
    "config_files": [{"path": "/etc/demo/demo.conf", "source": "demo.conf", "mode": "0640"}],
    "rootwrap": {"command": "demo-rootwrap", "config": "/etc/demo/rootwrap.conf",
                 "filters_path": "/etc/demo/rootwrap.d"},
    "release": 1, "allow_any_prefix": False, "description": "Demo."})

BASE_CHANNELS = {"channels": {
    "nightly": {"key": "giftbox-nightly@giftbox.invalid", "keep": 3, "distros": ["debian12"]},
    "stable": {"description": "Stable.", "key": "giftbox-stable@giftbox.invalid", "keep": 5,
               "distros": ["debian12", "rocky9"], "arches": ["x86_64"]}}}


def _leaves(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(tree, dict):
        out = [path] if path else []
        for k, v in tree.items():
            out += _leaves(v, path + (k,))
        return out
    if isinstance(tree, list):
        out = [path]
        for i, v in enumerate(tree):
            out += _leaves(v, path + (i,))
        return out
    return [path]


def _set(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    tree[head] = _set(tree[head], rest, value)
    return tree


RAW_SNIPPETS = ["!!int abc", "!!bool maybe", "0x10", "1:20", "&a [*a]", "*nope", "? [a]",
                "{", "[", "'", '"\\0"', "\t", "%YAML 1.1", "---", "!!python/object:os.system",
                "<<: {a: 1}", "\x00", "\xe9", "- -", ": :", "9" * 5000, "2001-01-01 99:99:99",
                "!!binary '***'", "!!float x", "!!timestamp 1", ".inf", "0o17"]


@st.composite
def mutated_yaml(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    """``base`` with some fields replaced by hostile values, dumped; sometimes its text is
    then cut, spliced with raw YAML, a key repeated, or re-encoded."""
    import copy
    tree = copy.deepcopy(base)
    paths = _leaves(tree)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        where = draw(st.sampled_from(paths))
        try:
            tree = _set(tree, where, draw(values))
        except (KeyError, IndexError, TypeError):
            pass
        paths = _leaves(tree) or [()]
    text = yaml.safe_dump(tree, allow_unicode=draw(st.booleans()), sort_keys=False)
    how = draw(st.sampled_from(["dump", "dump", "splice", "repeat", "cut", "encode"]))
    if how == "splice":
        lines = text.splitlines(keepends=True)
        at = draw(st.integers(min_value=0, max_value=len(lines)))
        lines.insert(at, " " * draw(st.integers(0, 4)) + draw(st.sampled_from(
            [s + "\n" for s in RAW_SNIPPETS] + [f"x: {s}\n" for s in RAW_SNIPPETS])))
        text = "".join(lines)
    elif how == "repeat":
        lines = text.splitlines(keepends=True)
        text += draw(st.sampled_from(lines)) if lines else ""
    elif how == "cut":
        text = text[:draw(st.integers(min_value=0, max_value=len(text)))]
    elif how == "encode":
        return text.encode(draw(st.sampled_from(["utf-16", "latin-1", "utf-32"])),
                           errors="replace")
    return text.encode("utf-8", errors="surrogatepass")


FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


# --- the tree ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("fuzz")
    root = base / "tree"
    (root / "specs").mkdir(parents=True)
    (root / "patches").mkdir()
    (root / "files" / "demo").mkdir(parents=True)
    (root / "files" / "demo" / "demo.conf").write_text("[DEFAULT]\n")
    shutil.copytree(REPO / "builders", root / "builders")
    shutil.copytree(REPO / "constraints", root / "constraints")
    return root


def _check_accepted(spec: Any) -> None:
    """What the policy says an accepted spec can hold."""
    package = spec.package
    paths = [package.prefix] + [c.path for c in package.config_files]
    if package.user:
        paths += [package.user.home, package.user.shell]
        assert package.user.name not in RESERVED_ACCOUNTS
        assert package.user.group not in RESERVED_ACCOUNTS
        assert not system_dir(package.user.home)
    if package.rootwrap:
        paths += [package.rootwrap.config, package.rootwrap.filters_path]
    for path in paths:
        assert path_problem(path) is None, path
    assert not system_dir(package.prefix) and package.prefix.count("/") >= 2
    for conf in [c.path for c in package.config_files] + (
            [package.rootwrap.config, package.rootwrap.filters_path] if package.rootwrap
            else []):
        assert conf.startswith(f"/etc/{spec.name}/"), conf
    for text in (spec.release, *spec.requirements, spec.constraints):
        assert text.isprintable()
        assert "@" not in text.split("//", 1)[-1].split("/", 1)[0] or "://" not in text


@pytest.mark.slow
@FUZZ
@given(data=mutated_yaml(BASE_SPEC))
def test_fuzz_spec_is_loaded_or_refused_by_name(fuzz_tree: Path, data: bytes) -> None:
    path = fuzz_tree / "specs" / "demo.yaml"
    path.write_bytes(data)
    known = frozenset(load_distros(fuzz_tree / "builders"))
    with watched() as events:
        try:
            spec = load_spec(path, fuzz_tree, known)
        except SpecError as exc:
            spec = None
            assert exc.problems and all(p.file.startswith(("specs/", "patches/"))
                                        for p in exc.problems)
            rendered = exc.render()
            assert "\x00" not in rendered and "\x1b" not in rendered
            assert "pw@" not in rendered and "ghp_token" not in rendered
    assert events == [], events
    if spec is not None:
        _check_accepted(spec)


@pytest.mark.slow
@FUZZ
@given(data=mutated_yaml(BASE_CHANNELS))
def test_fuzz_channels_yaml_is_loaded_or_refused_by_name(fuzz_tree: Path, data: bytes) -> None:
    (fuzz_tree / "channels.yaml").write_bytes(data)
    cfg = Settings.resolve(root=fuzz_tree, env={"HOME": str(fuzz_tree.parent),
                                                "GIFTBOX_CACHE": str(fuzz_tree / ".cache")})
    with watched() as events:
        try:
            channels = load_channels(cfg)
        except RepoError as exc:
            channels = None
            assert "\x00" not in exc.render()
    assert events == [], events
    for channel in (channels or {}).values():
        assert not channel.key.startswith("-") and channel.key.isprintable()
        assert channel.distros and len({d.name for d in channel.distros}) == len(channel.distros)
        assert isinstance(channel.keep, int) and channel.keep >= 1


# --- a few runs of the real command line -------------------------------------------------


def _listing(base: Path, skip: Path) -> set[str]:
    return {str(p.relative_to(base)) for p in base.rglob("*")
            if skip not in p.parents and p != skip}


CLI = settings(max_examples=4, deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.function_scoped_fixture])


@pytest.mark.slow
@CLI
@given(spec=mutated_yaml(BASE_SPEC), channels=mutated_yaml(BASE_CHANNELS))
def test_fuzz_cli_exit_codes(fuzz_tree: Path, spec: bytes, channels: bytes) -> None:
    (fuzz_tree / "specs" / "demo.yaml").write_bytes(spec)
    (fuzz_tree / "channels.yaml").write_bytes(channels)
    outside = fuzz_tree.parent
    before = _listing(outside, fuzz_tree)
    env = dict(os.environ, GIFTBOX_ROOT=str(fuzz_tree), GIFTBOX_CACHE=str(fuzz_tree / ".cache"))
    for argv, allowed in ((["spec", "validate", "--all"], {0, 2, 7}),
                          (["spec", "validate", "demo", "--json"], {0, 2, 7}),
                          (["channel", "show", "nightly"], {0, 8})):
        run = subprocess.run([sys.executable, "-m", "giftbox", *argv], cwd=fuzz_tree, env=env,
                             capture_output=True, check=False, timeout=60)
        err = run.stderr.decode(errors="replace")
        assert run.returncode in allowed, (argv, run.returncode, err)
        assert "Traceback" not in err, err
    assert _listing(outside, fuzz_tree) == before


# --- the pool's strict tar reader against tarfile -------------------------------------------

_SEGMENT = st.text(st.characters(blacklist_characters="/\x00\n", blacklist_categories=("Cs",)),
                   min_size=1, max_size=40)
_TAR_NAMES = st.one_of(
    st.lists(_SEGMENT, min_size=1, max_size=8).map("/".join),  # long ones need L, K, pax
    st.lists(_SEGMENT, min_size=1, max_size=3).map(lambda parts: "./" + "/".join(parts)),
    st.sampled_from(["control", "./control", "./usr/bin/x", "a" * 99, "b" * 100, "c" * 101]))
_TAR_TYPES = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
              tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE]


@st.composite
def tar_archives(draw: st.DrawFn) -> bytes:
    """A tar archive as Python's tarfile writes it (GNU, pax or ustar), of members with names
    that need no stripping: files with data, directories, links, devices, fifos."""
    fmt = draw(st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for _ in range(draw(st.integers(min_value=0, max_value=5))):
            info = tarfile.TarInfo(draw(_TAR_NAMES))
            info.type = draw(st.sampled_from(_TAR_TYPES))
            data = draw(st.binary(max_size=1200)) if info.type == tarfile.REGTYPE else b""
            info.size = len(data)
            if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = draw(_TAR_NAMES)
            if info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor = draw(st.integers(min_value=0, max_value=2 ** 22))
                info.devminor = draw(st.integers(min_value=0, max_value=255))
            info.uid = draw(st.sampled_from([0, 1000, 2 ** 22, 2 ** 40]))
            info.uname = draw(st.sampled_from(["", "root", "caf\u00e9"]))
            info.mtime = draw(st.one_of(st.integers(min_value=0, max_value=2 ** 40),
                                        st.integers(min_value=0, max_value=2 ** 33)
                                        .map(lambda n: n + 0.5)))
            try:
                tar.addfile(info, io.BytesIO(data) if data else None)
            except ValueError:
                pass  # this format cannot hold it (ustar: long names, big numbers)
    return out.getvalue()


def _refix_checksum(block: bytearray) -> None:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % (sum(block) & 0o777777)


@st.composite
def hostile_tars(draw: st.DrawFn) -> bytes:
    """A generated archive, then damaged: cut anywhere, a byte flipped (or a header's byte
    flipped and its checksum made right again), garbage or a second archive appended."""
    data = bytearray(draw(tar_archives()))
    how = draw(st.sampled_from(["cut", "flip", "header", "header", "append", "concat"]))
    if how == "cut":
        return bytes(data[:draw(st.integers(min_value=0, max_value=len(data)))])
    if how == "append":
        return bytes(data) + draw(st.binary(min_size=1, max_size=600))
    if how == "concat":
        return bytes(data[:-1024 * draw(st.integers(min_value=0, max_value=2))]) + \
            draw(tar_archives())
    at = draw(st.integers(min_value=0, max_value=max(0, len(data) - 1)))
    if data:
        data[at] ^= draw(st.integers(min_value=1, max_value=255))
    if how == "header":
        start = at - at % 512
        block = bytearray(data[start:start + 512])
        if block.count(0) != 512:
            _refix_checksum(block)
            data[start:start + 512] = block
    return bytes(data)


def _tarfile_listing(data: bytes) -> list[tuple[tuple[str, bytes, int, str], bytes | None]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        for e in tar:
            handle = tar.extractfile(e) if e.isfile() else None
            out.append(((e.name, e.type, e.size, e.linkname),
                        handle.read() if handle is not None else None))
    return out


def _strict_listing(data: bytes, chunk: int = 700
                    ) -> list[tuple[tuple[str, bytes, int, str], bytes | None]]:
    chunks = iter([data[i:i + chunk] for i in range(0, len(data), chunk)])
    return [(tuple(entry), content) for entry, content  # type: ignore[misc]
            in walk_tar(chunks, "t", lambda name: True)]


@pytest.mark.slow
@FUZZ
@given(data=tar_archives(), chunk=st.sampled_from([1, 512, 700, 1 << 20]))
def test_fuzz_the_strict_tar_reader_reads_what_tarfile_writes_as_tarfile_reads_it(
        data: bytes, chunk: int) -> None:
    assert _strict_listing(data, chunk) == _tarfile_listing(data)


@pytest.mark.slow
@FUZZ
@given(data=hostile_tars())
def test_fuzz_what_the_strict_tar_reader_accepts_tarfile_reads_the_same(data: bytes) -> None:
    try:
        strict = _strict_listing(data)
    except RepoError as exc:
        assert "is not a whole tar archive" in exc.message
        return
    assert strict == _tarfile_listing(data)


def _gnu_header(name: bytes, kind: bytes, size: int = 0) -> bytearray:
    block = bytearray(512)
    block[:len(name)] = name
    block[100:156] = b"0000644\x000000000\x000000000\x00%011o\x00%011o\x00" % (size, 0) + \
        b"        "
    block[156:157] = kind
    block[257:265] = b"ustar  \x00"
    _refix_checksum(block)
    return block


def _member(name: bytes, data: bytes, kind: bytes = b"0") -> bytes:
    return bytes(_gnu_header(name, kind, len(data))) + data + bytes(-len(data) % 512)


_HOSTILE_TARS = [
    ("empty", b"", "ends before"),
    ("no end-of-archive block", _member(b"./a", b"x"), "ends before"),
    ("cut inside a member", _member(b"./a", b"x" * 600)[:700], "ends inside the member"),
    ("garbage after the end", _member(b"./a", b"x") + bytes(1024) + b"hidden", "data after"),
    ("a bad header after a good one", _member(b"./a", b"x") + b"\x01" * 512 + bytes(1024),
     "the header at byte 1024"),
    ("GNU sparse", _member(b"./a", b"x", b"S") + bytes(1024), "type b'S'"),
    ("data on a directory", _member(b"./d/", b"x", b"5") + bytes(1024), "has data"),
    ("two long names", _member(b"././@LongLink", b"a\x00", b"L")
     + _member(b"././@LongLink", b"b\x00", b"L") + _member(b"./x", b"") + bytes(1024), "repeat"),
    ("a long name with no member", _member(b"././@LongLink", b"a\x00", b"L") + bytes(1024),
     "no member"),
    ("a pax key giftbox does not read", _member(b"./PaxHeaders/x", b"21 GNU.sparse.size=9\n",
                                                b"x") + _member(b"./x", b"") + bytes(1024),
     "does not read"),
    ("a file named like a directory", _member(b"./a/", b"") + bytes(1024), "the name"),
]


@pytest.mark.parametrize(("why", "archive", "message"), _HOSTILE_TARS,
                         ids=[why for why, _, _ in _HOSTILE_TARS])
def test_the_strict_tar_reader_refuses_what_tarfile_lets_through(why: str, archive: bytes,
                                                                  message: str) -> None:
    with pytest.raises(RepoError, match=message):
        _strict_listing(archive)
