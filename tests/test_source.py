"""The source stage against real git repositories made here, and a real PyPI tarball."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from conftest import Upstream, git, git_spec, write_spec

from giftbox import source
from giftbox.errors import PatchError, SourceError
from giftbox.settings import Settings
from giftbox.spec import PyPIUpstream, load_spec
from giftbox.ui import Reporter

# oslo.i18n 6.7.2, as pinned by 2026.1's upper-constraints: small and real.
OSLO = PyPIUpstream(name="oslo.i18n", version="6.7.2",
                    sha256="b1241ad3eee216e9dc9acb4336fce0bd79c4c286751ee70dfa42ff2f9763d34f")


def mbox_patch(repo: Path, tmp: Path, edit, message: str, author: str) -> Path:
    """A real ``git format-patch`` made from an edit on a scratch clone."""
    work = tmp / f"scratch-{len(list(tmp.glob('scratch-*')))}"
    git(tmp, "clone", "-q", str(repo), str(work))
    edit(work)
    git(work, "add", "-A")
    name, email = author.split(" <")
    git(work, "commit", "-q", "-m", message,
        env={"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email.rstrip(">")})
    out = git(work, "format-patch", "-1", "--zero-commit", "-o", str(tmp / "made"))
    return Path(out.splitlines()[-1])


def add_patch(root: Path, project: str, patch: Path, name: str) -> None:
    folder = root / "patches" / project
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(patch.read_bytes())


def greeting(text: str):
    def edit(work: Path) -> None:
        demo = work / "demo.py"
        demo.write_text(demo.read_text().replace('GREETING = "hello"', f'GREETING = "{text}"'))
    return edit


def test_tag_branch_commit_and_change_refs(upstream: Upstream, settings: Settings) -> None:
    first = upstream.commit("Fix a bug")
    upstream.tag("1.0.0")
    git(upstream.path, "checkout", "-q", "-b", "stable/2026.1")
    stable = upstream.commit("Backport on stable")
    git(upstream.path, "checkout", "-q", "master")
    # A Gerrit change: a commit only reachable from refs/changes/..
    git(upstream.path, "checkout", "-q", "--detach")
    change = upstream.commit("Proposed change under review")
    git(upstream.path, "update-ref", "refs/changes/45/12345/2", change)
    git(upstream.path, "checkout", "-q", "master")

    mirror = source.GitMirror(upstream.url, settings)
    assert mirror.resolve("1.0.0") == first
    assert mirror.resolve("stable/2026.1") == stable
    assert mirror.resolve(first[:10]) == first
    assert mirror.resolve("refs/changes/45/12345/2") == change
    assert mirror.path.is_dir() and mirror.path.parent == settings.cache_dir / "git"
    assert mirror.version_of(first, "1.0.0") == "1.0.0"
    assert mirror.version_of(stable, "stable/2026.1") == "1.0.1.dev1"


def test_missing_ref_lists_nearest_tags(upstream: Upstream, settings: Settings) -> None:
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        upstream.commit(f"Release {version}")
        upstream.tag(version)
    mirror = source.GitMirror(upstream.url, settings)
    with pytest.raises(SourceError) as info:
        mirror.resolve("2.0.1")
    text = info.value.render()
    assert f"ref '2.0.1' does not exist in {upstream.url}" in text
    assert "nearest refs: 2.0.0" in text and "latest tags: 1.0.0, 1.1.0, 2.0.0" in text


def test_mirror_fetches_incrementally(upstream: Upstream, settings: Settings) -> None:
    upstream.tag("1.0.0")
    mirror = source.GitMirror(upstream.url, settings)
    before = mirror.resolve("master")
    objects = {p.name for p in (mirror.path / "objects").iterdir()}
    after = upstream.commit("A new commit on master")
    assert mirror.resolve("master") == after != before
    assert mirror.version_of(after, "master") == "1.0.1.dev1"
    # The mirror is updated in place, not recloned.
    assert objects <= {p.name for p in (mirror.path / "objects").iterdir()}


def test_merges_count_towards_the_dev_version(upstream: Upstream, settings: Settings) -> None:
    upstream.tag("1.0.0")
    git(upstream.path, "checkout", "-q", "-b", "feature")
    upstream.commit("Feature work", file="feature.txt")
    git(upstream.path, "checkout", "-q", "master")
    upstream.commit("Mainline work")
    git(upstream.path, "merge", "-q", "--no-ff", "-m", "Merge feature", "feature",
        env={"GIT_COMMITTER_DATE": "@1700009999 +0000", "GIT_AUTHOR_DATE": "@1700009999 +0000"})
    mirror = source.GitMirror(upstream.url, settings)
    head = mirror.resolve("master")
    assert mirror.version_of(head, "master") == "1.0.1.dev3"


def test_host_git_config_cannot_redirect_the_fetch(upstream: Upstream, settings: Settings,
                                                   tmp_path: Path) -> None:
    """A url.insteadOf in the user's git config must not fetch from somewhere else."""
    decoy = Upstream(tmp_path / "decoy")
    decoy_commit = decoy.commit("Decoy content")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        f'[url "file://{decoy.path}"]\n\tinsteadOf = {upstream.url}\n')
    old_home = os.environ["HOME"]
    os.environ["HOME"] = str(home)
    try:
        commit = source.GitMirror(upstream.url, settings).resolve("master")
    finally:
        os.environ["HOME"] = old_home
    assert commit == upstream.head() != decoy_commit


def test_ext_transport_is_refused_before_git_runs(settings: Settings, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(SourceError, match="remote-helper transport"):
        source.GitMirror(f"ext::touch {marker}", settings)
    assert not marker.exists()


def test_source_applies_patches_keeping_authorship(root: Path, upstream: Upstream,
                                                   settings: Settings, tmp_path: Path,
                                                   giftbox) -> None:
    upstream.tag("1.0.0")
    p1 = mbox_patch(upstream.path, tmp_path, greeting("hi"),
                    "Say hi instead\n\nOur users prefer it.", "Ops Person <ops@example.org>")
    add_patch(root, "demo", p1, "0001-say-hi.patch")
    (root / "patches" / "demo" / "0002-add-notes.diff").write_text(
        "Description: Add operator notes\nAuthor: Second Person <second@example.org>\n\n"
        "--- /dev/null\n+++ b/NOTES\n@@ -0,0 +1 @@\n+local notes\n")
    write_spec(root, "demo", git_spec("demo", upstream.url, "1.0.0",
                                      patches=["0001-say-hi.patch", "0002-add-notes.diff"]))
    into = tmp_path / "work"
    result = giftbox("source", "demo", "--into", str(into), "--json")
    assert result.code == 0, result.err
    info = json.loads(result.out)
    assert info["commit"] == upstream.head("1.0.0")
    assert [p["name"] for p in info["patches"]] == ["0001-say-hi.patch", "0002-add-notes.diff"]
    log = git(into, "log", "--format=%an <%ae>|%s", "-3").splitlines()
    assert log == ["Second Person <second@example.org>|Add operator notes",
                   "Ops Person <ops@example.org>|Say hi instead",
                   "Upstream Dev <dev@upstream.org>|Initial import"]
    assert "Our users prefer it." in git(into, "log", "-1", "--format=%b", "HEAD~1")
    assert 'GREETING = "hi"' in (into / "demo.py").read_text()
    assert (into / "NOTES").read_text() == "local notes\n"
    assert "applied 0001-say-hi.patch" in result.err
    # The same inputs give the same patched commits.
    again = giftbox("source", "demo", "--into", str(tmp_path / "again"), "--json")
    assert json.loads(again.out)["head"] == info["head"]


def test_patch_that_does_not_apply_names_file_and_hunk(root: Path, upstream: Upstream,
                                                       settings: Settings, tmp_path: Path,
                                                       giftbox) -> None:
    upstream.tag("1.0.0")
    good = mbox_patch(upstream.path, tmp_path, lambda w: (w / "EXTRA").write_text("x\n"),
                      "Add extra", "Ops Person <ops@example.org>")
    bad = mbox_patch(upstream.path, tmp_path, greeting("hi"), "Say hi",
                     "Ops Person <ops@example.org>")
    # Upstream moves on and changes the same line: the patch no longer applies to 1.1.0.
    upstream.commit("Upstream greets differently", file="demo.py",
                    text=(upstream.path / "demo.py").read_text().replace('"hello"', '"hey"'))
    upstream.tag("1.1.0")
    add_patch(root, "demo", good, "0001-extra.patch")
    add_patch(root, "demo", bad, "0002-say-hi.patch")
    write_spec(root, "demo", git_spec("demo", upstream.url, "1.1.0",
                                      patches=["0001-extra.patch", "0002-say-hi.patch"]))
    into = tmp_path / "work"
    result = giftbox("source", "demo", "--into", str(into))
    assert result.code == 4, result.err
    assert "patch 0002-say-hi.patch (2 of 2) does not apply to demo at 1.1.0" in result.err
    assert "the hunk @@ -1,6 +1,6 @@" in result.err and "of demo.py" in result.err
    assert not into.exists()
    kept = Path(result.err.split("is kept at ")[1].split(";")[0])
    assert (kept / "EXTRA").is_file() and 'GREETING = "hey"' in (kept / "demo.py").read_text()
    assert kept.parent == settings.cache_dir / "failed"
    assert not list(tmp_path.glob(".work.*")), "no staging tree left beside --into"


def test_patch_on_a_missing_file(root: Path, upstream: Upstream, settings: Settings,
                                 tmp_path: Path) -> None:
    upstream.tag("1.0.0")
    (root / "patches" / "demo").mkdir(parents=True)
    (root / "patches" / "demo" / "gone.diff").write_text(
        "--- a/nothere.py\n+++ b/nothere.py\n@@ -1 +1 @@\n-a\n+b\n")
    write_spec(root, "demo", git_spec("demo", upstream.url, "1.0.0", patches=["gone.diff"]))
    spec = load_spec(root / "specs" / "demo.yaml", root)
    with pytest.raises(PatchError, match="nothere.py: No such file or directory|nothere.py"):
        source.prepare(spec, tmp_path / "work", settings)
    assert not (tmp_path / "work").exists()


def test_into_must_be_empty(root: Path, upstream: Upstream, settings: Settings,
                            tmp_path: Path) -> None:
    write_spec(root, "demo", git_spec("demo", upstream.url, "master"))
    spec = load_spec(root / "specs" / "demo.yaml", root)
    target = tmp_path / "full"
    target.mkdir()
    (target / "keep").write_text("mine")
    with pytest.raises(SourceError, match="exists and is not empty"):
        source.prepare(spec, target, settings)
    assert (target / "keep").read_text() == "mine"


@pytest.mark.network
def test_pypi_tarball_is_verified_imported_and_patchable(root: Path, settings: Settings,
                                                         tmp_path: Path, cache: Path) -> None:
    upstream = source.resolve_pypi(OSLO, settings)
    assert upstream.version == "6.7.2" and upstream.kind == "pypi"
    tarball = next((cache / "pypi" / OSLO.sha256).glob("*.tar.gz"))
    assert tarball.name == "oslo_i18n-6.7.2.tar.gz"
    # Same tarball, fresh cache: the same commit (fixed identity, the tarball's own times).
    other = Settings(root=settings.root, cache_dir=tmp_path / "cache2",
                     state_dir=settings.state_dir, ca_bundle=settings.ca_bundle)
    (other.cache_dir / "pypi" / OSLO.sha256).mkdir(parents=True)
    (other.cache_dir / "pypi" / OSLO.sha256 / tarball.name).write_bytes(tarball.read_bytes())
    assert source.resolve_pypi(OSLO, other).commit == upstream.commit

    (root / "patches" / "oslo.i18n").mkdir(parents=True)
    (root / "patches" / "oslo.i18n" / "0001-marker.diff").write_text(
        "Description: Mark the build\n\n--- /dev/null\n"
        "+++ b/oslo_i18n/_giftbox.py\n@@ -0,0 +1 @@\n+GIFTBOX_PATCHED = True\n")
    write_spec(root, "oslo.i18n", "\n".join([
        "name: oslo.i18n", 'release: "2026.1"',
        "constraints: constraints/upper-constraints-2026.1.txt",
        "upstream:", "  use: pypi", "  pypi:", "    name: oslo.i18n", "    version: 6.7.2",
        f"    sha256: {OSLO.sha256}", "patches:", "  - 0001-marker.diff",
        "package:", "  prefix: /opt/openstack/oslo-i18n",
        "matrix:", "  distros: [debian12]", "  arches: [x86_64]", ""]))
    spec = load_spec(root / "specs" / "oslo.i18n.yaml", root)
    tree = source.prepare(spec, tmp_path / "oslo", settings)
    assert (tree.path / "PKG-INFO").is_file()
    assert "GIFTBOX_PATCHED = True" in (tree.path / "oslo_i18n" / "_giftbox.py").read_text()
    assert len(tree.patches) == 1 and tree.upstream.commit != tree.head


@pytest.mark.network
def test_pypi_sha256_mismatch_is_refused(settings: Settings, cache: Path) -> None:
    wrong = PyPIUpstream(name=OSLO.name, version=OSLO.version, sha256="0" * 64)
    with pytest.raises(SourceError) as info:
        source.resolve_pypi(wrong, settings)
    text = info.value.render()
    assert f"has sha256 {OSLO.sha256}" in text and "pins upstream.pypi.sha256 0000" in text
    assert not (cache / "pypi" / ("0" * 64)).exists()
    assert not (cache / "pypi-git").exists()


@pytest.mark.network
def test_pypi_unknown_version(settings: Settings) -> None:
    missing = PyPIUpstream(name="oslo.i18n", version="0.0.1", sha256="1" * 64)
    with pytest.raises(SourceError, match="no source tarball oslo.i18n-0.0.1.tar.gz"):
        source.resolve_pypi(missing, settings)


def _tree_facts(tree: Path) -> tuple[str, str, str, dict[str, bytes]]:
    files = {str(p.relative_to(tree)): p.read_bytes() for p in sorted(tree.rglob("*"))
             if p.is_file() and ".git" not in p.relative_to(tree).parts}
    return (git(tree, "rev-parse", "HEAD"), git(tree, "ls-files", "-s"),
            git(tree, "status", "--porcelain", "--untracked-files=all"), files)


def test_a_builds_linked_checkout_is_the_checkout_and_a_changed_kept_tree_is_not_used(
        root: Path, upstream: Upstream, settings: Settings, tmp_path: Path) -> None:
    upstream.tag("1.0.0")
    (upstream.path / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    (upstream.path / "tool.sh").chmod(0o755)
    upstream.commit("Add a tool", file="NOTES", text="notes\n")
    upstream.tag("1.0.1")
    p1 = mbox_patch(upstream.path, tmp_path, greeting("hi"), "Say hi", "Ops <ops@example.org>")
    add_patch(root, "demo", p1, "0001-say-hi.patch")
    write_spec(root, "demo", git_spec("demo", upstream.url, "1.0.1",
                                      patches=["0001-say-hi.patch"]))
    spec = load_spec(root / "specs" / "demo.yaml", root)
    resolved = source.resolve(spec, settings)
    plain = source.checkout(spec, resolved, tmp_path / "plain", settings)
    linked = source.checkout(spec, resolved, tmp_path / "linked", settings, linked=True)
    assert _tree_facts(linked.path) == _tree_facts(plain.path)
    assert linked.head == plain.head
    kept = settings.cache_dir / "checkouts" / resolved.commit
    assert os.stat(linked.path / "NOTES").st_ino == os.stat(kept / "NOTES").st_ino
    assert os.stat(plain.path / "NOTES").st_nlink == 1  # the operator's own, not linked
    # the patched file is a new file: the kept tree still holds the commit's
    assert 'GREETING = "hello"' in (kept / "demo.py").read_text()
    assert 'GREETING = "hi"' in (linked.path / "demo.py").read_text()

    # the kept tree changed in place (through any of its links) or given an extra file: not
    # used; the build checks out afresh, and the next build keeps a new tree
    damages = (lambda: (kept / "NOTES").open("a").write("planted\n"),
               lambda: (kept / "extra.py").write_text("import os\n"),
               lambda: (kept / "tool.sh").chmod(0o644))
    for n, damage in enumerate(damages):
        damage()
        out = io.StringIO()
        again = source.checkout(spec, resolved, tmp_path / f"again-{n}", settings,
                                Reporter(out), linked=True)
        assert "is not the commit's files any more" in out.getvalue()
        assert _tree_facts(again.path) == _tree_facts(plain.path)
        assert not kept.exists()
        source.checkout(spec, resolved, tmp_path / f"refill-{n}", settings, linked=True)
        assert (kept / "NOTES").read_text() == "notes\n" and not (kept / "extra.py").exists()
