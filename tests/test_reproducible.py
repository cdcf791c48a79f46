"""Bit-reproducible from scratch: the same inputs built twice under varied conditions.

The second build varies what reprotest varies, applied by the test itself (reprotest wants
to run the whole build as one shell command in a tree it copies, and the build's real work
happens in the Docker engine, which none of its variations reach): another build path (the
tree copied deeper under another name), an empty cache of its own, another umask, time zone,
locale, HOME, a wall clock three days later (``faketime``; SOURCE_DATE_EPOCH is untouched:
it comes from the upstream commit) and one CPU (``taskset``). The user is root in both (the
Docker socket is root's). Both sides package the .deb through ``giftbox build`` and an .rpm
(Rocky 9 on its python3.11 stack, as tests/test_package.py does) from the same venv; the
bytes must be equal, and the tree must hold nothing that describes the build process.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, git_spec, write_spec
from test_build import demo_upstream

from giftbox import records
from giftbox.build import timestamp_pycs
from giftbox.settings import Settings

pytestmark = pytest.mark.docker

# One side: lock (only when asked, as a packager does once and commits), then giftbox's own
# build + package for debian12, then an .rpm of the same venv. Prints what it made as JSON.
DRIVER = r"""
import dataclasses, json, sys
from pathlib import Path

from giftbox import build as build_stage
from giftbox.distros import Arch, get_distro
from giftbox.package import HostRunner, build_package
from giftbox.pipeline import run_target
from giftbox.settings import Settings
from giftbox.spec import load_spec

root = Path(sys.argv[1])
settings = Settings.resolve(root=root)
spec = load_spec(root / "specs" / "demo-ext.yaml", root)
debian = get_distro(root / "builders", "debian12")
if sys.argv[2] == "lock":
    build_stage.make_lock(spec, debian, Arch.x86_64, settings)
    raise SystemExit(0)
target = run_target(spec, debian, Arch.x86_64, settings)
rocky = dataclasses.replace(get_distro(root / "builders", "rocky9"), python="3.11")
m = target.build.manifest
version = {k: v for k, v in m.version.items() if k != "rpm"}
rpm_manifest = dataclasses.replace(m, distro="rocky9", family="rpm", version=version,
                                   depends=tuple(spec.package.depends.get("rpm", ())))
rpm = build_package(target.build.venv_dir, rpm_manifest, spec, rocky,
                    target.build.directory / "rpm", runner=HostRunner(), check_deps=False,
                    lint=False)
print(json.dumps({"deb": str(target.package.path), "deb_sha256": target.package.sha256,
                  "rpm": str(rpm.path), "rpm_sha256": rpm.sha256,
                  "venv": str(target.build.venv_dir), "build": str(target.build.directory)}))
"""


def _tree(path: Path, url: str) -> Path:
    (path / "specs").mkdir(parents=True)
    (path / "patches").mkdir()
    shutil.copytree(REPO / "builders", path / "builders")
    shutil.copytree(REPO / "constraints", path / "constraints")
    write_spec(path, "demo-ext", git_spec("demo-ext", url, "1.0.0"))
    return path


def _side(tree: Path, cache: Path, step: str, *, wrap: tuple[str, ...] = (),
          env: dict[str, str] | None = None, umask: int = 0o022) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if k not in ("GIFTBOX_ROOT", "TZ", "LANG")}
    full.update(GIFTBOX_CACHE=str(cache), **(env or {}))
    proc = subprocess.run([*wrap, sys.executable, "-c", DRIVER, str(tree), step], env=full,
                          cwd=tree, umask=umask, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.splitlines()[-1]) if step == "build" else {}


def _diffoscope(a: str, b: str) -> str:
    proc = subprocess.run(["diffoscope", "--text", "-", "--max-text-report-size", "20000",
                           a, b], capture_output=True, text=True, check=False, timeout=600)
    return proc.stdout[-8000:]


def _record_problems(venv: Path) -> list[str]:
    """Entries of every RECORD that name a missing file or carry a wrong hash or size."""
    problems = []
    for record in sorted(venv.glob("lib/python*/site-packages/*.dist-info/RECORD")):
        site = record.parent.parent
        for row in csv.reader(record.read_text().splitlines()):
            if not row:
                continue
            target = Path(os.path.normpath(site / row[0]))
            if not target.is_file():
                problems.append(f"{record.parent.name}: {row[0]} is not in the tree")
            elif row[1]:
                data = target.read_bytes()
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
                if row[1] != "sha256=" + digest.decode() or row[2] != str(len(data)):
                    problems.append(f"{record.parent.name}: {row[0]} hash/size differ")
    return problems


CHANNELS = """\
channels:
  nightly:
    key: giftbox-nightly@giftbox.invalid
    keep: 3
    distros: [debian12]
  proven:
    key: giftbox-proven@giftbox.invalid
    keep: 3
    distros: [debian12]
    requires: [reproducible]
"""


@dataclass(frozen=True)
class SideA:
    tree: Path
    cache: Path
    built: dict[str, str]


@pytest.fixture(scope="module")
def side_a(tmp_path_factory: pytest.TempPathFactory) -> SideA:
    """The reference build: lock (committed), build, package, under ordinary conditions."""
    base = tmp_path_factory.mktemp("repro")
    demo = demo_upstream(base / "upstream" / "demo-ext")
    tree, cache = _tree(base / "a" / "tree", demo.url), base / "a" / "cache"
    _side(tree, cache, "lock")
    built = _side(tree, cache, "build", env={"TZ": "UTC", "LC_ALL": "POSIX"}, umask=0o022)
    return SideA(tree, cache, built)


def test_two_from_scratch_builds_under_varied_conditions_are_identical(
        tmp_path: Path, side_a: SideA) -> None:
    tree_b = tmp_path / "elsewhere" / "much" / "deeper" / "giftbox-checkout"
    shutil.copytree(side_a.tree, tree_b, ignore=shutil.ignore_patterns("build", ".giftbox"))
    (tmp_path / "home-b").mkdir()
    wrap: tuple[str, ...] = ("taskset", "-c", "0")
    if shutil.which("faketime"):
        wrap = ("faketime", "-f", "+3d", *wrap)
    b = _side(tree_b, tmp_path / "b-cache", "build", wrap=wrap, umask=0o002,
              env={"TZ": "Pacific/Kiritimati", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8",
                   "HOME": str(tmp_path / "home-b")})
    a = side_a.built

    assert a["build"] != b["build"]  # really two builds, in two trees
    for kind in ("deb", "rpm"):
        assert a[f"{kind}_sha256"] == b[f"{kind}_sha256"], (
            f"the two {kind}s differ:\n" + _diffoscope(a[kind], b[kind]))

    # Nothing describing the build process stays in the tree; RECORD is true to it.
    venv = Path(a["venv"])
    assert not list(venv.rglob("uv_cache.json"))
    assert not list(venv.rglob("direct_url.json"))
    assert timestamp_pycs(venv) == []
    assert list(venv.rglob("_distutils_hack/__pycache__/*.pyc"))  # compiled, hash-based
    assert _record_problems(venv) == []
    for path in (venv / "bin").iterdir():
        if path.is_file() and not path.is_symlink():
            assert b"/giftbox-" not in path.read_bytes(), path


# --- giftbox rebuild --check --------------------------------------------------------------


def _cli(side: SideA, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GIFTBOX_ROOT=str(side.tree), GIFTBOX_CACHE=str(side.cache))
    env.pop("GIFTBOX_DATABASE", None)
    return subprocess.run([sys.executable, "-m", "giftbox", *args], cwd=side.tree, env=env,
                          capture_output=True, text=True, check=False, timeout=1800)


def _repack(deb: Path, out: Path, edit: Callable[[Path], None]) -> Path:
    """``deb`` unpacked, its venv edited, packed again the way giftbox packs (DEBIAN/md5sums
    brought up to date, as a careful tamperer would: diffoscope trusts it to skip members)."""
    root = out.with_suffix(".d")
    subprocess.run(["dpkg-deb", "-R", str(deb), str(root)], check=True)
    edit(root / "opt" / "openstack" / "demo-ext")
    sums = root / "DEBIAN" / "md5sums"
    sums.write_text("".join(
        f"{hashlib.md5((root / rel).read_bytes()).hexdigest()}  {rel}\n"  # noqa: S324
        for rel in (line.split("  ", 1)[1] for line in sums.read_text().splitlines())))
    manifest = json.loads((root / "opt/openstack/demo-ext/giftbox-manifest.json").read_text())
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zzstd", "--build", str(root), str(out)],
                   check=True, capture_output=True,
                   env=dict(os.environ, SOURCE_DATE_EPOCH=str(manifest["source_date_epoch"])))
    shutil.rmtree(root)
    return out


def _manifest_edit(**changes: str) -> Callable[[Path], None]:
    def edit(venv: Path) -> None:
        path = venv / "giftbox-manifest.json"
        data = json.loads(path.read_text())
        data.update(changes)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return edit


def _verdicts(side: SideA, digest: str) -> list[Any]:
    env = dict(os.environ, GIFTBOX_CACHE=str(side.cache))
    env.pop("GIFTBOX_DATABASE", None)
    with records.open_records(Settings.resolve(root=side.tree, env=env)) as db:
        return [v for v in db.verdicts(digest) if v.check == "reproducible"]


def test_rebuild_check_proves_a_published_artifact_and_gates_a_channel(side_a: SideA) -> None:
    (side_a.tree / "channels.yaml").write_text(CHANNELS)
    for args in (("keys", "init"), ("publish", "nightly", side_a.built["deb"])):
        done = _cli(side_a, *args)
        assert done.returncode == 0, done.stderr
    digest = side_a.built["deb_sha256"]

    refused = _cli(side_a, "promote", "demo-ext", "--from", "nightly", "--to", "proven")
    assert refused.returncode == 8, refused.stderr
    assert "reproducible" in refused.stderr
    assert "giftbox rebuild --check channel:nightly/demo-ext/debian12/x86_64" in refused.stderr

    done = _cli(side_a, "rebuild", "--check", "channel:nightly/demo-ext", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["reproducible"] is True and result["report"] is None
    assert result["digest"] == result["rebuilt_digest"] == digest
    rebuilt = Path(result["rebuilt"])
    assert rebuilt.read_bytes() == Path(side_a.built["deb"]).read_bytes()
    folder = Path(result["directory"])
    assert sorted(p.name for p in folder.iterdir()) == ["build.log", "rebuild.json", "rebuilt"]
    (verdict,) = _verdicts(side_a, digest)
    assert verdict.passed and verdict.distro == "debian12" and verdict.arch == "x86_64"
    assert verdict.channel == "nightly"

    promoted = _cli(side_a, "promote", "demo-ext", "--from", "nightly", "--to", "proven")
    assert promoted.returncode == 0, promoted.stderr


def test_rebuild_check_of_a_tampered_artifact_reports_with_diffoscope(
        side_a: SideA, tmp_path: Path) -> None:
    def tamper(venv: Path) -> None:
        cli = venv / "lib/python3.11/site-packages/demo_ext/cli.py"
        cli.write_text(cli.read_text() + "# tampered after the build\n")

    bad = _repack(Path(side_a.built["deb"]), tmp_path / "giftbox-demo-ext_1.0.0-1~deb12_amd64.deb",
                  tamper)
    done = _cli(side_a, "rebuild", "--check", str(bad), "--json")
    assert done.returncode == 1, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["reproducible"] is False
    assert result["rebuilt_digest"] == side_a.built["deb_sha256"]  # the honest bytes
    report = Path(result["report"])
    assert report.name == "diffoscope.html" and report.parent == Path(result["directory"])
    html = report.read_text()
    assert "demo_ext/cli.py" in html and "tampered" in html  # the member and its diff
    (verdict,) = _verdicts(side_a, result["digest"])
    assert not verdict.passed and str(report) in verdict.detail

    out = tmp_path / "report"
    done = _cli(side_a, "report", "--output", str(out))
    assert done.returncode == 0, done.stderr
    page = (out / "index.html").read_text()
    assert "NOT reproducible" in page
    links = re.findall(r'href="(diffoscope/[^"]+)"', page)
    assert len(links) == 1 and (out / links[0]).read_text() == html


def test_rebuild_check_refuses_an_input_that_is_gone(side_a: SideA, tmp_path: Path) -> None:
    deb = Path(side_a.built["deb"])
    no_image = _repack(deb, tmp_path / "no-image.deb",
                       _manifest_edit(builder_image="sha256:" + "0" * 64))
    done = _cli(side_a, "rebuild", "--check", str(no_image))
    assert done.returncode == 6, done.stderr
    assert "builder image sha256:" + "0" * 64 in done.stderr and "no longer" in done.stderr
    assert "Traceback" not in done.stderr

    no_commit = _repack(deb, tmp_path / "no-commit.deb",
                        _manifest_edit(upstream_commit="f" * 40))
    done = _cli(side_a, "rebuild", "--check", str(no_commit))
    assert done.returncode == 6, done.stderr
    assert "commit " + "f" * 40 in done.stderr and "no longer available" in done.stderr
    assert "Traceback" not in done.stderr

    for bad in (no_image, no_commit):
        digest = hashlib.sha256(bad.read_bytes()).hexdigest()
        assert _verdicts(side_a, digest) == []
        assert not list((side_a.tree / "build").glob(f"*/*/rebuild-{digest[:16]}"))
