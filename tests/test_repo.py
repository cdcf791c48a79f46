"""The repository layer, told as the operator's story: publish, then real clients install.

apt runs in a clean Debian 12 container against the channel served over HTTP on loopback;
dnf reads the yum repositories from an install root of its own. Killed and concurrent
publishers are real processes. Docker tests are marked and fail (never skip) without an engine.
"""

# Fixtures are imported from tests/repo_fixtures.py (the lead owns conftest.py), so pytest
# parameters shadow the imported names by design.
# ruff: noqa: F811

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import time
from pathlib import Path

import pytest
from plumbum import local

from giftbox.errors import RepoError
from giftbox.repo import Pool, channel_state, get_channel, publish, publish_objects
from tests.repo_fixtures import (
    Tree,
    apt_client,
    apt_image,  # noqa: F401  (fixture)
    bare_tree,  # noqa: F401  (fixture)
    dnf_repoquery,
    giftbox_cli,
    http_server,
    keyring_template,  # noqa: F401  (fixture)
    make_deb,
    make_rpm,
    need,
    tree,  # noqa: F401  (fixture)
)

INSTALL_AND_RUN = """
apt-get update
apt-get install -y --no-install-recommends giftbox-hello
giftbox-hello
"""


# --- helpers ------------------------------------------------------------------------------


def _keyring(tmp: Path, armored: Path) -> Path:
    """A binary keyring for gpgv from the exported armored public key."""
    out = tmp / f"{armored.stem}.gpg"
    if not out.exists():
        home = tmp / "gpgv-home"
        home.mkdir(mode=0o700, exist_ok=True)
        local["gpg"]["--homedir", str(home), "--batch", "--yes", "--output", str(out),
                     "--dearmor", str(armored)].run()
    return out


def _gpgv(keyring: Path, *files: Path) -> int:
    return int(local[need("gpgv")]["--keyring", str(keyring), *map(str, files)]
               .run(retcode=None)[0])


def _release_sha256(release: str) -> dict[str, str]:
    section = release.split("SHA256:\n", 1)[1]
    entries = {}
    for line in section.splitlines():
        if not line.startswith(" "):
            break
        digest, _size, name = line.split()
        entries[name] = digest
    return entries


def assert_apt_suite_good(tree: Tree, tmp: Path, channel: str = "nightly",
                          codename: str = "bookworm") -> str:
    """The live suite is whole: signatures verify and every index matches its Release,
    by name and by hash. Returns the Release text."""
    dists = tree.repos / channel / "apt" / "dists" / codename
    keyring = _keyring(tmp, tree.repos / channel / f"giftbox-{channel}.asc")
    assert _gpgv(keyring, dists / "InRelease") == 0, "InRelease does not verify"
    assert _gpgv(keyring, dists / "Release.gpg", dists / "Release") == 0
    release = (dists / "Release").read_text()
    assert "Acquire-By-Hash: yes" in release
    assert "MD5Sum:" in release
    for name, digest in _release_sha256(release).items():
        plain = dists / name
        assert hashlib.sha256(plain.read_bytes()).hexdigest() == digest, name
        by_hash = plain.parent / "by-hash" / "SHA256" / digest
        assert hashlib.sha256(by_hash.read_bytes()).hexdigest() == digest, name
    return release


def assert_yum_repo_good(tree: Tree, tmp: Path, distro: str = "rocky9",
                         arch: str = "x86_64", channel: str = "nightly") -> None:
    repodata = tree.repos / channel / "yum" / distro / arch / "repodata"
    keyring = _keyring(tmp, tree.repos / channel / f"giftbox-{channel}.asc")
    assert _gpgv(keyring, repodata / "repomd.xml.asc", repodata / "repomd.xml") == 0
    for href in re.findall(r'<location href="repodata/([^"]+)"', (repodata / "repomd.xml")
                           .read_text()):
        assert (repodata / href).is_file(), href


def _packages(tree: Tree, channel: str = "nightly", arch: str = "amd64") -> str:
    return (tree.repos / channel / "apt" / "dists" / "bookworm" / "main" / f"binary-{arch}"
            / "Packages").read_text()


# --- channels and keys --------------------------------------------------------------------


def test_unknown_channel_names_the_known_ones(tree: Tree, tmp_path: Path) -> None:
    deb = make_deb(tmp_path)
    with pytest.raises(RepoError) as err:
        publish("nigthly", [deb], tree.settings)
    text = err.value.render()
    assert "unknown channel 'nigthly'" in text
    assert "did you mean 'nightly'" in text and "stable" in text
    assert not (tree.repos / "nigthly").exists()


def test_channels_load_into_frozen_values(tree: Tree) -> None:
    ch = get_channel(tree.settings, "nightly")
    assert [d.name for d in ch.distros] == ["debian12", "rocky9"]
    assert [(t.codename, t.arches) for t in ch.apt_targets] == [("bookworm",
                                                                 ("amd64", "ppc64el"))]
    assert [t.path for t in ch.yum_targets] == ["rocky9/x86_64", "rocky9/ppc64le"]
    with pytest.raises(AttributeError):
        ch.keep = 1  # type: ignore[misc]


def test_the_project_channels_yaml_loads(tmp_path: Path) -> None:
    from giftbox.repo import load_channels
    from giftbox.settings import Settings
    from tests.repo_fixtures import REPO_ROOT

    settings = Settings.resolve(root=REPO_ROOT, env={"GIFTBOX_STATE": str(tmp_path)})
    channels = load_channels(settings)
    assert {"nightly", "staging", "stable"} <= set(channels)


def test_missing_key_says_how_to_make_one(bare_tree: Tree, tmp_path: Path) -> None:
    deb = make_deb(tmp_path)
    with pytest.raises(RepoError) as err:
        publish("nightly", [deb], bare_tree.settings)
    assert "giftbox keys init --channel nightly" in err.value.render()
    assert "--import" in err.value.render()
    assert not (bare_tree.repos / "nightly" / "state.json").exists()


@pytest.mark.slow
def test_expired_key_is_refused_with_the_fix(bare_tree: Tree, tmp_path: Path) -> None:
    from giftbox.keys import init_key

    key, _ = init_key(bare_tree.settings, "giftbox-nightly@giftbox.invalid",
                      algorithm="ed25519")
    # Shortened only once made: a key born with a 1 s expiry can expire before init_key
    # lists it on a loaded machine.
    subprocess.run(["gpg", "--homedir", str(bare_tree.settings.state_dir / "gnupg"),
                    "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                    "--quick-set-expire", key.fingerprint, "seconds=1"],
                   check=True, capture_output=True)
    time.sleep(2.1)
    with pytest.raises(RepoError) as err:
        publish("nightly", [make_deb(tmp_path)], bare_tree.settings)
    assert "expired" in err.value.message
    assert "--quick-set-expire" in (err.value.hint or "")


@pytest.mark.slow
def test_keys_init_prints_fingerprint_and_keeps_secrets_out_of_repos(bare_tree: Tree,
                                                                     tmp_path: Path) -> None:
    out = giftbox_cli(bare_tree, "keys", "init", "--channel", "nightly", "--algo", "ed25519",
                      "--json")()
    keys = json.loads(out)["keys"]
    assert keys[0]["channel"] == "nightly" and keys[0]["created"]
    fpr = keys[0]["fingerprint"]
    assert re.fullmatch(r"[0-9A-F]{40}", fpr)
    again = json.loads(giftbox_cli(bare_tree, "keys", "init", "--channel", "nightly",
                                   "--json")())["keys"][0]
    assert again["fingerprint"] == fpr and not again["created"]
    assert (bare_tree.settings.state_dir / "gnupg").is_dir()
    giftbox_cli(bare_tree, "publish", "nightly", str(make_deb(tmp_path)))()
    for path in bare_tree.repos.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert b"PRIVATE KEY" not in path.read_bytes(), path
    assert not list(bare_tree.repos.rglob("private-keys*"))


# --- publishing ---------------------------------------------------------------------------


def test_publish_pools_links_indexes_and_signs(tree: Tree, tmp_path: Path) -> None:
    deb = make_deb(tmp_path)
    result = publish("nightly", [deb], tree.settings)
    assert [e.filename for e in result.added] == ["giftbox-hello_1.0-1~deb12_all.deb"]
    entry = result.added[0]
    assert entry.distro == "debian12" and entry.arch == "all"

    # One copy of the bytes, in the pool; the channel holds a hard link to it.
    digest = hashlib.sha256(deb.read_bytes()).hexdigest()
    pooled = tree.repos / ".pool" / digest[:2] / digest / entry.filename
    linked = tree.repos / "nightly" / "apt" / "pool" / "main" / "g" / "giftbox-hello" / \
        entry.filename
    assert os.path.samefile(pooled, linked)

    state = json.loads((tree.repos / "nightly" / "state.json").read_text())
    assert [e["digest"] for e in state["entries"]] == [digest]
    assert state["pending"] == [] and state["key"] == result.key

    release = assert_apt_suite_good(tree, tmp_path)
    assert "Codename: bookworm" in release and "Suite: nightly" in release
    for arch in ("amd64", "ppc64el"):  # Architecture: all is listed for every arch
        assert f"SHA256: {digest}" in _packages(tree, arch=arch)
    for name in ("Packages.gz", "Packages.xz"):
        assert (tree.repos / "nightly/apt/dists/bookworm/main/binary-amd64" / name).is_file()
    # Every served distro gets signed (if empty) metadata, so clients never see a 404.
    assert_yum_repo_good(tree, tmp_path)
    assert "PUBLIC KEY" in (tree.repos / "nightly" / "giftbox-nightly.asc").read_text()


def test_republishing_the_same_file_changes_nothing(tree: Tree, tmp_path: Path) -> None:
    deb = make_deb(tmp_path)
    publish("nightly", [deb], tree.settings)
    live = os.readlink(tree.repos / "nightly/apt/dists/bookworm")
    again = publish("nightly", [deb], tree.settings)
    assert again.added == () and len(again.unchanged) == 1 and again.repositories == ()
    assert os.readlink(tree.repos / "nightly/apt/dists/bookworm") == live


def test_same_filename_with_other_bytes_is_refused(tree: Tree, tmp_path: Path) -> None:
    publish("nightly", [make_deb(tmp_path / "a", message="first")], tree.settings)
    before = (tree.repos / "nightly" / "state.json").read_bytes()
    other = make_deb(tmp_path / "b", message="second build, same version")
    with pytest.raises(RepoError) as err:
        publish("nightly", [other], tree.settings)
    assert "different bytes" in err.value.message
    assert "bump the package release" in (err.value.hint or "")
    assert (tree.repos / "nightly" / "state.json").read_bytes() == before
    # ... in every channel, since promotion moves filenames between them.
    with pytest.raises(RepoError):
        publish("stable", [other], tree.settings)


def test_version_tag_picks_the_distro(tree: Tree, tmp_path: Path) -> None:
    untagged = make_deb(tmp_path, version="2.0-1")
    with pytest.raises(RepoError) as err:
        publish("nightly", [untagged], tree.settings)
    assert "--distro" in (err.value.hint or "") and "deb12" in (err.value.hint or "")
    assert publish("nightly", [untagged], tree.settings,
                   distro="debian12").added[0].distro == "debian12"
    with pytest.raises(RepoError) as err:
        publish("nightly", [make_deb(tmp_path, version="3.0-1~deb11")], tree.settings,
                distro="debian12")
    with pytest.raises(RepoError):  # arch the distro is not served for
        publish("nightly", [make_deb(tmp_path, version="4.0-1~deb12", arch="arm64")],
                tree.settings)


def test_promotion_primitive_links_the_same_object(tree: Tree, tmp_path: Path) -> None:
    entry = publish("nightly", [make_deb(tmp_path)], tree.settings).added[0]
    promoted = publish_objects("stable", [entry.digest], tree.settings).added[0]
    assert promoted.digest == entry.digest
    assert os.path.samefile(tree.repos / "nightly" / promoted.paths[0],
                            tree.repos / "stable" / promoted.paths[0])
    assert Pool(tree.repos).load(entry.digest).filename == entry.filename
    assert channel_state(tree.settings, "stable").entries[entry.filename].digest == entry.digest
    assert_apt_suite_good(tree, tmp_path, channel="stable")


def test_previous_indexes_stay_reachable_by_hash(tree: Tree, tmp_path: Path) -> None:
    """A client that read the old InRelease just before a publish still gets every index."""
    publish("nightly", [make_deb(tmp_path, version="1.0-1~deb12")], tree.settings)
    old_release = (tree.repos / "nightly/apt/dists/bookworm/Release").read_text()
    for n in (2, 3, 4):
        publish("nightly", [make_deb(tmp_path, version=f"1.{n}-1~deb12")], tree.settings)
        dists = tree.repos / "nightly/apt/dists/bookworm"
        for name, digest in _release_sha256(old_release).items():
            by_hash = dists / Path(name).parent / "by-hash" / "SHA256" / digest
            assert hashlib.sha256(by_hash.read_bytes()).hexdigest() == digest
        old_release = (dists / "Release").read_text()
    gens = list((tree.repos / "nightly/apt/.gen/bookworm").iterdir())
    assert len(gens) == 2, "only the live and the previous generation are kept"
    assert_apt_suite_good(tree, tmp_path)


def test_concurrent_publishers_both_land(tree: Tree, tmp_path: Path) -> None:
    publish("nightly", [make_deb(tmp_path)], tree.settings)
    debs = [make_deb(tmp_path, name=f"giftbox-racer{i}", version="1.0-1~deb12")
            for i in range(4)]
    procs = [giftbox_cli(tree, "publish", "nightly", str(d)).popen() for d in debs]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    packages = _packages(tree)
    for i in range(4):
        assert f"Package: giftbox-racer{i}\n" in packages
    assert len(channel_state(tree.settings, "nightly").entries) == 5
    assert_apt_suite_good(tree, tmp_path)


def test_dnf_reads_the_signed_yum_repository(tree: Tree, tmp_path: Path) -> None:
    rpm = make_rpm(tmp_path)
    result = publish("nightly", [rpm], tree.settings)
    assert result.added[0].distro == "rocky9"
    assert {"yum/rocky9/ppc64le", "yum/rocky9/x86_64"} <= set(result.repositories)
    assert_yum_repo_good(tree, tmp_path)
    repo = tree.repos / "nightly" / "yum" / "rocky9" / "x86_64"
    key = tree.repos / "nightly" / "giftbox-nightly.asc"
    code, out = dnf_repoquery(tmp_path / "ok", f"file://{repo}", key, "giftbox-hello")
    assert code == 0, out
    assert "giftbox-hello-0:1.0-1.el9.noarch" in out

    # A second rpm: createrepo_c reuses the previous generation's metadata.
    again = publish("nightly", [make_rpm(tmp_path, version="1.1")], tree.settings)
    assert sorted(again.repositories) == ["yum/rocky9/ppc64le", "yum/rocky9/x86_64"]
    code, out = dnf_repoquery(tmp_path / "ok2", f"file://{repo}", key, "giftbox-hello")
    assert code == 0 and "1.1-1.el9" in out and "1.0-1.el9" in out, out

    # Tampered metadata: dnf refuses the repository.
    repomd = repo / "repodata" / "repomd.xml"
    repomd.write_text(repomd.read_text().replace("<revision>", "<revision>1"))
    code, out = dnf_repoquery(tmp_path / "bad", f"file://{repo}", key, "giftbox-hello")
    assert code != 0 or "giftbox-hello" not in out.split("Importing", 1)[0], out


def test_cli_publish_and_channel_show(tree: Tree, tmp_path: Path) -> None:
    deb = make_deb(tmp_path)
    out = json.loads(giftbox_cli(tree, "publish", "nightly", str(deb), "--json")())
    assert out["added"][0]["filename"] == "giftbox-hello_1.0-1~deb12_all.deb"
    shown = json.loads(giftbox_cli(tree, "channel", "show", "nightly", "--json")())
    assert [(e["name"], e["version"], e["arch"], e["distro"]) for e in shown["entries"]] == \
        [("giftbox-hello", "1.0-1~deb12", "all", "debian12")]
    assert shown["entries"][0]["digest"] == hashlib.sha256(deb.read_bytes()).hexdigest()
    table = giftbox_cli(tree, "channel", "show", "nightly")()
    assert "giftbox-hello" in table and "debian12" in table
    code, _, err = giftbox_cli(tree, "channel", "show", "nope").run(retcode=None)
    assert code == 8 and "known channels: nightly, stable" in err


# --- real apt clients ---------------------------------------------------------------------


@pytest.mark.docker
def test_apt_installs_and_runs_from_the_channel(tree: Tree, tmp_path: Path,
                                                apt_image: str) -> None:
    publish("nightly", [make_deb(tmp_path, message="hello from the nightly channel")],
            tree.settings)
    with http_server(tree.repos) as url:
        code, out = apt_client(apt_image, f"{url}/nightly/apt",
                               tree.repos / "nightly" / "giftbox-nightly.asc", INSTALL_AND_RUN)
    assert code == 0, out
    assert "hello from the nightly channel" in out
    assert "Hash Sum mismatch" not in out


@pytest.mark.docker
def test_apt_refuses_a_tampered_release(tree: Tree, tmp_path: Path,
                                        apt_image: str) -> None:
    publish("nightly", [make_deb(tmp_path)], tree.settings)
    dists = tree.repos / "nightly" / "apt" / "dists" / "bookworm"
    key = tree.repos / "nightly" / "giftbox-nightly.asc"
    # Tamper inside the clear-signed InRelease (and Release): a hash line changed.
    for name in ("InRelease", "Release"):
        text = (dists / name).read_text()
        (dists / name).write_text(re.sub(r"(?m)^ [0-9a-f]{64}", " " + "0" * 64, text, count=1))
    with http_server(tree.repos) as url:
        code, out = apt_client(apt_image, f"{url}/nightly/apt", key,
                               "apt-get update -o APT::Update::Error-Mode=any")
        assert code != 0, out
        assert re.search(r"BADSIG|signatures were invalid|is not signed", out), out
        # Without InRelease, apt falls back to Release + Release.gpg: tampered, refused too.
        (dists / "InRelease").unlink()
        code, out = apt_client(apt_image, f"{url}/nightly/apt", key,
                               "apt-get update -o APT::Update::Error-Mode=any")
        assert code != 0, out
        assert re.search(r"BADSIG|signatures were invalid|is not signed", out), out


@pytest.mark.docker
def test_sigkill_at_any_point_leaves_the_last_good_state(tree: Tree, tmp_path: Path,
                                                         apt_image: str) -> None:
    publish("nightly", [make_deb(tmp_path)], tree.settings)
    # A few dozen packages so metadata generation takes a measurable share of a publish.
    publish("nightly", [make_deb(tmp_path, name=f"giftbox-filler{i}") for i in range(30)],
            tree.settings)
    debs = [make_deb(tmp_path, name="giftbox-kill", version=f"1.{i}-1~deb12")
            for i in range(12)]
    start = time.monotonic()
    giftbox_cli(tree, "publish", "nightly", str(debs[0]))()
    whole = time.monotonic() - start
    rng = random.Random(20240601)
    killed = 0
    for deb in debs[1:]:
        proc = giftbox_cli(tree, "publish", "nightly", str(deb)).popen()
        time.sleep(rng.uniform(0.0, whole * 1.1))
        proc.kill()
        proc.communicate()
        killed += proc.returncode == -9
        # Whatever the moment, what a client can see is whole and signed.
        assert_apt_suite_good(tree, tmp_path)
        assert_yum_repo_good(tree, tmp_path)
        json.loads((tree.repos / "nightly" / "state.json").read_text())
    assert killed >= 5, f"only {killed} of {len(debs) - 1} publishes were killed mid-way"

    # The next publish finishes or discards what the killed ones left.
    final = publish("nightly", [make_deb(tmp_path, name="giftbox-after")], tree.settings)
    assert final.added
    assert channel_state(tree.settings, "nightly").pending == []
    assert len(list((tree.repos / "nightly/apt/.gen/bookworm").iterdir())) <= 2
    assert not list((tree.repos / "nightly/apt/dists").glob(".*.tmp"))
    assert_apt_suite_good(tree, tmp_path)

    with http_server(tree.repos) as url:
        code, out = apt_client(apt_image, f"{url}/nightly/apt",
                               tree.repos / "nightly" / "giftbox-nightly.asc",
                               INSTALL_AND_RUN + "apt-get install -y giftbox-after\n")
    assert code == 0, out
    assert "hello from giftbox" in out
