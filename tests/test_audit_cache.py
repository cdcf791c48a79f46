"""Cached console-script verdicts (giftbox.scriptcache): real builds of a small project in
the real builder, each a new patch; a verdict is reused only while what the script read is
unchanged, and a failure is never cached."""

# The demo upstream and settings fixtures are test_build's; pytest finds them by name, which
# ruff reads as redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import Upstream, git, git_spec, write_spec
from test_build import CLI_PY, bsettings, demo  # noqa: F401 (fixtures: the same demo)

from giftbox import build as build_stage
from giftbox.distros import Arch, get_distro
from giftbox.errors import BuildError
from giftbox.scriptcache import ScriptVerdicts, Venv, read_record
from giftbox.settings import Settings
from giftbox.spec import load_spec

pytestmark = pytest.mark.docker

# The script imports helper (so reads it); unused is installed but never read.
FILES = {
    "demo_ext/helper.py": "WORD = 'help'\n",
    "demo_ext/unused.py": "NOTHING = 0\n",
    "demo_ext/cli.py": CLI_PY.replace("import six\n", "import six\n\nfrom demo_ext import helper\n"),
}


def build_with(root: Path, settings: Settings, demo: Upstream, tmp_path: Path, name: str,
               changes: dict[str, str]) -> dict:  # type: ignore[type-arg]
    """A build of the demo with one patch holding FILES and ``changes``; its audit.json."""
    work = tmp_path / name
    git(tmp_path, "clone", "-q", str(demo.path), str(work))
    for rel, text in {**FILES, **changes}.items():
        (work / rel).write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "-qm", name)
    patch = git(work, "format-patch", "-1", "-o", str(tmp_path / f"{name}-out")).splitlines()[-1]
    patches = root / "patches" / "demo-ext"
    shutil.rmtree(patches, ignore_errors=True)
    patches.mkdir(parents=True)
    shutil.copy(patch, patches / f"0001-{name}.patch")
    write_spec(root, "demo-ext", git_spec("demo-ext", demo.url, "1.0.0",
                                          patches=[f"0001-{name}.patch"]))
    spec = load_spec(root / "specs" / "demo-ext.yaml", root)
    distro = get_distro(root / "builders", "debian12")
    if not (root / "locks").exists():
        build_stage.make_lock(spec, distro, Arch.x86_64, settings)
    result = build_stage.build(spec, distro, Arch.x86_64, settings)
    assert not result.cached
    return json.loads((result.directory / "audit.json").read_text())  # type: ignore[no-any-return]


def store(settings: Settings) -> Path:
    return settings.cache_dir / "audit-scripts" / "demo-ext" / "debian12-x86_64.json"


def test_verdict_follows_what_the_script_read(root: Path, bsettings: Settings, demo: Upstream,
                                              tmp_path: Path) -> None:
    shutil.rmtree(store(bsettings).parent, ignore_errors=True)  # other tests' verdicts
    first = build_with(root, bsettings, demo, tmp_path, "base", {})
    assert first["scripts_run"] == ["demo-ext"] and first["scripts_cached"] == []
    inputs = json.loads(store(bsettings).read_text())["verdicts"]["demo-ext"]["inputs"]
    assert any(p.endswith("/demo_ext/helper.py") for p in inputs)
    assert not any(p.endswith("/demo_ext/unused.py") for p in inputs)

    # (1) a change to a file the script does not read: the verdict is reused
    unrelated = build_with(root, bsettings, demo, tmp_path, "unrelated",
                           {"demo_ext/unused.py": "NOTHING = 1\n"})
    assert unrelated["scripts_cached"] == ["demo-ext"] and unrelated["scripts_run"] == []
    assert unrelated["scripts"] == {"demo-ext": None}

    # (2) a change to a module the script imports: it runs again
    imported = build_with(root, bsettings, demo, tmp_path, "imported",
                          {"demo_ext/helper.py": "WORD = 'more help'\n"})
    assert imported["scripts_run"] == ["demo-ext"] and imported["scripts_cached"] == []

    # (3) a new module file in a directory the import system listed: it runs again
    added = build_with(root, bsettings, demo, tmp_path, "added",
                       {"demo_ext/helper.py": "WORD = 'more help'\n",
                        "demo_ext/extra.py": "EXTRA = 1\n"})
    assert added["scripts_run"] == ["demo-ext"]

    # (4) a damaged verdict record is a miss, not a crash nor a pass (intact, the verdict
    # of "added" would serve: only unused.py differs)
    store(bsettings).write_text('{"verdicts": {"demo-ext": {"base": 1, "inputs": []}}')
    damaged = build_with(root, bsettings, demo, tmp_path, "damaged",
                         {"demo_ext/helper.py": "WORD = 'more help'\n",
                          "demo_ext/extra.py": "EXTRA = 1\n", "demo_ext/unused.py": "N = 2\n"})
    assert damaged["scripts_run"] == ["demo-ext"] and damaged["scripts_cached"] == []

    # (5) a script that fails is never cached: it fails on every build
    kept = store(bsettings).read_text()
    broken = {"demo_ext/helper.py": "raise SystemExit('helper is broken')\n"}
    for attempt in ("broken", "broken-again"):
        with pytest.raises(BuildError) as info:
            build_with(root, bsettings, demo, tmp_path, attempt, broken)
        assert "1 of 1 scripts failed" in info.value.render()
        assert "helper is broken" in info.value.render()
        assert store(bsettings).read_text() == kept


def test_damaged_store_and_records_are_misses(tmp_path: Path) -> None:
    """Whatever the store or a run's record holds, reading it never raises or passes."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    verdicts = ScriptVerdicts(tmp_path / "store.json", Venv(venv, "/opt/x", tmp_path / "l"),
                              "base")
    for text in ("", "{", "[]", '{"verdicts": []}', '{"verdicts": {"s": 1}}',
                 '{"verdicts": {"s": {"base": "base", "tree": "t", "context": "c", '
                 '"inputs": {"/etc/passwd": "absent"}}}}', "\xff"):
        verdicts.store.write_text(text, errors="surrogateescape")
        verdicts._known.clear()
        verdicts.load()
        assert verdicts.still_valid() == {}
    for text in ("", "null", '{"opened": "x"}', '{"opened": [], "listed": [], "unsafe": [], '
                 '"spawned": [{"argv": "ls"}]}'):
        (tmp_path / "record.json").write_text(text)
        assert read_record(tmp_path / "record.json") is None
