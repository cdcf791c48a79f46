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
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, Upstream, git_spec, write_spec
from test_build import demo_upstream

from giftbox.build import timestamp_pycs

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


@pytest.fixture(scope="module")
def demo_ext(tmp_path_factory: pytest.TempPathFactory) -> Upstream:
    return demo_upstream(tmp_path_factory.mktemp("repro-upstream") / "demo-ext")


def test_two_from_scratch_builds_under_varied_conditions_are_identical(
        tmp_path: Path, demo_ext: Upstream) -> None:
    tree_a = _tree(tmp_path / "a" / "tree", demo_ext.url)
    _side(tree_a, tmp_path / "a" / "cache", "lock")  # the committed lock both sides use
    tree_b = tmp_path / "elsewhere" / "much" / "deeper" / "giftbox-checkout"
    shutil.copytree(tree_a, tree_b)
    (tmp_path / "home-b").mkdir()

    a = _side(tree_a, tmp_path / "a" / "cache", "build",
              env={"TZ": "UTC", "LC_ALL": "POSIX"}, umask=0o022)
    wrap: tuple[str, ...] = ("taskset", "-c", "0")
    if shutil.which("faketime"):
        wrap = ("faketime", "-f", "+3d", *wrap)
    b = _side(tree_b, tmp_path / "b-cache", "build", wrap=wrap, umask=0o002,
              env={"TZ": "Pacific/Kiritimati", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8",
                   "HOME": str(tmp_path / "home-b")})

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
