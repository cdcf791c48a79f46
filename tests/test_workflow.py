"""The packager's daily workflow against real git repositories made here: export a work tree,
check a series, bump across upstream history, backport, diff. Nothing is mocked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import Upstream, git, git_spec, write_spec

from giftbox import lock

# Whole git workflows over real repositories (seconds each): CI runs them, the fast tier
# (-m 'not docker and not slow') leaves them out.
pytestmark = pytest.mark.slow

CONFIG = "".join(f"OPTION_{i} = {i}\n" for i in range(1, 13))
README = "The demo project.\n\nIt greets.\n\nIt is small.\n\nIt is tested.\n"
SPEC_COMMENTS = ("# demo: pinned where our cloud runs it.\n", "# Applied in order; see "
                 "patches/demo/.\n")


def spec_text(url: str, ref: str, patches: list[str] | None) -> str:
    """A spec with comments and a flow of fields a person would write."""
    body = git_spec("demo", url, ref, patches=patches)
    if patches == []:
        body = body.replace("patches:\n", "patches: []\n")
    body = SPEC_COMMENTS[0] + body.replace("patches:", SPEC_COMMENTS[1] + "patches:")
    return body.replace(f"    ref: {ref}\n", f"    ref: {ref}   # the release we run\n")


def make_upstream(path: Path) -> Upstream:
    up = Upstream(path)
    up.commit("Add configuration", file="config.py", text=CONFIG)
    up.commit("Add a README", file="README", text=README)
    up.tag("1.0.0")
    return up


def commit_in(tree: Path, message: str, edit, author: str = "Ops Person <ops@example.org>",
              stamp: int = 1710000000) -> None:
    edit(tree)
    git(tree, "add", "-A")
    name, email = author.split(" <")
    git(tree, "commit", "-q", "-m", message,
        env={"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email.rstrip(">"),
             "GIT_AUTHOR_DATE": f"@{stamp} +0000"})


def replace(file: str, old: str, new: str):
    def edit(tree: Path) -> None:
        target = tree / file
        text = target.read_text()
        assert old in text, (file, old)
        target.write_text(text.replace(old, new))
    return edit


def append(file: str, text: str):
    def edit(tree: Path) -> None:
        target = tree / file
        target.write_text((target.read_text() if target.exists() else "") + text)
    return edit


SAY_HI = replace("demo.py", 'GREETING = "hello"', 'GREETING = "hi"')
TUNE = replace("config.py", "OPTION_6 = 6\n", "OPTION_6 = 60  # tuned for our cloud\n")
NOTES = append("README", "\nOperators: see our runbook.\n")


def make_series(root: Path, up: Upstream, giftbox, tmp_path: Path) -> tuple[Path, list[str]]:
    """Spec pinned at 1.0.0 and three exported patches: say hi, tune, notes."""
    write_spec(root, "demo", spec_text(up.url, "1.0.0", []))
    tree = tmp_path / "work"
    result = giftbox("source", "demo", "--into", str(tree))
    assert result.code == 0, result.err
    commit_in(tree, "Say hi instead of hello\n\nOur users prefer it.", SAY_HI, stamp=1710000001)
    commit_in(tree, "Tune option 6 for our cloud", TUNE, "Tuner <tune@example.org>",
              stamp=1710000002)
    commit_in(tree, "Point operators at the runbook", NOTES, stamp=1710000003)
    result = giftbox("patches", "export", "demo", "--from", str(tree))
    assert result.code == 0, result.err
    names = sorted(p.name for p in (root / "patches" / "demo").iterdir())
    return tree, names


def snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for folder in ("specs", "patches", "locks"):
        for path in sorted((root / folder).rglob("*")):
            if path.is_file():
                out[str(path.relative_to(root))] = path.read_bytes()
    return out


def evolve_upstream(up: Upstream) -> dict[str, str]:
    """2.0.0: merges "say hi" as a different commit (other author, other message, same
    diff), changes option 6 its own way (conflicts with "tune"), leaves the README alone."""
    shas = {}
    shas["merged"] = up.commit("Use a friendlier greeting (from a user report)", file="demo.py",
                               text=(up.path / "demo.py").read_text().replace(
                                   'GREETING = "hello"', 'GREETING = "hi"'))
    shas["conflict"] = up.commit("Raise option 6", file="config.py",
                                 text=CONFIG.replace("OPTION_6 = 6\n", "OPTION_6 = 66\n"))
    shas["other"] = up.commit("Add a changelog")
    up.tag("2.0.0")
    return shas


# --- export ---------------------------------------------------------------------------------


def test_export_writes_a_stable_series_and_edits_the_spec_in_place(
        root: Path, upstream: Upstream, giftbox, tmp_path: Path) -> None:
    up = make_upstream(tmp_path / "up")
    tree, names = make_series(root, up, giftbox, tmp_path)
    assert names == ["0001-Say-hi-instead-of-hello.patch", "0002-Tune-option-6-for-our-cloud.patch",
                     "0003-Point-operators-at-the-runbook.patch"]
    spec = (root / "specs" / "demo.yaml").read_text()
    # `patches:` was empty; three names do not fit a flow list's line, so a block list
    # follows the key, indented like the rest of the file, and nothing else moved
    assert spec == spec_text(up.url, "1.0.0", names)
    assert spec.startswith(SPEC_COMMENTS[0]) and SPEC_COMMENTS[1] in spec
    assert "ref: 1.0.0   # the release we run" in spec
    first = (root / "patches" / "demo" / names[0]).read_text()
    assert first.startswith("From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00")
    assert "Subject: [PATCH] Say hi instead of hello" in first
    assert "From: Ops Person <ops@example.org>" in first
    assert "Our users prefer it." in first and "\n-- \n" not in first
    assert "\n---\n demo.py | 2 +-\n 1 file changed" in first

    # Stable: a second export (and one from a fresh tree) changes no byte, not even an mtime.
    before = snapshot(root)
    mtimes = {p: p.stat().st_mtime_ns for p in (root / "patches" / "demo").iterdir()}
    assert giftbox("patches", "export", "demo", "--from", str(tree)).code == 0
    assert snapshot(root) == before
    assert mtimes == {p: p.stat().st_mtime_ns for p in (root / "patches" / "demo").iterdir()}
    fresh = tmp_path / "fresh"
    assert giftbox("source", "demo", "--into", str(fresh)).code == 0
    result = giftbox("patches", "export", "demo", "--from", str(fresh))
    assert result.code == 0, result.err
    assert snapshot(root) == before
    assert result.out.count("unchanged") == 3

    # Drop the middle patch and reword nothing: its file goes, the others keep their names.
    git(tree, "rebase", "-q", "--onto", "HEAD~2", "HEAD~1")
    result = giftbox("patches", "export", "demo", "--from", str(tree), "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["removed"] == [names[1]] and data["written"] == []
    assert sorted(p.name for p in (root / "patches" / "demo").iterdir()) == [names[0], names[2]]
    after = (root / "specs" / "demo.yaml").read_text()
    assert f"  - {names[0]}\n  - {names[2]}\n" in after
    assert after.replace(f"  - {names[0]}\n  - {names[2]}\n", "") == spec.replace(
        "".join(f"  - {n}\n" for n in names), "")


def test_export_refuses_dirty_foreign_and_detached_trees(
        root: Path, giftbox, tmp_path: Path) -> None:
    up = make_upstream(tmp_path / "up")
    tree, _names = make_series(root, up, giftbox, tmp_path)
    write_spec(root, "other", git_spec("other", up.url, "1.0.0"))
    before = snapshot(root)

    (tree / "demo.py").write_text("changed\n")
    (tree / "scratch.txt").write_text("forgot to add me\n")
    result = giftbox("patches", "export", "demo", "--from", str(tree))
    assert result.code == 4
    assert "uncommitted changes: demo.py, scratch.txt" in result.err
    git(tree, "checkout", "-q", "--", "demo.py")
    (tree / "scratch.txt").unlink()

    result = giftbox("patches", "export", "other", "--from", str(tree))
    assert result.code == 4 and "is a work tree of demo (branch giftbox/demo), not of other" \
        in result.err

    git(tree, "reset", "-q", "--hard", "giftbox-upstream~1")
    result = giftbox("patches", "export", "demo", "--from", str(tree))
    assert result.code == 4 and "does not contain giftbox-upstream" in result.err
    assert snapshot(root) == before


# --- check -----------------------------------------------------------------------------------


def test_check_reports_each_patch(root: Path, giftbox, tmp_path: Path) -> None:
    up = make_upstream(tmp_path / "up")
    _tree, names = make_series(root, up, giftbox, tmp_path)
    result = giftbox("patches", "check", "demo")
    assert result.code == 0, result.out + result.err
    assert result.out.count(": applies\n") == 3

    shas = evolve_upstream(up)
    # Upstream touched the greeting again after merging it: the reverse no longer applies,
    # only the patch-id finds the merge.
    up.commit("Document the greeting", file="demo.py",
              text=(up.path / "demo.py").read_text().replace(
                  '"""The demo project."""', '"""The demo project: it greets."""'))
    up.commit("Give the README a title", file="README", text="Demo\n====\n\n" + README)
    up.tag("2.1.0")
    spec = (root / "specs" / "demo.yaml").read_text()
    (root / "specs" / "demo.yaml").write_text(spec.replace("ref: 1.0.0", "ref: 2.1.0"))
    result = giftbox("patches", "check", "demo", "--json")
    assert result.code == 4, result.out + result.err
    report = {p["name"]: p for p in json.loads(result.out)["projects"][0]["patches"]}
    merged = report[names[0]]
    assert merged["status"] == "already merged upstream"
    assert merged["upstream_commit"] == shas["merged"]
    assert report[names[1]]["status"] == "conflicts" and report[names[1]]["files"] == [
        "config.py"]
    assert report[names[2]]["status"] == "applies with offset"
    text = giftbox("patches", "check", "--all")
    assert text.code == 4 and "XX 0002-Tune-option-6-for-our-cloud.patch: conflicts" in text.out


# --- bump ------------------------------------------------------------------------------------


def test_bump_drops_merged_stops_on_conflict_and_continues(root: Path, giftbox,
                                                           tmp_path: Path) -> None:
    up = make_upstream(tmp_path / "up")
    _tree, names = make_series(root, up, giftbox, tmp_path)
    shas = evolve_upstream(up)
    before = snapshot(root)
    spec_before = before["specs/demo.yaml"].decode()

    result = giftbox("bump", "demo", "--ref", "2.0.0", "--no-lock")
    assert result.code == 4, result.out + result.err
    assert f"patch {names[1]} (2 of 3) conflicts with demo 2.0.0 in: config.py" in result.err
    assert "giftbox bump demo --continue" in result.err and "giftbox bump demo --abort" \
        in result.err
    assert f"drop {names[0]}: upstream has it as {shas['merged'][:12]}" in result.err
    work = root / "build" / "demo-bump"
    assert "<<<<<<<" in (work / "config.py").read_text()
    assert snapshot(root) == before  # nothing written until the bump is through

    # --continue with the markers still there is refused
    result = giftbox("bump", "demo", "--continue")
    assert result.code == 4 and "still has conflicts in config.py" in result.err

    (work / "config.py").write_text(CONFIG.replace("OPTION_6 = 6\n",
                                                   "OPTION_6 = 60  # tuned for our cloud\n"))
    result = giftbox("bump", "demo", "--continue", "--json")
    assert result.code == 0, result.out + result.err
    data = json.loads(result.out)
    assert [d["name"] for d in data["dropped"]] == [names[0]]
    assert data["dropped"][0]["upstream_commit"] == shas["merged"]
    assert data["kept"] == names[1:]
    assert data["stale_locks"] == [] and data["locks"] == []
    assert not work.exists()

    after = snapshot(root)
    # the merged patch is gone, the untouched one is byte-identical, the conflicting one
    # is refreshed against 2.0.0
    assert "patches/demo/" + names[0] not in after
    assert after["patches/demo/" + names[2]] == before["patches/demo/" + names[2]]
    refreshed = after["patches/demo/" + names[1]].decode()
    assert refreshed != before["patches/demo/" + names[1]].decode()
    assert "-OPTION_6 = 66\n+OPTION_6 = 60  # tuned for our cloud" in refreshed
    assert "From: Tuner <tune@example.org>" in refreshed
    # the spec: the ref changed in place, the series lost one line, every other byte kept
    spec_after = after["specs/demo.yaml"].decode()
    assert spec_after == spec_before.replace(
        "ref: 1.0.0   # the release we run", "ref: 2.0.0   # the release we run").replace(
        f"  - {names[0]}\n", "")
    # and the result builds: giftbox source applies the new series to 2.0.0
    assert giftbox("source", "demo", "--into", str(tmp_path / "check")).code == 0
    assert (tmp_path / "check" / "config.py").read_text().count("OPTION_6 = 60") == 1
    assert giftbox("patches", "check", "demo").code == 0


def test_bump_abort_restores_everything(root: Path, giftbox, tmp_path: Path) -> None:
    up = make_upstream(tmp_path / "up")
    make_series(root, up, giftbox, tmp_path)
    evolve_upstream(up)
    before = snapshot(root)
    assert giftbox("bump", "demo", "--ref", "2.0.0", "--no-lock").code == 4
    again = giftbox("bump", "demo", "--ref", "2.0.0", "--no-lock")
    assert again.code == 4 and "already in progress" in again.err and "--abort" in again.err
    result = giftbox("bump", "demo", "--abort")
    assert result.code == 0, result.err
    assert not (root / "build" / "demo-bump").exists()
    assert snapshot(root) == before
    assert giftbox("bump", "demo", "--abort").code == 4  # nothing left to abort


def test_bump_refuses_a_downgrade_unless_allowed(root: Path, giftbox, tmp_path: Path) -> None:
    up = make_upstream(tmp_path / "up")
    make_series(root, up, giftbox, tmp_path)
    up.commit("Prepare 0.9 maintenance", file="LATER")
    git(up.path, "tag", "-a", "0.9.0", "-m", "old line", "1.0.0~1")
    before = snapshot(root)
    result = giftbox("bump", "demo", "--ref", "0.9.0", "--no-lock")
    assert result.code == 3
    assert "0.9.0 (0.9.0) is older than the pinned 1.0.0 (1.0.0)" in result.err
    assert "--allow-downgrade" in result.err
    assert snapshot(root) == before and not (root / "build" / "demo-bump").exists()
    result = giftbox("bump", "demo", "--ref", "0.9.0", "--no-lock", "--allow-downgrade")
    # 0.9.0 has no README: the runbook patch cannot be carried there
    assert result.code == 4 and "0003-Point-operators-at-the-runbook.patch (3 of 3)" in result.err
    assert giftbox("bump", "demo", "--abort").code == 0


@pytest.mark.docker
def test_bump_regenerates_the_locks(root: Path, giftbox, tmp_path: Path) -> None:
    """A real bump without --no-lock: the lock is recompiled in the debian12 builder."""
    up = make_upstream(tmp_path / "up")
    make_series(root, up, giftbox, tmp_path)
    (up.path / "requirements.txt").write_text("six\n")
    up.commit("Depend on six", file="requirements.txt", text="six\n")
    up.tag("1.1.0")
    locks = root / "locks" / "demo"
    locks.mkdir(parents=True)
    (locks / "debian12-x86_64.txt").write_text("# an old lock\nsetuptools==1.0\n")
    before = snapshot(root)
    result = giftbox("bump", "demo", "--ref", "1.1.0", "--json")
    assert result.code == 0, result.out + result.err
    assert json.loads(result.out)["locks"] == ["locks/demo/debian12-x86_64.txt"]
    text = (locks / "debian12-x86_64.txt").read_text()
    assert text.startswith("# giftbox lock for demo on debian12/x86_64")
    pinned = {p.name: p.version for p in lock.pins(text)}
    constraints = (root / "constraints" / "upper-constraints-2026.1.txt").read_text()
    assert f"six==={pinned['six']}" in constraints or f"six=={pinned['six']}" in constraints
    after = snapshot(root)
    assert after["specs/demo.yaml"] != before["specs/demo.yaml"]
    assert all(after[k] == v for k, v in before.items() if k.startswith("patches/"))


# --- backport --------------------------------------------------------------------------------


def test_backport_adds_a_patch_with_provenance(root: Path, giftbox, tmp_path: Path) -> None:
    up = make_upstream(tmp_path / "up")
    _tree, names = make_series(root, up, giftbox, tmp_path)
    # a fix on master after our pin, and a Gerrit change only reachable from its change ref
    fix = up.commit("Fix option 11", file="config.py",
                    text=CONFIG.replace("OPTION_11 = 11", "OPTION_11 = 12"))
    git(up.path, "checkout", "-q", "--detach", "1.0.0")
    change = up.commit("Add a helper under review", file="helper.py", text="X = 1\n")
    git(up.path, "update-ref", "refs/changes/45/12345/2", change)
    git(up.path, "checkout", "-q", "master")

    result = giftbox("backport", "demo", fix[:12])
    assert result.code == 0, result.err
    new = "0004-Fix-option-11.patch"
    assert f"+ patches/demo/{new}" in result.out
    text = (root / "patches" / "demo" / new).read_text()
    assert f"(cherry picked from commit {fix})" in text
    assert "From: Upstream Dev <dev@upstream.org>" in text
    spec = (root / "specs" / "demo.yaml").read_text()
    assert f"  - {names[2]}\n  - {new}\n" in spec

    result = giftbox("backport", "demo", "refs/changes/45/12345/2", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["name"] == "0005-Add-a-helper-under-review.patch"
    assert data["upstream_commit"] == change
    assert giftbox("source", "demo", "--into", str(tmp_path / "all")).code == 0
    assert (tmp_path / "all" / "helper.py").is_file()


def test_backport_refuses_unknown_and_conflicting_commits(root: Path, giftbox,
                                                          tmp_path: Path) -> None:
    up = make_upstream(tmp_path / "up")
    make_series(root, up, giftbox, tmp_path)
    before = snapshot(root)
    result = giftbox("backport", "demo", "deadbeefdeadbeef")
    assert result.code == 3
    assert f"'deadbeefdeadbeef' is not a commit in the upstream repository {up.url}" in result.err
    assert "latest tags: 1.0.0" in result.err
    clash = up.commit("Set option 6 to 7", file="config.py",
                      text=CONFIG.replace("OPTION_6 = 6", "OPTION_6 = 7"))
    result = giftbox("backport", "demo", clash)
    assert result.code == 4
    assert "does not apply on top of demo's series: conflicts in config.py" in result.err
    assert snapshot(root) == before


# --- diff ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_diff_lists_exactly_what_changed(root: Path, giftbox, tmp_path: Path) -> None:
    up = make_upstream(tmp_path / "up")
    tree, names = make_series(root, up, giftbox, tmp_path)
    locks = root / "locks" / "demo"
    locks.mkdir(parents=True)
    (locks / "debian12-x86_64.txt").write_text(
        "# lock\nsix==1.16.0 \\\n    --hash=sha256:aa\nidna==3.6\nfoo==1.0\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "demo at 1.0.0")

    # touches config.py away from the tune patch's hunk: that patch changes (its index line)
    one = up.commit("Upstream fix one", file="config.py",
                    text=CONFIG.replace("OPTION_1 = 1\n", "OPTION_1 = 10\n"))
    two = up.commit("Upstream fix two", file="B")
    up.tag("1.1.0")
    shutil.rmtree(tree)
    assert giftbox("bump", "demo", "--ref", "1.1.0", "--no-lock").code == 0
    # then: drop the notes patch and add one
    tree = tmp_path / "again"
    assert giftbox("source", "demo", "--into", str(tree)).code == 0
    git(tree, "rebase", "-q", "--onto", "HEAD~1", "HEAD")
    commit_in(tree, "Also tune option 7", replace("config.py", "OPTION_7 = 7", "OPTION_7 = 70"))
    assert giftbox("patches", "export", "demo", "--from", str(tree)).code == 0
    (locks / "debian12-x86_64.txt").write_text(
        "# lock\nsix==1.17.0 \\\n    --hash=sha256:bb\nidna==3.6\nbar==2.0\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "demo at 1.1.0")

    result = giftbox("diff", "demo", "--spec-from", "HEAD~1", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert [c["commit"] for c in data["commits"]] == [two, one]
    assert data["commits_removed"] == []
    assert data["a"]["ref"] == "1.0.0" and data["b"]["ref"] == "1.1.0"
    assert data["a"]["upstream_version"] == "1.0.0" and data["b"]["upstream_version"] == "1.1.0"
    assert [p["name"] for p in data["patches"]["removed"]] == [names[2]]
    assert [p["name"] for p in data["patches"]["added"]] == ["0003-Also-tune-option-7.patch"]
    assert [p["name"] for p in data["patches"]["changed"]] == [names[1]]
    assert data["locks"] == {"debian12-x86_64.txt": {
        "added": {"bar": "2.0"}, "removed": {"foo": "1.0"},
        "changed": {"six": ["1.16.0", "1.17.0"]}}}
    old_v, new_v = data["versions"]["debian12"]
    assert old_v.startswith("1.0.0-1.3.g") and new_v.startswith("1.1.0-1.3.g")

    # two refs, one state of the tree: only the commits differ
    result = giftbox("diff", "demo", "1.0.0", "1.1.0")
    assert result.code == 0, result.err
    assert "upstream commits (2):" in result.out and "Upstream fix one" in result.out
    assert "patches (0 differ):" in result.out and "locks (0 differ):" in result.out
    backwards = json.loads(giftbox("diff", "demo", "1.1.0", "1.0.0", "--json").out)
    assert backwards["commits"] == [] and len(backwards["commits_removed"]) == 2
    missing = giftbox("diff", "demo", "--spec-from", "no-such-rev")
    assert missing.code == 3 and "'no-such-rev' is not a commit of the giftbox repository" \
        in missing.err


def test_export_of_a_quilt_series_keeps_the_series_file(root: Path, giftbox,
                                                        tmp_path: Path) -> None:
    """A project listing its patches in patches/<p>/series: the series file is what changes,
    and a plain DEP-3 diff comes back as a format-patch file with its author and message."""
    up = make_upstream(tmp_path / "up")
    write_spec(root, "demo", spec_text(up.url, "1.0.0", None))
    folder = root / "patches" / "demo"
    folder.mkdir()
    (folder / "series").write_text("# quilt series for demo\nnotes.diff\n")
    (folder / "notes.diff").write_text(
        "Description: Point operators at the runbook\nAuthor: Ops Person <ops@example.org>\n\n"
        "--- a/README\n+++ b/README\n@@ -5,3 +5,5 @@ It greets.\n It is small.\n \n"
        " It is tested.\n+\n+Operators: see our runbook.\n")
    spec_before = (root / "specs" / "demo.yaml").read_bytes()
    tree = tmp_path / "work"
    assert giftbox("source", "demo", "--into", str(tree)).code == 0
    result = giftbox("patches", "export", "demo", "--from", str(tree))
    assert result.code == 0, result.err
    assert (root / "specs" / "demo.yaml").read_bytes() == spec_before
    assert (folder / "series").read_text() == ("# quilt series for demo\n"
                                               "0001-Point-operators-at-the-runbook.patch\n")
    assert not (folder / "notes.diff").exists()
    text = (folder / "0001-Point-operators-at-the-runbook.patch").read_text()
    assert "From: Ops Person <ops@example.org>" in text and "giftbox-patch" not in text
    assert "Subject: [PATCH] Point operators at the runbook\n---\n README | 2 ++\n" in text
    assert giftbox("patches", "check", "demo").code == 0
