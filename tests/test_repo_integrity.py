"""Repository integrity (issue #12): a channel serves exactly what giftbox read whole, verified
and recorded, across truncated and hand-made uploads, crashes, a corrupt journal and closed
pipes. Each reproduction of the issue is a test here; tests/test_repo_model.py runs random
sequences of the same operations with kills at every step boundary.

Real tools only: bad packages are made with dpkg-deb, ar and tar, rpms with rpmbuild; apt-get
(on the host, with a sources directory of its own) and dnf read the channel served on loopback.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from plumbum import local

from giftbox.errors import RepoError, StateError
from giftbox.repo import Pool, channel_state, public_key_path, publish, republish
from giftbox.repo.promote import history, promote, prune, rollback
from tests import repo_fixtures
from tests.repo_fixtures import (
    Tree,
    dnf_repoquery,
    giftbox_cli,
    http_server,
    keyring_template,  # noqa: F401  (fixture)
    make_deb,
    make_rpm,
    need,
)

HELLO = "giftbox-hello"
tree = repo_fixtures.tree  # the fixture (a name pytest finds in this module)


@pytest.fixture(autouse=True)
def _records(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("GIFTBOX_USER", "alice")
    monkeypatch.delenv("GIFTBOX_DATABASE", raising=False)
    monkeypatch.delenv("GIFTBOX_TEST_KILL_AT", raising=False)


# --- helpers (tests/test_repo_model.py uses them too) ----------------------------------------


def hand_made_deb(out: Path, control: bytes, name: str = "bad",
                  data_compression: str = "gz") -> Path:
    """A .deb assembled by hand with ar and tar (no dpkg-deb checks): ``control`` verbatim."""
    need("ar")
    work = out / f"hand-{name}"
    (work / "ctl").mkdir(parents=True)
    (work / "data" / "usr" / "share" / "doc" / "x").mkdir(parents=True)
    (work / "data" / "usr" / "share" / "doc" / "x" / "README").write_text("x\n")
    (work / "ctl" / "control").write_bytes(control)
    (work / "debian-binary").write_text("2.0\n")
    tar = local["tar"]["--owner=0", "--group=0", "--numeric-owner"]
    tar["-czf", str(work / "control.tar.gz"), "-C", str(work / "ctl"), "./control"].run()
    flag = {"gz": "-z", "xz": "-J"}[data_compression]
    data = work / f"data.tar.{data_compression}"
    tar["-c", flag, "-f", str(data), "-C", str(work / "data"), "."].run()
    deb = out / f"{name}.deb"
    with local.cwd(work):
        local["ar"]["rc", str(deb), "debian-binary", "control.tar.gz", data.name].run()
    shutil.rmtree(work)
    return deb


def apt_lists(base: Path, url: str, key: Path, suite: str = "bookworm",
              package: str = HELLO) -> tuple[int, str, list[str]]:
    """``apt-get update`` on the host against ``url`` only (a sources list, state and cache of
    its own under ``base``), then the versions of ``package`` apt offers (apt-cache madison).
    Returns (exit code, output, versions)."""
    apt_get, apt_cache = need("apt-get"), need("apt-cache")
    etc, state, cache = base / "etc", base / "state", base / "cache"
    for d in (etc / "sources.list.d", etc / "apt.conf.d", etc / "preferences.d",
              etc / "trusted.gpg.d", state / "lists" / "partial",
              cache / "archives" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    (etc / "sources.list").write_text(f"deb [signed-by={key}] {url} {suite} main\n")
    (state / "status").touch()
    opts = ["-o", f"Dir::Etc={etc}", "-o", f"Dir::Etc::sourcelist={etc / 'sources.list'}",
            "-o", f"Dir::Etc::sourceparts={etc / 'sources.list.d'}",
            "-o", f"Dir::Etc::parts={etc / 'apt.conf.d'}",
            "-o", f"Dir::Etc::preferencesparts={etc / 'preferences.d'}",
            "-o", f"Dir::Etc::trustedparts={etc / 'trusted.gpg.d'}",
            "-o", f"Dir::State={state}", "-o", f"Dir::State::status={state / 'status'}",
            "-o", f"Dir::Cache={cache}", "-o", "Debug::NoLocking=1",
            "-o", "APT::Sandbox::User=root", "-o", "Acquire::Check-Valid-Until=false",
            "-o", "APT::Architecture=amd64", "-o", "APT::Architectures::=amd64",
            "-o", "Acquire::Languages=none"]
    proc = subprocess.run([apt_get, *opts, "update"], capture_output=True, text=True,
                          timeout=120, check=False)
    out = proc.stdout + proc.stderr
    # apt-get update exits 0 on some fetch failures; a warning or error line is a failure.
    code = proc.returncode or int(any(line.startswith(("W:", "E:", "Err:"))
                                      for line in out.splitlines()))
    versions: list[str] = []
    if code == 0:
        madison = subprocess.run([apt_cache, *opts, "madison", package], capture_output=True,
                                 text=True, timeout=60, check=False)
        versions = sorted(line.split("|")[1].strip() for line in madison.stdout.splitlines()
                          if "|" in line and "Packages" in line)
    return code, out, versions


def packages_of(tree: Tree, channel: str, generation: str | None = None) -> list[dict[str, str]]:
    """The stanzas of a channel's live (or named generation's) amd64 Packages, parsed."""
    base = tree.repos / channel / "apt"
    d = base / ".gen" / "bookworm" / generation if generation else base / "dists" / "bookworm"
    text = (d / "main" / "binary-amd64" / "Packages").read_text()
    stanzas = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line and not line[0].isspace():
                k, _, v = line.partition(":")
                fields[k] = v.strip()
        if fields:
            stanzas.append(fields)
    return stanzas


def state_filenames(tree: Tree, channel: str) -> set[str]:
    return set(channel_state(tree.settings, channel).entries)


def no_temp_files(tree: Tree) -> list[Path]:
    return [p for p in tree.repos.rglob("*.tmp") if p.is_file() or p.is_symlink()]


# --- 1. whole artifacts ----------------------------------------------------------------------


def test_a_truncated_deb_is_refused_and_never_claims_its_name(tree: Tree,
                                                              tmp_path: Path) -> None:
    deb = make_deb(tmp_path)
    cut = tmp_path / "cut" / deb.name
    cut.parent.mkdir()
    cut.write_bytes(deb.read_bytes()[:400])
    with pytest.raises(RepoError, match="truncated"):
        publish("nightly", [cut], tree.settings)
    assert Pool(tree.repos).owner_of(deb.name) is None
    # A valid ar archive whose data member is a cut-off xz stream: ar is whole, tar is not.
    work = tmp_path / "members"
    work.mkdir()
    with local.cwd(work):
        local["ar"]["x", str(deb)].run()
        data = work / "data.tar.xz"
        data.write_bytes(data.read_bytes()[:-30])
        broken = tmp_path / "broken" / deb.name
        broken.parent.mkdir()
        local["ar"]["rc", str(broken), "debian-binary", "control.tar.xz", "data.tar.xz"].run()
    assert local["dpkg-deb"]["-c", str(broken)].run(retcode=None)[0] != 0
    with pytest.raises(RepoError, match="data.tar.xz"):
        publish("nightly", [broken], tree.settings)
    assert Pool(tree.repos).owner_of(deb.name) is None and state_filenames(tree, "nightly") == set()
    # The real file publishes, and the pool copy is a whole .deb.
    result = publish("nightly", [deb], tree.settings)
    pooled = Pool(tree.repos).object_path(Pool(tree.repos).load(result.added[0].digest))
    local["dpkg-deb"]["-c", str(pooled)].run()


def test_a_text_manifest_named_like_an_rpm_is_refused(tree: Tree, tmp_path: Path) -> None:
    rpm = make_rpm(tmp_path)
    fake = tmp_path / "fake" / rpm.name
    fake.parent.mkdir()
    fake.write_text(f"{rpm}\n")  # rpm -qp reads this as a manifest naming the real rpm
    assert local["rpm"]["-qp", str(fake)].run(retcode=None)[0] == 0
    with pytest.raises(RepoError, match="no rpm lead"):
        publish("nightly", [fake], tree.settings)
    flipped = tmp_path / "flipped" / rpm.name
    flipped.parent.mkdir()
    data = bytearray(rpm.read_bytes())
    data[-100] ^= 0x01
    flipped.write_bytes(bytes(data))
    with pytest.raises(RepoError, match="digest"):
        publish("nightly", [flipped], tree.settings)
    assert Pool(tree.repos).owner_of(rpm.name) is None
    publish("nightly", [rpm], tree.settings)
    # dnf sees exactly what the state holds.
    with http_server(tree.repos / "nightly") as url:
        code, out = dnf_repoquery(tmp_path, f"{url}/yum/rocky9/x86_64",
                                  public_key_path(tree.settings, "nightly"),
                                  "--qf", "%{name}-%{version}-%{release}.%{arch}")
    assert code == 0, out
    assert "giftbox-hello-1.0-1.el9.noarch" in out


CONTROL = (b"Package: giftbox-hand\nVersion: 1.0-1~deb12\nArchitecture: all\n"
           b"Maintainer: t <t@giftbox.invalid>\nDescription: hand made\n")


BAD_CONTROLS = [
    ("second stanza", CONTROL + b"\nPackage: giftbox-phantom\nVersion: 6.6-6~deb12\n"
                                b"Architecture: all\n", "blank"),
    ("duplicate Package", CONTROL + b"Package: giftbox-other\n", "twice"),
    ("Filename field", CONTROL + b"Filename: pool/main/e/evil/evil.deb\n", "index"),
    ("SHA256 field", CONTROL + b"SHA256: " + b"0" * 64 + b"\n", "index"),
    ("colon-less line", CONTROL + b"this line has no colon\n", "not 'Field: value'"),
    ("not UTF-8", CONTROL.replace(b"hand made", b"caf\xe9"), "UTF-8"),
    ("upper-case name", CONTROL.replace(b"giftbox-hand", b"Giftbox-Hand"), "package name"),
    ("whitespace-only line", CONTROL + b" \n", "blank"),
    ("bad version", CONTROL.replace(b"1.0-1~deb12", b"one-1~deb12"), "not a Debian version"),
]


@pytest.mark.parametrize(("why", "control", "message"), BAD_CONTROLS,
                         ids=[why for why, _, _ in BAD_CONTROLS])
def test_hand_made_debs_with_bad_control_are_refused(tree: Tree, tmp_path: Path, why: str,
                                                     control: bytes, message: str) -> None:
    deb = hand_made_deb(tmp_path, control)
    with pytest.raises(RepoError, match=message):
        publish("nightly", [deb], tree.settings)
    assert state_filenames(tree, "nightly") == set()
    assert not (tree.repos / ".pool" / "by-name").is_dir() or \
        not any((tree.repos / ".pool" / "by-name").iterdir()), why


def _with_data_tar(deb: Path, out: Path, damage: str) -> Path:
    """``deb`` (data.tar.gz) with its data tar changed, then gzipped and put back with ar."""
    work = out / f"redo-{damage}"
    work.mkdir()
    with local.cwd(work):
        local["ar"]["x", str(deb)].run()
        tar = (work / "data.tar.gz").read_bytes()
        raw = gzip.decompress(tar)
        end = len(raw.rstrip(b"\0"))  # the last member's data ends here, or its header does
        end += -end % 512
        raw = {"garbage after the end": raw + b"hidden payload\n",
               "cut after a member": raw[:end],
               "a bad header after the first": raw[:512] + b"\x01" * 512 + raw[1024:]}[damage]
        (work / "data.tar.gz").write_bytes(gzip.compress(raw))
        redone = out / f"{damage.replace(' ', '-')}.deb"
        local["ar"]["rc", str(redone), "debian-binary", "control.tar.gz", "data.tar.gz"].run()
    return redone


@pytest.mark.parametrize("damage", ["garbage after the end", "cut after a member",
                                    "a bad header after the first"])
def test_a_data_tar_that_tarfile_would_list_but_is_not_whole_is_refused(
        tree: Tree, tmp_path: Path, damage: str) -> None:
    # Python's tarfile lists each of these without a complaint (it stops at the first zero or
    # bad header, and at a member boundary); giftbox's reader does not guess.
    deb = _with_data_tar(hand_made_deb(tmp_path, CONTROL), tmp_path, damage)
    with pytest.raises(RepoError, match="data.tar.gz is not a whole tar archive"):
        publish("nightly", [deb], tree.settings)
    assert state_filenames(tree, "nightly") == set()


COMPRESS = {"zst": ["zstd", "-q", "-c"], "xz": ["xz", "-c"], "bz2": ["bzip2", "-c"]}


def _two_streams(deb: Path, out: Path, member: str, kind: str) -> Path:
    """``deb`` with its ``member`` tar recompressed as two ``kind`` streams (frames), split
    after the first 512-byte block: dpkg reads the first and ignores the second."""
    work = out / f"split-{member}-{kind}"
    work.mkdir()
    with local.cwd(work):
        local["ar"]["x", str(deb)].run()
        names = local["ar"]["t", str(deb)]().split()
        old = next(n for n in names if n.startswith(f"{member}.tar"))
        raw = gzip.decompress((work / old).read_bytes())
        streams = [subprocess.run(COMPRESS[kind], input=part, capture_output=True,
                                  check=True).stdout for part in (raw[:512], raw[512:])]
        (work / old).unlink()
        new = f"{member}.tar.{kind}"
        (work / new).write_bytes(b"".join(streams))
        redone = out / f"split-{member}-{kind}.deb"
        local["ar"]["rc", str(redone), *[new if n == old else n for n in names]].run()
    return redone


@pytest.mark.parametrize("kind", ["zst", "xz", "bz2"])
@pytest.mark.parametrize("member", ["data", "control"])
def test_a_member_with_a_second_stream_dpkg_would_ignore_is_refused(
        tree: Tree, tmp_path: Path, member: str, kind: str) -> None:
    # dpkg (1.21) reads an xz, bzip2 or zstd member's first stream and stops; Python's and
    # zstd's readers go on to the next. What giftbox lists must be what dpkg installs.
    deb = _two_streams(hand_made_deb(tmp_path, CONTROL), tmp_path, member, kind)
    listed = local["dpkg-deb"]["--ctrl-tarfile" if member == "control" else "--fsys-tarfile",
                               str(deb)].run(retcode=None)
    assert len(listed[1]) <= 512 or listed[0] != 0  # dpkg saw only the first block
    with pytest.raises(RepoError, match=f"{member}.tar.{kind} holds [0-9]+ bytes after its "
                                        "first (zstd frame|stream): dpkg reads only"):
        publish("nightly", [deb], tree.settings)
    assert state_filenames(tree, "nightly") == set()


def test_zstd_frame_end_reads_headers_not_data() -> None:
    from giftbox.repo.archive import zstd_frame_end

    for size in (0, 1, 4096, 300_000):
        data = os.urandom(size // 2) + b"\0" * (size - size // 2)
        for extra in ([], ["-T2"], ["--no-check"], ["-19"]):
            frame = subprocess.run(["zstd", "-q", "-c", *extra], input=data,
                                   capture_output=True, check=True).stdout
            assert zstd_frame_end(frame) == len(frame)
            assert zstd_frame_end(frame + frame) == len(frame)
            for cut in (3, 5, len(frame) - 1):
                with pytest.raises(ValueError):
                    zstd_frame_end(frame[:cut])
    with pytest.raises(ValueError, match="reserved"):
        frame = bytearray(subprocess.run(["zstd", "-q", "-c"], input=b"x", capture_output=True,
                                         check=True).stdout)
        frame[4] |= 0x08
        zstd_frame_end(bytes(frame))


def _deb_with_members(out: Path, label: str, members: list[tuple[str, bytes, str]],
                      where: str = "data") -> Path:
    """A hand-made .deb whose data (or control) tar holds ``members``: (name, tar type,
    hard link target), written by Python's tarfile (GNU format), gzipped."""
    import io
    import tarfile

    deb = hand_made_deb(out, CONTROL, name=label)
    work = out / f"members-{label}"
    work.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        if where == "control":
            info = tarfile.TarInfo("./control")
            info.size = len(CONTROL)
            tar.addfile(info, io.BytesIO(CONTROL))
        for name, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            info.size = 2 if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(b"x\n") if kind == tarfile.REGTYPE else None)
    with local.cwd(work):
        local["ar"]["x", str(deb)].run()
        (work / f"{where}.tar.gz").write_bytes(gzip.compress(buf.getvalue()))
        redone = out / f"{label}.deb"
        redone.unlink()
        local["ar"]["rc", str(redone), "debian-binary", "control.tar.gz", "data.tar.gz"].run()
    return redone


OUTSIDE = [
    ("dotdot name", [("./usr/../../etc/evil", b"0", "")], "'./usr/../../etc/evil'"),
    ("absolute name", [("/etc/evil", b"0", "")], "an absolute path"),
    ("hard link up", [("./usr/x", b"1", "../../etc/shadow")], "hard link target"),
    ("hard link absolute", [("./usr/x", b"1", "/etc/shadow")], "an absolute path"),
    ("dotdot in control", [("../postinst", b"0", "")], "'../postinst'"),
]


@pytest.mark.parametrize(("why", "members", "message"), OUTSIDE,
                         ids=[why for why, _, _ in OUTSIDE])
def test_members_that_lead_out_of_the_tree_are_refused(
        tree: Tree, tmp_path: Path, why: str, members: list[tuple[str, bytes, str]],
        message: str) -> None:
    deb = _deb_with_members(tmp_path, why.replace(" ", "-"), members,
                            "control" if "control" in why else "data")
    with pytest.raises(RepoError, match="leads out of the package's tree") as info:
        publish("nightly", [deb], tree.settings)
    assert message in info.value.message
    assert state_filenames(tree, "nightly") == set()
    # a symlink may point anywhere (dpkg-deb writes absolute and relative ones): published
    fine = _deb_with_members(tmp_path, "links", [("./usr/up", b"2", "../../bin/sh"),
                                                 ("./usr/abs", b"2", "/bin/sh")])
    assert publish("nightly", [fine], tree.settings).added


def test_packages_is_generated_from_parsed_fields_and_apt_agrees(tree: Tree,
                                                                 tmp_path: Path) -> None:
    # Odd but valid spacing and a multi-line Description: Packages spells it canonically,
    # one stanza per state entry, and apt offers exactly the state's versions.
    control = (b"Package:   giftbox-hello\nVersion:1.0-1~deb12\nArchitecture: all\n"
               b"Maintainer: t <t@giftbox.invalid>\nDescription: hand made\n line two\n .\n"
               b" line four\n")
    publish("nightly", [hand_made_deb(tmp_path, control, name="ok")], tree.settings)
    publish("nightly", [make_deb(tmp_path, version="1.1-1~deb12")], tree.settings)
    stanzas = packages_of(tree, "nightly")
    assert [(s["Package"], s["Version"]) for s in stanzas] == \
        [(HELLO, "1.0-1~deb12"), (HELLO, "1.1-1~deb12")]
    text = (tree.repos / "nightly/apt/dists/bookworm/main/binary-amd64/Packages").read_text()
    assert "Package: giftbox-hello\nVersion: 1.0-1~deb12\n" in text
    assert "Description: hand made\n line two\n .\n line four\n" in text
    with http_server(tree.repos / "nightly" / "apt") as url:
        code, out, versions = apt_lists(tmp_path / "apt", url,
                                        public_key_path(tree.settings, "nightly"))
    assert code == 0, out
    assert versions == ["1.0-1~deb12", "1.1-1~deb12"]


def test_changes_within_one_second_are_never_hidden_by_if_modified_since(
        tree: Tree, tmp_path: Path) -> None:
    # apt keeps its lists and asks for InRelease with If-Modified-Since; HTTP servers compare
    # whole seconds (python's http.server: 304 when mtime <= the date). Three publishes in a
    # row, each read by the same apt between them: every one is seen, and every generation's
    # top files are whole seconds later than the one before (CI found the stale 304).
    seen: list[str] = []
    stamps: list[dict[str, int]] = []
    with http_server(tree.repos / "nightly" / "apt") as url:
        for minor in range(3):
            publish("nightly", [make_deb(tmp_path, version=f"1.{minor}-1~deb12")], tree.settings)
            code, out, versions = apt_lists(tmp_path / "apt", url,
                                            public_key_path(tree.settings, "nightly"))
            assert code == 0, out
            seen.append(versions[-1])
            live = (tree.repos / "nightly/apt/dists/bookworm").resolve()
            stamps.append({n: int((live / n).stat().st_mtime)
                           for n in ("InRelease", "Release", "Release.gpg")})
    assert seen == ["1.0-1~deb12", "1.1-1~deb12", "1.2-1~deb12"]
    for before, after in zip(stamps, stamps[1:], strict=False):
        assert all(after[n] > before[n] for n in before), stamps


def test_the_same_bytes_again_take_the_pools_reading_unless_it_is_older_or_damaged(
        tree: Tree, tmp_path: Path) -> None:
    # Publishing bytes the pool holds (a no-change build with --publish) hashes them and takes
    # the pool's reading, made whole by this giftbox's reader (meta.json names it). An object
    # an older reader stored is read whole again and stamped; a damaged copy (bytes that no
    # longer hash to its name) is stored again from the file, and the channel serves it whole.
    from giftbox.repo.pool import READER

    deb = make_deb(tmp_path, version="1.0-1~deb12")
    publish("nightly", [deb], tree.settings)
    digest = channel_state(tree.settings, "nightly").entries[deb.name].digest
    obj_dir = Pool(tree.settings.repos_dir).object_dir(digest)
    meta = json.loads((obj_dir / "meta.json").read_text())
    assert meta["reader"] == READER
    older = {k: v for k, v in meta.items() if k != "reader"}
    (obj_dir / "meta.json").write_text(json.dumps(older))
    publish("nightly", [deb], tree.settings)
    assert json.loads((obj_dir / "meta.json").read_text()) == meta

    # A meta.json edited by hand (the reader's stamp kept) cannot route the package elsewhere:
    # a name that is no package name is not the pool's reading, so the file is read again.
    (obj_dir / "meta.json").write_text(json.dumps({**meta, "name": "../../evil"}))
    publish("nightly", [deb], tree.settings)
    assert json.loads((obj_dir / "meta.json").read_text()) == meta
    assert {e.name for e in channel_state(tree.settings, "nightly").entries.values()} == {HELLO}

    held = obj_dir / deb.name
    held.chmod(0o644)
    held.write_bytes(held.read_bytes()[:100])  # damaged in place: every link sees it
    publish("nightly", [deb], tree.settings)
    served = tree.repos / "nightly" / "apt" / channel_state(tree.settings, "nightly") \
        .entries[deb.name].paths[0].removeprefix("apt/")
    assert (obj_dir / deb.name).read_bytes() == deb.read_bytes()
    assert served.read_bytes() == deb.read_bytes()


def test_a_package_read_ahead_is_not_read_again_and_a_refused_one_is_refused_again(
        tree: Tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `build --publish` reads its package whole while lintian runs (pool.read_ahead); the
    # publish then takes that reading for the same bytes. A file the reader refuses leaves
    # nothing behind: the publish reads it and refuses it itself.
    from giftbox.repo import pool as pool_module

    deb = make_deb(tmp_path, version="2.0-1~deb12")
    pool_module.read_ahead(deb)
    cut = tmp_path / "cut" / deb.name
    cut.parent.mkdir()
    cut.write_bytes(deb.read_bytes()[:400])
    pool_module.read_ahead(cut)
    pool_module.read_ahead(tmp_path / "gone.deb")  # not there: left to the publish

    def not_again(*_args: object) -> None:
        raise AssertionError("read whole twice")

    monkeypatch.setattr(pool_module, "inspect_deb", not_again)
    result = publish("nightly", [deb], tree.settings)
    assert [e.filename for e in result.added] == [deb.name]
    monkeypatch.undo()
    with pytest.raises(RepoError, match="truncated"):
        publish("nightly", [cut], tree.settings)
    with pytest.raises(RepoError, match="no such file"):
        publish("nightly", [tmp_path / "gone.deb"], tree.settings)


# --- 3. crashes ------------------------------------------------------------------------------


def _publish_killed_at(tree: Tree, deb: Path, point: str) -> int:
    proc = giftbox_cli(tree, "publish", "nightly", str(deb)).with_env(
        GIFTBOX_TEST_KILL_AT=point).run(retcode=None)
    return int(proc[0])


def test_two_interrupted_publishes_then_a_third_lose_nothing(tree: Tree,
                                                             tmp_path: Path) -> None:
    a, b, c = (make_deb(tmp_path, version=f"1.{i}-1~deb12") for i in range(3))
    # Killed after the journal, before the swap; then killed after the swap, before the state.
    assert _publish_killed_at(tree, a, "built") == -signal.SIGKILL
    assert _publish_killed_at(tree, b, "swapped") == -signal.SIGKILL
    live = {s["Version"] for s in packages_of(tree, "nightly")}
    assert live == {"1.0-1~deb12", "1.1-1~deb12"}
    giftbox_cli(tree, "publish", "nightly", str(c))()
    versions = {s["Version"] for s in packages_of(tree, "nightly")}
    assert versions == {"1.0-1~deb12", "1.1-1~deb12", "1.2-1~deb12"}
    assert state_filenames(tree, "nightly") == {a.name, b.name, c.name}
    assert not (tree.repos / "nightly" / "pending.json").exists()
    assert no_temp_files(tree) == []
    # Each publish is in the history exactly once, the interrupted ones included.
    published = [e.detail["filename"] for e in history(tree.settings, "nightly")
                 if e.kind == "publish"]
    assert sorted(published) == sorted([a.name, b.name, c.name])


def test_real_sigkills_at_random_delays_never_drop_what_was_live(tree: Tree,
                                                                tmp_path: Path) -> None:
    debs = [make_deb(tmp_path, name="giftbox-kill", version=f"1.{i}-1~deb12")
            for i in range(7)]
    start = time.monotonic()
    giftbox_cli(tree, "publish", "nightly", str(debs[0]))()
    took = time.monotonic() - start
    rng = random.Random(12)
    seen: set[str] = {debs[0].name}  # every filename ever live or journaled
    for deb in debs[1:]:
        proc = subprocess.Popen(giftbox_cli(tree, "publish", "nightly", str(deb)).formulate(),
                                env={**os.environ, **tree.env()},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.0) * took)
        proc.kill()
        proc.wait()
        journal = tree.repos / "nightly" / "pending.json"
        if journal.exists():
            seen |= {e["filename"] for e in json.loads(journal.read_text())["entries"]}
        seen |= {f"{s['Package']}_{s['Version']}_all.deb" for s in packages_of(tree, "nightly")}
        seen |= state_filenames(tree, "nightly")
    republish("nightly", tree.settings)
    assert seen <= state_filenames(tree, "nightly")
    assert seen <= {f"{s['Package']}_{s['Version']}_all.deb" for s in packages_of(tree, "nightly")}
    assert no_temp_files(tree) == []


# --- 4. the journal and the state are validated ----------------------------------------------


def test_journal_paths_outside_the_channel_are_a_named_error_never_a_deletion(
        tree: Tree, tmp_path: Path) -> None:
    publish("nightly", [make_deb(tmp_path, version="1.0-1~deb12")], tree.settings)
    publish("nightly", [make_deb(tmp_path, version="1.1-1~deb12")], tree.settings)
    victim = tree.root.parent / "victim.deb"
    victim.write_text("precious")
    entry = next(iter(channel_state(tree.settings, "nightly").entries.values())).as_dict()
    entry.update(filename="victim.deb", paths=["../../../victim.deb"], version="0.1-1~deb12")
    journal = tree.repos / "nightly" / "pending.json"
    journal.write_text(json.dumps({"repositories": ["apt/bookworm"], "entries": [entry],
                                   "removed": []}))
    for args in (("prune", "nightly", "--keep", "1"), ("channel", "show", "nightly"),
                 ("publish", "nightly", str(make_deb(tmp_path, version="1.2-1~deb12")))):
        code, out, err = giftbox_cli(tree, *args).run(retcode=None)
        assert code == 9, (args, out, err)
        assert "pending.json" in err and "Traceback" not in err
    assert victim.read_text() == "precious"
    assert journal.exists()  # left for the operator, never deleted
    # Unknown fields and a corrupt state are named too.
    journal.write_text(json.dumps({"repositories": [], "entries": [], "removed": [],
                                   "delete": ["x"]}))
    with pytest.raises(StateError, match="unknown field"):
        prune(tree.settings, "nightly", 1)
    journal.unlink()
    state = tree.repos / "nightly" / "state.json"
    good = state.read_text()
    state.write_text(good[: len(good) // 2])
    code, _, err = giftbox_cli(tree, "prune", "nightly", "--keep", "1").run(retcode=None)
    assert code == 9 and "state.json" in err
    state.write_text(good.replace('"apt/pool/main/g/', '"apt/pool/main/g/../../../../x/'))
    code, _, err = giftbox_cli(tree, "prune", "nightly", "--keep", "1").run(retcode=None)
    assert code == 9 and "paths" in err
    state.write_text(good)
    prune(tree.settings, "nightly", 1)
    assert victim.read_text() == "precious"


# --- 5. promotions are recorded in the same transaction --------------------------------------


def _promotable(tree: Tree, tmp_path: Path) -> None:
    publish("nightly", [make_deb(tmp_path, version="1.0-1~deb12")], tree.settings)


def _consistent(tree: Tree, expected: set[str]) -> None:
    assert not (tree.repos / "stable" / "pending.json").exists()
    assert state_filenames(tree, "stable") == expected
    promoted = [e for e in history(tree.settings, "stable") if e.kind == "promote"]
    assert {f for e in promoted for f in e.detail["filenames"]} == expected


def test_a_promotion_into_a_closed_pipe_is_whole(tree: Tree, tmp_path: Path) -> None:
    _promotable(tree, tmp_path)
    env = {**os.environ, **tree.env()}
    cmd = shlex.join(giftbox_cli(tree, "promote", "hello", "--from", "nightly", "--to",
                                 "stable", "--reason", "x").formulate())
    done = subprocess.run(["bash", "-c", f"{cmd} 2>&1 | head -1; exit ${{PIPESTATUS[0]}}"],
                          env=env, check=False, capture_output=True, text=True, timeout=120)
    # click exits 1 on EPIPE once the command is done; what matters is that it is done whole.
    assert done.stdout.count("\n") == 1, done
    _consistent(tree, {f"{HELLO}_1.0-1~deb12_all.deb"})
    rb = rollback(tree.settings, "stable", "hello", reason="undo")
    assert rb.promotion_id > 0 and state_filenames(tree, "stable") == set()


@pytest.mark.parametrize("point", ["journal", "swap", "saved"])
def test_sigterm_during_a_promotion_waits_for_it_to_finish(tree: Tree, tmp_path: Path,
                                                           point: str) -> None:
    _promotable(tree, tmp_path)
    code = giftbox_cli(tree, "promote", "hello", "--from", "nightly", "--to", "stable") \
        .with_env(GIFTBOX_TEST_TERM_AT=point).run(retcode=None)[0]
    assert code == -signal.SIGTERM  # delivered, once the change was whole
    _consistent(tree, {f"{HELLO}_1.0-1~deb12_all.deb"})


def test_a_promotion_killed_after_its_swap_is_recorded_by_the_next_change(
        tree: Tree, tmp_path: Path) -> None:
    _promotable(tree, tmp_path)
    code = giftbox_cli(tree, "promote", "hello", "--from", "nightly", "--to", "stable") \
        .with_env(GIFTBOX_TEST_KILL_AT="saved").run(retcode=None)[0]
    assert code == -signal.SIGKILL
    # Live and in the state, its record journaled: the next change of stable records it,
    # once, and a rollback finds it.
    assert (tree.repos / "stable" / "pending.json").exists()
    republish("stable", tree.settings)
    republish("stable", tree.settings)
    _consistent(tree, {f"{HELLO}_1.0-1~deb12_all.deb"})
    assert len([e for e in history(tree.settings, "stable") if e.kind == "promote"]) == 1
    rollback(tree.settings, "stable")
    assert state_filenames(tree, "stable") == set()


# --- 6. files that leave a channel stay one more generation ----------------------------------


def test_withdrawn_files_stay_reachable_for_one_more_index_generation(tree: Tree,
                                                                      tmp_path: Path) -> None:
    debs = [make_deb(tmp_path, version=f"1.{i}-1~deb12") for i in range(3)]
    for deb in debs:
        publish("nightly", [deb], tree.settings)
    prune(tree.settings, "nightly", 1)
    with http_server(tree.repos / "nightly" / "apt") as url:
        # A client that read the previous generation's index still downloads what it names.
        previous = sorted(p.name for p in (tree.repos / "nightly/apt/.gen/bookworm").iterdir())
        assert len(previous) == 2
        for s in packages_of(tree, "nightly", previous[0]):
            with urllib.request.urlopen(f"{url}/{s['Filename']}") as r:  # noqa: S310 (loopback)
                assert r.status == 200
        publish("nightly", [make_deb(tmp_path, version="1.3-1~deb12")], tree.settings)
        for deb in debs[:2]:
            assert not (tree.repos / "nightly/apt/pool/main/g" / HELLO / deb.name).exists()
        code, out, versions = apt_lists(tmp_path / "apt", url,
                                        public_key_path(tree.settings, "nightly"))
    assert code == 0, out
    assert versions == ["1.2-1~deb12", "1.3-1~deb12"]
    assert channel_state(tree.settings, "nightly").retired == []
    # What prune withdrew is in the history, and the state agrees with it.
    pruned = [e for e in history(tree.settings, "nightly") if e.kind == "prune"]
    assert sorted(pruned[0].detail["filenames"]) == sorted(d.name for d in debs[:2])


def test_promotion_api_takes_a_list_of_moves_all_or_none(tree: Tree, tmp_path: Path) -> None:
    from giftbox.repo import get_channel
    from giftbox.repo.promote import Move, move

    publish("nightly", [make_deb(tmp_path, version="1.0-1~deb12"),
                        make_deb(tmp_path, name="giftbox-other", version="2.0-1~deb12")],
            tree.settings)
    held = channel_state(tree.settings, "nightly").entries
    moves = [Move("hello", "nightly", (held[f"{HELLO}_1.0-1~deb12_all.deb"],)),
             Move("other", "nightly", (held["giftbox-other_2.0-1~deb12_all.deb"],))]
    done = move(tree.settings, get_channel(tree.settings, "stable"), moves, reason="release")
    assert [r.promotion_id is not None for r in done] == [True, True]
    assert state_filenames(tree, "stable") == set(held)
    # One served by no distro of the target refuses the whole list, changing nothing.
    rpm_publish = publish("nightly", [make_rpm(tmp_path)], tree.settings)
    bad = [Move("hello", "nightly", rpm_publish.added)]
    with pytest.raises(RepoError):
        move(tree.settings, get_channel(tree.settings, "stable"), moves[:1] + bad)
    assert state_filenames(tree, "stable") == set(held)


def test_promote_cli_is_recorded_once_per_change(tree: Tree, tmp_path: Path) -> None:
    _promotable(tree, tmp_path)
    promote(tree.settings, "hello", "nightly", "stable")
    promote(tree.settings, "hello", "nightly", "stable")  # nothing moves: nothing recorded
    _consistent(tree, {f"{HELLO}_1.0-1~deb12_all.deb"})
    assert len([e for e in history(tree.settings, "stable") if e.kind == "promote"]) == 1
