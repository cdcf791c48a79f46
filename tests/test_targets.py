"""Which targets a command builds: the operator names a project (and perhaps distros and
arches) and giftbox picks the targets, each checked once and named one way. Pure logic over
the real builder definitions: no engine, no git."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, git_spec, write_spec

from giftbox.distros import Arch
from giftbox.errors import BuilderError, BuildError
from giftbox.settings import Settings
from giftbox.targets import Catalog, Outcome, Target


def _matrix_spec(root: Path, name: str, distros: str, arches: str) -> None:
    body = git_spec(name, "https://git.example.org/x.git", "master").replace(
        "  distros: [debian12]\n  arches: [x86_64]\n",
        f"  distros: [{distros}]\n  arches: [{arches}]\n")
    write_spec(root, name, body)


def test_a_target_is_named_one_way(root: Path, settings: Settings) -> None:
    _matrix_spec(root, "demo", "debian12, rocky9", "x86_64, ppc64le")
    catalog = Catalog.load(settings)
    t = Target(catalog.spec("demo"), catalog.distro("rocky9"), Arch.ppc64le)
    assert (t.slug, t.label, t.log_name) == (
        "rocky9-ppc64le", "demo rocky9/ppc64le", "demo-rocky9-ppc64le")
    o = Outcome.of(t, "built", version="1.0")
    assert (o.project, o.distro, o.arch, o.target) == (
        "demo", "rocky9", "ppc64le", "demo rocky9/ppc64le")


def test_the_lock_and_the_wheelhouse_of_a_target_use_its_slug(
        root: Path, settings: Settings) -> None:
    from giftbox import lock, wheelhouse

    _matrix_spec(root, "demo", "debian12, rocky9", "x86_64, ppc64le")
    catalog = Catalog.load(settings)
    t = Target(catalog.spec("demo"), catalog.distro("rocky9"), Arch.ppc64le)
    assert lock.lock_path(settings, t.spec, t.distro, t.arch) == (
        settings.locks_dir / "demo" / "rocky9-ppc64le.txt")
    house = wheelhouse.Target("2026.1", t.distro, t.arch)
    abi = "cp" + t.distro.python.replace(".", "")
    assert (house.slug, house.name) == ("rocky9-ppc64le", f"2026.1-rocky9-ppc64le-{abi}")


def test_a_target_the_distro_cannot_build_is_refused_when_made(
        root: Path, settings: Settings) -> None:
    _matrix_spec(root, "demo", "debian12", "x86_64")
    catalog = Catalog.load(settings)
    amd64_only = dataclasses.replace(catalog.distro("debian12"), arches=(Arch.x86_64,))
    with pytest.raises(BuildError) as exc:
        Target(catalog.spec("demo"), amd64_only, Arch.ppc64le)
    assert "debian12 does not build ppc64le" in exc.value.render()
    assert "builders/debian12/builder.yaml arches: x86_64" in exc.value.render()


def test_select_defaults_to_the_matrix_runnable_here_and_honours_distro_and_arch(
        root: Path, settings: Settings) -> None:
    # centos7 is in the matrix but not runnable here (builders/centos7/builder.yaml).
    _matrix_spec(root, "demo", "debian12, centos7, debian13", "x86_64, ppc64le")
    catalog = Catalog.load(settings)
    assert not catalog.distros["centos7"].runnable_here
    spec = catalog.spec("demo")
    assert [t.slug for t in catalog.select(spec)] == [
        "debian12-x86_64", "debian12-ppc64le", "debian13-x86_64", "debian13-ppc64le"]
    assert [t.slug for t in catalog.select(spec, ["centos7"], ["ppc64le"])] == [
        "centos7-ppc64le"]
    # The matrix (nightly, CI) walks the same pairs; the CI matrix also the unrunnable ones.
    assert [t.slug for t in catalog.matrix(spec)] == [t.slug for t in catalog.select(spec)]
    assert len(catalog.matrix(spec, runnable_only=False)) == 6
    with pytest.raises(BuilderError) as exc:
        catalog.select(spec, ["debain12"])
    assert "did you mean 'debian12'?" in exc.value.render()


def test_build_all_leaves_out_specs_with_nothing_to_build_here(
        root: Path, settings: Settings) -> None:
    _matrix_spec(root, "here", "debian12", "x86_64")
    _matrix_spec(root, "elsewhere", "centos7", "x86_64")
    catalog = Catalog.load(settings)
    assert [t.label for t in catalog.select_many()] == ["here debian12/x86_64"]
    # Named, it is an error: the operator asked for something that cannot be done here.
    with pytest.raises(BuildError) as exc:
        catalog.select_many(["elsewhere"])
    assert "nothing to do for elsewhere" in exc.value.render()


def test_the_cli_and_the_target_rooms_are_in_no_import_cycle() -> None:
    # Every import counts, lazy ones too: cli/build.py and cli/nightly.py once imported each
    # other. scripts/import-cycles reads the modules with ast; it imports nothing.
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "import-cycles")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    assert "import cycle group(s)" in proc.stdout
    rooms = ("giftbox.cli.", "giftbox.targets", "giftbox.runner", "giftbox.progress",
             "giftbox.nightly")
    tangled = [line for line in proc.stdout.splitlines()
               if any(r in line for r in rooms)]
    assert tangled == [], proc.stdout
