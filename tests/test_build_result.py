"""What a build leaves for the next one with the same inputs: ``result.json`` and
``manifest.json`` under ``build/<project>/<slug>/<key16>/``, read back as a ``BuildResult``
that carries its ``Target`` and package version. A build left by another giftbox (older
fields, a truncated file) is a cache miss and is made again, never a crash. Pure: the plan's
inputs are given as values, nothing runs in a builder."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from conftest import git_spec, write_spec

from giftbox.build import Builder, Plan
from giftbox.builders import BuilderImage
from giftbox.distros import Arch
from giftbox.lock import ProjectMeta
from giftbox.settings import Settings
from giftbox.source import Upstream
from giftbox.targets import Catalog
from giftbox.ui import Reporter


@pytest.fixture
def made(root: Path, settings: Settings, tmp_path: Path) -> tuple[Builder, Plan, io.StringIO]:
    """A build of demo 1.0.0 for debian12/x86_64 as a fresh build finishes it."""
    write_spec(root, "demo", git_spec("demo", "https://git.example.org/demo.git", "1.0.0"))
    catalog = Catalog.load(settings)
    notes = io.StringIO()
    builder = Builder(catalog.spec("demo"), catalog.distro("debian12"), Arch.x86_64, settings,
                      Reporter(notes))
    upstream = Upstream(kind="git", url="https://git.example.org/demo.git", ref="1.0.0",
                        commit="a" * 40, repo=tmp_path, version="1.0.0",
                        source_date_epoch=1700000000)
    image = BuilderImage(tag="giftbox-builder/debian12:x86_64-0", image_id="sha256:" + "b" * 64,
                         distro="debian12", arch=Arch.x86_64, python="3.11", digest="0" * 12)
    meta = ProjectMeta(name="demo", requirements=(), build_requirements=(),
                       requires_python=None)
    plan = Plan(builder.target, settings, upstream, image, meta, "six==1.16.0\n",
                "2026-01-01T00:00:00Z")
    plan.directory.mkdir(parents=True)
    builder._finish(plan, builder._manifest(plan, {"head": "c" * 40, "patch_digest": "",
                                                   "patches": []}))
    return builder, plan, notes


def test_a_finished_build_reads_back_with_its_target_and_version(
        made: tuple[Builder, Plan, io.StringIO]) -> None:
    builder, plan, _notes = made
    assert plan.directory.parent.name == "debian12-x86_64" == builder.target.slug
    loaded = builder._load(plan)
    assert loaded is not None and loaded.cached
    assert loaded.target == builder.target and loaded.version == plan.version
    assert (loaded.version.deb, loaded.prefix) == ("1.0.0-1~deb12", "/opt/openstack/demo")
    assert loaded.as_dict()["project"] == "demo" and loaded.as_dict()["arch"] == "x86_64"
    assert json.loads(plan.result_path.read_text()) == {
        **loaded.as_dict(), "cached": False, "directory": str(plan.directory),
        "venv": str(plan.venv_dir), "manifest": str(plan.directory / "manifest.json"),
        "log": str(plan.log_path)}


def test_a_manifest_from_before_its_newer_fields_still_loads(
        made: tuple[Builder, Plan, io.StringIO]) -> None:
    builder, plan, _notes = made
    path = plan.directory / "manifest.json"
    data = json.loads(path.read_text())
    for newer in ("system_bindings", "depends", "giftbox_version", "extra"):
        del data[newer]
    path.write_text(json.dumps(data))
    loaded = builder._load(plan)
    assert loaded is not None and loaded.manifest.depends == ()


@pytest.mark.parametrize("damage", ["manifest truncated", "manifest without version",
                                    "manifest of another version", "result without key",
                                    "result not json", "manifest gone"])
def test_what_another_giftbox_left_is_a_cache_miss(made: tuple[Builder, Plan, io.StringIO],
                                                   damage: str) -> None:
    builder, plan, notes = made
    manifest = plan.directory / "manifest.json"
    data = json.loads(manifest.read_text())
    if damage == "manifest truncated":
        manifest.write_text(manifest.read_text()[:100])
    elif damage == "manifest without version":
        del data["version"]
        manifest.write_text(json.dumps(data))
    elif damage == "manifest of another version":
        data["version"]["release"] = 2
        manifest.write_text(json.dumps(data))
    elif damage == "result without key":
        result = json.loads(plan.result_path.read_text())
        del result["key"]
        plan.result_path.write_text(json.dumps(result))
    elif damage == "result not json":
        plan.result_path.write_text("{")
    else:
        manifest.unlink()
    assert builder._load(plan) is None
    (line,) = notes.getvalue().splitlines()
    assert line.startswith(f"    {plan.result_path} cannot be read (")
    assert line.endswith("): building again")


def test_a_deps_layer_left_by_an_earlier_giftbox_is_served_as_it_is(
        made: tuple[Builder, Plan, io.StringIO], settings: Settings) -> None:
    """The layer's key and its place on disk are what existing caches hold: a layer made for
    these inputs before it had a module of its own (giftbox.layer) is a hit, no builder run.
    (A RECIPE bump changes the key on purpose: then this digest changes with it.)"""
    builder, plan, notes = made
    layer = settings.cache_dir / "layers" / "debian12-x86_64" / "fc00cc084d87ccef"
    (layer / "venv" / "lib").mkdir(parents=True)
    (layer / "audit-deps.json").write_text('{"imports": {}, "extensions": {}}\n')
    assert builder.engine is None  # nothing here may need one
    assert builder._deps_layer(plan) == layer
    assert "deps layer fc00cc084d87ccef: cached" in notes.getvalue()
    assert (layer / "modes-normalised").exists()
