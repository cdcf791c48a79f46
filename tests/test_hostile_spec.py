"""Hostile and careless specs, channels.yaml and trees (issue 11): each input is refused at
`spec validate` with the file, line and field, or is a named error with the stage's exit code;
nothing runs, nothing outside the tree is read into a message or written, no traceback."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, git, git_spec, write_spec
from package_fixtures import fake_venv, make_manifest, rpm_distro
from package_fixtures import write_spec as write_package_spec

from giftbox.distros import get_distro, load_distros
from giftbox.errors import PackageError, RepoError, SpecError
from giftbox.manifest import Manifest
from giftbox.package import HostRunner, build_package
from giftbox.repo.channels import load_channels
from giftbox.settings import Settings
from giftbox.spec import load_spec

GOOD = git_spec("demo", "https://opendev.org/openstack/demo.git", "1.0.0")


def problems_of(root: Path, body: str, name: str = "demo") -> list[str]:
    path = write_spec(root, name, body)
    with pytest.raises(SpecError) as info:
        load_spec(path, root, frozenset(load_distros(root / "builders")))
    return [p.render() for p in info.value.problems]


def with_package(extra: str) -> str:
    """GOOD with lines added under ``package:`` (two-space indented)."""
    return GOOD.replace("  prefix: /opt/openstack/demo\n",
                        "  prefix: /opt/openstack/demo\n" + extra)


def no_traceback(result) -> None:
    assert "Traceback" not in result.err and "Traceback" not in result.out, result.err


# --- rpm macro injection ------------------------------------------------------------------


def test_rpm_macro_in_home_is_refused_at_validate(root: Path, giftbox, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    body = with_package("  user: {name: demo, home: '/var/lib/%(touch${IFS}" + str(pwned)
                        + ")'}\n")
    write_spec(root, "demo", body)
    result = giftbox("spec", "validate", "demo")
    assert result.code == 2, result.err
    no_traceback(result)
    assert "specs/demo.yaml:11: package.user.home:" in result.err
    assert "'%'" in result.err and "'$'" in result.err
    assert not pwned.exists()


def _rpm_parts(tmp_path: Path, **changes: object):
    """A valid demo spec for rpm, then ``changes`` forced into its package (as a Spec built
    some other way than validation would be): what the packager alone must refuse/escape."""
    tree = tmp_path / "pkgtree"
    spec = write_package_spec(tree, "demo")
    user = spec.package.user
    assert user is not None
    user_changes = {k: v for k, v in changes.items() if k in ("home", "shell")}
    package_changes = {k: v for k, v in changes.items() if k not in user_changes}
    package = dataclasses.replace(spec.package, user=dataclasses.replace(user, **user_changes),
                                  **package_changes)  # type: ignore[arg-type]
    spec = dataclasses.replace(spec, package=package)
    distro = rpm_distro(tree)
    venv = fake_venv(tmp_path / "venv")
    return spec, distro, venv, make_manifest(spec, distro)


def test_rpmbuild_never_expands_a_macro_from_the_spec(tmp_path: Path) -> None:
    """Defence in depth, with the real rpmbuild: a path with a macro never reaches it, and
    text that does reach it (a shell in %pre, the description) is taken literally."""
    pwned = tmp_path / "pwned"
    macro = "%(touch${IFS}" + str(pwned) + ")"
    spec, distro, venv, manifest = _rpm_parts(tmp_path, home="/var/lib/" + macro)
    with pytest.raises(PackageError, match="package.user.home"):
        build_package(venv, manifest, spec, distro, tmp_path / "out1", runner=HostRunner(),
                      lint=False, check_deps=False)
    assert not pwned.exists()

    spec, distro, venv, manifest = _rpm_parts(tmp_path / "b", shell="/bin/" + macro,
                                              description="Demo %{_bindir} " + macro)
    artifact = build_package(venv, manifest, spec, distro, tmp_path / "out2",
                             runner=HostRunner(), lint=False, check_deps=False)
    assert not pwned.exists()
    scripts = subprocess.run(["rpm", "-qp", "--scripts", str(artifact.path)],
                             capture_output=True, text=True, check=True).stdout
    assert "-s '/bin/%(touch${IFS}" in scripts
    info = subprocess.run(["rpm", "-qp", "--qf", "%{SUMMARY}", str(artifact.path)],
                          capture_output=True, text=True, check=True).stdout
    assert info.startswith("Demo %{_bindir} %(touch${IFS}"), info


# --- maintainer scripts that would delete system directories ------------------------------


@pytest.mark.parametrize(("extra", "field", "says"), [
    ("  user: {name: demo, home: '/var/lib//'}\n", "package.user.home",
     "is /var/lib, a system directory"),
    ("  user: {name: demo, home: /}\n", "package.user.home", "is /, the root directory"),
    ("  user: {name: demo, home: /etc}\n", "package.user.home", "system directory"),
    ("  user: {name: demo, home: /var/lib/../lib}\n", "package.user.home",
     "is /var/lib, a system directory"),
], ids=["var-lib-slashes", "root", "etc", "dotdot"])
def test_home_that_is_a_system_directory_is_refused(root: Path, extra: str, field: str,
                                                     says: str) -> None:
    (problem,) = problems_of(root, with_package(extra))
    assert problem.startswith(f"specs/demo.yaml:11: {field}:"), problem
    assert says in problem


@pytest.mark.parametrize(("prefix", "any_prefix", "says"), [
    ("/usr/lib", False, "system directory"),
    ("/opt", False, "system directory"),
    ("/opt/", False, "is /opt, a system directory"),
    ("/", True, "is /, the root directory"),
    ("/usr/lib/python3", True, "system directory"),
    ("/usr/lib/x86_64-linux-gnu", True, "system directory"),
    ("/etc/demo", True, "is under /etc"),
    ("/usr", True, "system directory"),
])
def test_prefix_that_is_a_system_directory_is_refused(root: Path, giftbox, prefix: str,
                                                       any_prefix: bool, says: str) -> None:
    body = GOOD.replace("  prefix: /opt/openstack/demo\n", f"  prefix: {prefix}\n"
                        + ("  allow_any_prefix: true\n" if any_prefix else ""))
    write_spec(root, "demo", body)
    result = giftbox("spec", "validate", "demo")
    assert result.code == 2, result.err
    no_traceback(result)
    assert "specs/demo.yaml:10: package.prefix:" in result.err and says in result.err


def test_packager_refuses_a_system_prefix_it_is_handed(tmp_path: Path) -> None:
    """A Spec that skipped validation: the packager refuses before staging anything."""
    spec, distro, venv, _ = _rpm_parts(tmp_path)
    spec = dataclasses.replace(spec, package=dataclasses.replace(spec.package, prefix="/usr/lib"))
    debian = get_distro(tmp_path / "pkgtree" / "builders", "debian12")
    with pytest.raises(PackageError, match="package.prefix '/usr/lib'"):
        build_package(venv, make_manifest(spec, debian), spec, debian, tmp_path / "out",
                      lint=False, check_deps=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.docker
def test_deb_remove_and_purge_leave_what_the_package_did_not_create(
        tmp_path: Path, runtime_image: str) -> None:
    """With real dpkg in a clean Debian 12: the home existed before (root's), and a sibling
    of the prefix holds an empty directory and a __pycache__; remove and purge touch neither."""
    tree = tmp_path / "pkgtree"
    spec = write_package_spec(tree, "demo")
    debian = get_distro(tree / "builders", "debian12")
    venv = fake_venv(tmp_path / "venv")
    artifact = build_package(venv, make_manifest(spec, debian), spec, debian, tmp_path / "out",
                             runner=HostRunner(), lint=False, check_deps=False)
    postrm = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(artifact.path)],
                            capture_output=True, check=True).stdout
    assert b"-xdev" in postrm
    script = (
        "set -e\n"
        "mkdir -p /var/lib/demo /opt/openstack/sibling/empty /opt/openstack/sibling/__pycache__\n"
        "echo keep > /var/lib/demo/keep\n"
        "dpkg -i --force-depends /pkg/demo.deb >/dev/null\n"
        "test -x /opt/openstack/demo/bin/demo\n"
        "dpkg --purge --force-depends giftbox-demo >/dev/null\n"
        "test ! -e /opt/openstack/demo\n"
        "test -f /var/lib/demo/keep\n"
        "test -d /opt/openstack/sibling/empty && test -d /opt/openstack/sibling/__pycache__\n"
        "test -d /opt\n"
        "echo OK\n")
    pkg_dir = tmp_path / "pkg"
    pkg_dir.mkdir()
    shutil.copy(artifact.path, pkg_dir / "demo.deb")
    run = subprocess.run(["docker", "run", "--rm", "--network", "none", "-v",
                          f"{pkg_dir}:/pkg:ro", runtime_image, "sh", "-c", script],
                         capture_output=True, text=True, check=False, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("OK"), run.stdout + run.stderr


# --- symlinked folders and files that are not specs ---------------------------------------


def test_spec_symlinked_to_a_secret_is_refused_without_echoing_it(root: Path, giftbox,
                                                                   tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$SECRETHASH:19000:0:99999:7:::\nnova:!:19000::::::\n")
    (root / "specs" / "demo.yaml").symlink_to(secret)
    for args in (("spec", "validate", "demo"), ("spec", "validate", "--all", "--json")):
        result = giftbox(*args)
        assert result.code == 2, result.err
        no_traceback(result)
        assert "SECRETHASH" not in result.err + result.out and "nova:" not in result.err
        assert "outside" in result.err


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
def test_spec_that_is_not_a_regular_file_is_refused_at_once(root: Path, giftbox,
                                                             kind: str) -> None:
    path = root / "specs" / "demo.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        # a link inside the tree would still resolve out of it: put a device-like name in
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    result = giftbox("spec", "validate", "demo")  # a FIFO would block forever if opened
    assert result.code == 2, result.err
    no_traceback(result)
    assert "specs/demo.yaml" in result.err


def test_patch_and_file_folders_symlinked_out_of_the_tree_are_refused(root: Path,
                                                                       tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "0001-x.patch").write_text("--- a/x\n+++ b/x\n")
    (root / "patches" / "demo").symlink_to(outside)
    (root / "files").mkdir()
    (root / "files" / "demo").symlink_to("/etc")
    body = with_package("  config_files: [{path: /etc/demo/demo.conf, source: shadow}]\n")
    body = body.replace("package:\n", "patches: [0001-x.patch]\npackage:\n")
    problems = problems_of(root, body)
    text = "\n".join(problems)
    assert "patches[0]: '0001-x.patch' escapes patches/demo/" in text
    assert "package.config_files[0].source: 'shadow' escapes files/demo/" in text


def test_patches_export_never_writes_through_a_symlinked_folder(root: Path, giftbox,
                                                                tmp_path: Path) -> None:
    from conftest import Upstream
    up = Upstream(tmp_path / "up" / "demo")
    up.tag("1.0.0")
    write_spec(root, "demo", git_spec("demo", up.url, "1.0.0"))
    tree = tmp_path / "work"
    assert giftbox("source", "demo", "--into", str(tree)).code == 0
    (tree / "demo.py").write_text("GREETING = 'hi'\n")
    git(tree, "commit", "-q", "-am", "Say hi")
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "patches" / "demo").symlink_to(outside)
    before = (root / "specs" / "demo.yaml").read_bytes()
    result = giftbox("patches", "export", "demo", "--from", str(tree))
    assert result.code == 4, result.err
    no_traceback(result)
    assert "patches/demo resolves to" in result.err
    assert list(outside.iterdir()) == []
    assert (root / "specs" / "demo.yaml").read_bytes() == before


@pytest.mark.parametrize("content", [b"\xff\xfe0\x000\x000\x001\x00", b"0001-a.patch\n\xc3\x28\n"])
def test_series_file_that_is_not_utf8_is_named(root: Path, content: bytes) -> None:
    (root / "patches" / "demo").mkdir()
    (root / "patches" / "demo" / "series").write_bytes(content)
    (problem,) = problems_of(root, GOOD)
    assert problem.startswith("patches/demo/series: is not UTF-8 text"), problem


# --- wrong acceptance: refused, naming field and line -------------------------------------


@pytest.mark.parametrize(("old", "new", "field", "says"), [
    ("  prefix: /opt/openstack/demo\n",
     "  prefix: /opt/openstack/demo\n  config_files: [{path: /etc/shadow, source: demo.conf}]\n",
     "package.config_files[0].path", "the system's own file"),
    ("  prefix: /opt/openstack/demo\n",
     "  prefix: /opt/openstack/demo\n  config_files: [{path: /etc/passwd, source: demo.conf}]\n",
     "package.config_files[0].path", "the system's own file"),
    ("  prefix: /opt/openstack/demo\n",
     "  prefix: /opt/openstack/demo\n  config_files: [{path: /etc/sudoers.d/demo, "
     "source: demo.conf}]\n", "package.config_files[0].path", "the system's own file"),
    ("  prefix: /opt/openstack/demo\n",
     "  prefix: /opt/openstack/demo\n  config_files: [{path: /etc/, source: demo.conf}]\n",
     "package.config_files[0].path", "a system directory"),
    ("  prefix: /opt/openstack/demo\n",
     "  prefix: /opt/openstack/demo\n  config_files: [{path: /etc/nova/nova.conf, "
     "source: demo.conf}]\n", "package.config_files[0].path", "outside /etc/demo/"),
    ("  prefix: /opt/openstack/demo\n",
     "  prefix: /opt/openstack/demo\n  user: {name: demo}\n  rootwrap: {command: demo-rw, "
     "config: /etc/sudoers, filters_path: /etc/demo/rootwrap.d}\n",
     "package.rootwrap.config", "the system's own file"),
    ("  prefix: /opt/openstack/demo\n",
     "  prefix: /opt/openstack/demo\n  user: {name: root, home: /var/lib/demo}\n",
     "package.user.name", "system account"),
    ("  prefix: /opt/openstack/demo\n",
     "  prefix: /opt/openstack/demo\n  user: {name: demo, group: root, home: /var/lib/demo}\n",
     "package.user.group", "system account"),
    ("  prefix: /opt/openstack/demo\n",
     "  prefix: /opt/openstack/demo\n  description: \"a\\0b\"\n",
     "package.description", "control character \\x00"),
    ("  prefix: /opt/openstack/demo\n",
     "  prefix: /opt/openstack/demo\n  description: \"a\\e[31mred\"\n",
     "package.description", "control character \\x1b"),
    ("    ref: 1.0.0\n", "    ref: \"1.0.0\\u2028\"\n", "upstream.git.ref", "control character"),
    ("package:\n", "requirements: ['foo @ git+ext::sh%20-c%20touch%20x']\npackage:\n",
     "requirements[0]", "direct reference"),
    ("package:\n", "requirements: ['foo @ file:///etc/passwd']\npackage:\n",
     "requirements[0]", "direct reference"),
    ("constraints: constraints/upper-constraints-2026.1.txt",
     "constraints: https://ops:hunter2@127.0.0.1/uc.txt", "constraints", "carries credentials"),
    ("url: https://opendev.org/openstack/demo.git",
     "url: https://ghp_TOKEN123@127.0.0.1/demo.git", "upstream.git.url", "user name"),
    ("  prefix: /opt/openstack/demo\n",
     "  prefix: /opt/openstack/demo\n  allow_any_prefix: !!bool maybe\n",
     "package.allow_any_prefix", "must be true or false"),
    ("  prefix: /opt/openstack/demo\n",
     "  prefix: /opt/openstack/demo\n  release: 0x10\n", "package.release", "decimal digits"),
    ("  prefix: /opt/openstack/demo\n",
     "  prefix: /opt/openstack/demo\n  release: 0b11\n", "package.release", "decimal digits"),
    ("  prefix: /opt/openstack/demo\n",
     "  prefix: /opt/openstack/demo\n  release: 1:20\n", "package.release", "decimal digits"),
    ("  prefix: /opt/openstack/demo\n",
     "  prefix: /opt/openstack/demo\n  release: !!int abc\n", "package.release",
     "decimal digits"),
    ("  prefix: /opt/openstack/demo\n",
     "  prefix: /opt/openstack/demo\n  release: " + "9" * 5000 + "\n", "package.release",
     "longer than"),
    ("  prefix: /opt/openstack/demo\n", "  prefix: /opt/openstack/de%{x}mo\n",
     "package.prefix", "'%'"),
    ("  prefix: /opt/openstack/demo\n", "  prefix: /opt/openstack/de*mo\n",
     "package.prefix", "'*'"),
], ids=lambda v: None if not isinstance(v, str) or len(v) < 40 else "long")
def test_refused_naming_field_and_line(root: Path, old: str, new: str, field: str,
                                       says: str) -> None:
    (root / "files" / "demo").mkdir(parents=True)
    (root / "files" / "demo" / "demo.conf").write_text("[DEFAULT]\n")
    assert old in GOOD
    body = GOOD.replace(old, new)
    key = [text for text in new.splitlines() if text not in old.splitlines()][-1]
    line = next(i for i, text in enumerate(body.splitlines(), 1) if key in text)
    problems = problems_of(root, body)
    mine = [p for p in problems if f" {field}:" in p]
    assert mine, problems
    assert mine[0].startswith(f"specs/demo.yaml:{line}: {field}:"), mine
    assert says in mine[0], mine[0]
    # a credential never reaches the message
    assert "hunter2" not in "\n".join(problems) and "ghp_TOKEN123" not in "\n".join(problems)


def test_pypi_version_of_300_characters_is_refused(root: Path) -> None:
    body = GOOD.replace("  use: git\n", "  use: pypi\n  pypi: {name: demo, version: '1."
                        + "0" * 300 + "', sha256: " + "ab" * 32 + "}\n")
    (problem,) = problems_of(root, body)
    assert "upstream.pypi.version:" in problem and "longer than 64" in problem
    assert len(problem) < 400


# --- tracebacks that are now named errors --------------------------------------------------


@pytest.mark.parametrize(("content", "says"), [
    (GOOD.encode("utf-16"), "it looks like UTF-16"),
    (GOOD.encode() + b"description: caf\xe9\n", "is not UTF-8 text (line 14"),
    (("a: " + "[" * 5000 + "]" * 5000 + "\n").encode(), "nests lists or mappings"),
    (("a:\n" + "".join(" " * i + "b:\n" for i in range(1, 100))).encode(),
     "nests lists or mappings"),
    (GOOD.encode() + b"x: \x00\n", "NUL byte (line 14)"),
], ids=["utf16", "latin1", "deep-flow", "deep-block", "nul"])
def test_unreadable_specs_are_named_errors(root: Path, giftbox, content: bytes,
                                           says: str) -> None:
    (root / "specs" / "demo.yaml").write_bytes(content)
    result = giftbox("spec", "validate", "demo", "--json")
    assert result.code == 2, result.err
    no_traceback(result)
    assert says in result.err
    report, _end = json.JSONDecoder().raw_decode(result.out)  # then the error's own JSON
    assert report["ok"] is False


# --- channels.yaml ------------------------------------------------------------------------


CHANNELS = """\
channels:
  nightly:
    key: giftbox-nightly@giftbox.invalid
    keep: 3
    distros: [debian12]
"""


@pytest.mark.parametrize(("body", "says"), [
    (CHANNELS + "  nightly:\n    distros: [debian12]\n", "'nightly' appears twice"),
    (CHANNELS.replace("    keep: 3\n", "    keep: 3\n    keep: 4\n"), "'keep' appears twice"),
    (CHANNELS.replace("key: giftbox-nightly@giftbox.invalid", "key: --list-secret-keys"),
     "is not a key fingerprint or an email"),
    (CHANNELS.replace("key: giftbox-nightly@giftbox.invalid", "key: '-'"),
     "is not a key fingerprint"),
    (CHANNELS + "    arches: []\n", "non-empty list of architectures"),
    (CHANNELS + "    arches: 5\n", "non-empty list of architectures"),
    (CHANNELS.replace("[debian12]", "[[x]]"), "expected a list of distro names"),
    (CHANNELS + "    key_file: 5\n", "key_file: expected a string"),
    (CHANNELS + "    description: \"\\0\"\n", "control character"),
    ("channels:\n  nightly: " + "[" * 5000 + "]" * 5000 + "\n", "nests"),
    (CHANNELS.replace("keep: 3", "keep: " + "9" * 5000), "a value cannot be read"),
    (CHANNELS.replace("keep: 3", "keep: 2001-01-01 99:99:99"), "a value cannot be read"),
], ids=["dup-channel", "dup-keep", "key-option", "key-dash", "arches-empty", "arches-int",
        "distros-nested", "key-file-int", "description-nul", "deep", "int-5000-digits",
        "bad-timestamp"])
def test_channels_yaml_refusals(root: Path, cache: Path, body: str, says: str) -> None:
    (root / "channels.yaml").write_text(body)
    settings = Settings.resolve(root=root, env=dict(os.environ, GIFTBOX_CACHE=str(cache)))
    with pytest.raises(RepoError) as info:
        load_channels(settings)
    assert says in info.value.render(), info.value.render()


def test_channels_yaml_not_utf8_is_a_repository_error(root: Path, giftbox) -> None:
    (root / "channels.yaml").write_bytes(CHANNELS.encode("utf-16"))
    result = giftbox("channel", "show", "nightly")
    assert result.code == 8, result.err
    no_traceback(result)
    assert "channels.yaml" in result.err and "UTF-16" in result.err


@pytest.mark.parametrize("value", ["-5", "nan", "inf"])
def test_prune_min_age_must_be_a_whole_number_of_seconds(root: Path, giftbox,
                                                         value: str) -> None:
    shutil.copy(REPO / "channels.yaml", root / "channels.yaml")
    result = giftbox("prune", "nightly", "--gc", "--min-age", value, "--dry-run")
    assert result.code == 2, result.err
    no_traceback(result)
    assert "--min-age" in result.err


# --- a manifest that is not one ------------------------------------------------------------


@pytest.mark.parametrize(("text", "says"), [
    ("{not json", "is not a giftbox manifest"),
    ('{"project": "demo"}', "is not a giftbox manifest (misses field"),
    ("[1, 2]", "not a JSON object"),
    ("[" * 5000, "is not a giftbox manifest"),
], ids=["bad-json", "missing-fields", "not-object", "deep"])
def test_bad_manifest_is_a_package_error(root: Path, giftbox, tmp_path: Path, text: str,
                                         says: str) -> None:
    venv = fake_venv(tmp_path / "venv")
    (venv / "giftbox-manifest.json").write_text(text)
    with pytest.raises(PackageError, match="manifest"):
        Manifest.read(venv / "giftbox-manifest.json")
    result = giftbox("package", str(venv), "--manifest", str(venv / "giftbox-manifest.json"),
                     "--out", str(tmp_path / "out"))
    assert result.code == 7, result.err
    no_traceback(result)
    assert says in result.err


def test_shipped_tree_still_validates() -> None:
    result = subprocess.run([sys.executable, "-m", "giftbox", "spec", "validate", "--all"],
                            cwd=REPO, env=dict(os.environ, GIFTBOX_ROOT=str(REPO)),
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.err if hasattr(result, "err") else result.stderr
    settings = Settings.resolve(root=REPO)
    assert set(load_channels(settings)) >= {"nightly", "staging", "stable"}


def test_promotion_and_release_readers_never_open_a_fifo_or_a_secret_spec(tmp_path: Path) -> None:
    """promote and the release gates read specs unvalidated (a spec may have changed since
    the build), but with the validator's file rules: a FIFO would block them for ever, and a
    symlink out of the tree must not be read at all."""
    import os as _os

    from giftbox.spec import raw_spec

    root = tmp_path / "tree"
    (root / "specs").mkdir(parents=True)
    _os.mkfifo(root / "specs" / "fifo.yaml")
    secret = tmp_path / "secret.yaml"
    secret.write_text("release: '2026.1'\npackage: {name: leaked}\n")
    (root / "specs" / "linked.yaml").symlink_to(secret)
    (root / "specs" / "good.yaml").write_text("release: '2026.1'\npackage: {name: giftbox-good}\n")
    (root / "specs" / "deep.yaml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert raw_spec(root, "fifo") is None
    assert raw_spec(root, "linked") is None
    assert raw_spec(root, "deep") is None
    assert raw_spec(root, "missing") is None
    assert raw_spec(root, "good") == {"release": "2026.1", "package": {"name": "giftbox-good"}}


# PyYAML's safe constructors raise KeyError, AttributeError or ValueError (not YAMLError) for
# a tag they cannot build: every reader of a tree file turns that into its own error.
BAD_TAGS = ["!!bool maybe", "!!timestamp x", "!!int x", "!!float ."]


@pytest.mark.parametrize("tag", BAD_TAGS)
def test_a_tag_yaml_cannot_build_is_a_named_error_in_every_reader(tmp_path: Path,
                                                                  tag: str) -> None:
    from giftbox.spec import raw_spec
    from giftbox.workflow.specedit import scalar_text

    (tmp_path / "channels.yaml").write_text(
        f"channels:\n  nightly:\n    x: {tag}\n    key: k@giftbox.invalid\n    keep: 3\n"
        "    distros: [debian12]\n")
    with pytest.raises(RepoError, match="channels.yaml: a value cannot be read"):
        load_channels(Settings.resolve(root=tmp_path, env={"HOME": str(tmp_path)}))

    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "x.yaml").write_text(f"name: x\nversion: {tag}\n")
    assert raw_spec(tmp_path, "x") is None

    builder = tmp_path / "builders" / "x"
    builder.mkdir(parents=True)
    (builder / "builder.yaml").write_text(f"name: x\nversion: {tag}\n")
    with pytest.raises(SpecError) as info:
        load_distros(tmp_path / "builders")
    assert "builders/x/builder.yaml: not valid YAML" in info.value.render()

    assert scalar_text(tag) == f'"{tag}"'  # spec set: written quoted, as the string it is


@pytest.mark.parametrize("value", ['"fast"', "true", "1.5", "[1]"])
def test_a_compression_level_that_is_not_a_number_is_named(tmp_path: Path, value: str) -> None:
    builders = tmp_path / "builders"
    shutil.copytree(Path(__file__).resolve().parent.parent / "builders" / "debian12",
                    builders / "debian12")
    path = builders / "debian12" / "builder.yaml"
    text = path.read_text()
    assert "\ncompression_level: 1\n" in text
    path.write_text(text.replace("\ncompression_level: 1\n", f"\ncompression_level: {value}\n"))
    with pytest.raises(SpecError) as caught:
        get_distro(builders, "debian12")
    problem = caught.value.problems[0]
    assert (problem.file, problem.field) == ("builders/debian12/builder.yaml", "compression_level")
    assert "not a whole number" in problem.message
