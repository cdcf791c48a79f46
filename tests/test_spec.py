"""Spec validation: every bad input is named with file:line, field and a hint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO, git_spec, write_spec

from giftbox.distros import load_distros
from giftbox.errors import SpecError
from giftbox.spec import find_spec, load_spec

GOOD = git_spec("demo", "https://opendev.org/openstack/demo.git", "1.0.0")


def problems_of(root: Path, body: str, name: str = "demo") -> list[str]:
    path = write_spec(root, name, body)
    with pytest.raises(SpecError) as info:
        load_spec(path, root, frozenset(load_distros(root / "builders")))
    return [p.render() for p in info.value.problems]


def test_shipped_specs_validate(giftbox) -> None:
    result = giftbox("spec", "validate", "--all", "--json", env={"GIFTBOX_ROOT": str(REPO)})
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["ok"] is True
    assert {s["project"] for s in report["specs"]} >= {"nova", "keystone",
                                                       "python-openstackclient"}


def test_nova_spec_values() -> None:
    spec = find_spec(REPO, "nova")
    assert spec.pypi is not None and spec.pypi.version == "33.0.0"
    assert spec.git is not None and spec.git.url.startswith("https://opendev.org/")
    assert spec.package.name == "giftbox-nova"
    assert spec.package.system_bindings[0].packages["deb"] == "python3-libvirt"
    assert [p.name for p in spec.patches] == ["0001-Report-giftbox-as-vendor-and-package.patch"]
    assert spec.package.config_files[0].source.is_file()


def test_good_spec_loads_with_defaults(root: Path) -> None:
    path = write_spec(root, "demo", GOOD)
    spec = load_spec(path, root)
    assert spec.package.name == "giftbox-demo"
    assert spec.package.release == 1
    assert spec.patches == ()


def test_invalid_yaml_names_the_line(root: Path) -> None:
    body = GOOD.replace("  use: git\n", "  use: git\n   bad: [unclosed\n")
    (problem,) = problems_of(root, body)
    assert problem.startswith("specs/demo.yaml:6:") or problem.startswith("specs/demo.yaml:7:")
    assert "invalid YAML" in problem


def test_misspelt_field_gets_did_you_mean(root: Path) -> None:
    body = GOOD + "requirments:\n  - pymemcache\n"
    (problem,) = problems_of(root, body)
    line = GOOD.count("\n") + 1
    assert problem.startswith(f"specs/demo.yaml:{line}: requirments: unknown field")
    assert "did you mean 'requirements'?" in problem


def test_every_problem_is_reported_at_once(root: Path) -> None:
    body = (GOOD.replace("ref: 1.0.0", "ref: 1.0..0")
            .replace("prefix: /opt/openstack/demo", "prefix: /home/demo")
            .replace("arches: [x86_64]", "arches: [x86_64, sparc]")
            .replace("distros: [debian12]", "distros: [debain12]"))
    problems = problems_of(root, body)
    text = "\n".join(problems)
    assert len(problems) == 4, text
    assert "upstream.git.ref: '1.0..0' is not a valid git ref" in text
    assert "package.prefix: '/home/demo' is outside /opt, /usr/lib, /srv" in text
    assert "matrix.arches[1]: 'sparc' is not a known architecture" in text
    assert "matrix.distros[0]: 'debain12' is not a defined builder" in text


def test_missing_required_and_unquoted_release(root: Path) -> None:
    body = GOOD.replace('release: "2026.1"', "release: 2026.1").replace(
        "constraints: constraints/upper-constraints-2026.1.txt\n", "")
    text = "\n".join(problems_of(root, body))
    assert "release: must be quoted" in text
    assert "constraints: is required but missing" in text


def test_name_must_match_file(root: Path) -> None:
    (problem,) = problems_of(root, GOOD, name="other")
    assert "specs/other.yaml:1: name: 'demo'" in problem and "must agree" in problem


def test_duplicate_key(root: Path) -> None:
    (problem,) = problems_of(root, GOOD + "name: demo\n")
    assert "name: appears twice (first at line 1)" in problem


@pytest.mark.parametrize("url, message", [
    ("ext::sh -c touch% /tmp/pwned", "remote-helper transport"),
    ("fd::17", "remote-helper transport"),
    ("-uhello", "must not start with '-'"),
    ("ftp://example.org/repo.git", "scheme 'ftp' is not allowed"),
    ("https://user:secret@example.org/repo.git", "carries a password"),
    ("https:///nohost.git", "names no host"),
])
def test_dangerous_git_urls_are_refused(root: Path, url: str, message: str) -> None:
    body = GOOD.replace("https://opendev.org/openstack/demo.git", f"'{url}'")
    (problem,) = problems_of(root, body)
    assert "upstream.git.url" in problem and message in problem
    assert "secret" not in problem or "carries a password" in problem


@pytest.mark.parametrize("ref", ["--upload-pack=evil", "a b", "x..y", "refs/changes/1/2",
                                 "feature/", "x.lock", "HEAD@{1}", "~1"])
def test_bad_refs_are_refused(root: Path, ref: str) -> None:
    body = GOOD.replace("ref: 1.0.0", f"ref: '{ref}'")
    (problem,) = problems_of(root, body)
    assert "upstream.git.ref" in problem


@pytest.mark.parametrize("ref", ["1.0.0", "stable/2026.1", "refs/changes/45/123445/3",
                                 "0123abcd", "master"])
def test_good_refs_are_accepted(root: Path, ref: str) -> None:
    path = write_spec(root, "demo", GOOD.replace("ref: 1.0.0", f"ref: '{ref}'"))
    assert load_spec(path, root).git.ref == ref  # type: ignore[union-attr]


@pytest.mark.parametrize("name, message", [
    ("../../../etc/passwd", "plain file names inside patches/demo/"),
    ("sub/dir.patch", "plain file names inside patches/demo/"),
    ("missing.patch", "patches/demo/missing.patch does not exist"),
])
def test_patch_names_stay_inside_the_series(root: Path, name: str, message: str) -> None:
    body = git_spec("demo", "https://opendev.org/x/demo.git", "1.0.0", patches=[name])
    (problem,) = problems_of(root, body)
    assert "patches[0]" in problem and message in problem


def test_symlinked_patch_escaping_is_refused(root: Path, tmp_path: Path) -> None:
    (root / "patches" / "demo").mkdir()
    outside = tmp_path / "outside.patch"
    outside.write_text("x")
    (root / "patches" / "demo" / "link.patch").symlink_to(outside)
    body = git_spec("demo", "https://opendev.org/x/demo.git", "1.0.0", patches=["link.patch"])
    (problem,) = problems_of(root, body)
    assert "escapes patches/demo/" in problem


def test_series_file_is_used_and_checked(root: Path) -> None:
    folder = root / "patches" / "demo"
    folder.mkdir()
    (folder / "a.patch").write_text("x")
    (folder / "series").write_text("# quilt series\na.patch\n../evil.patch -p1\n")
    path = write_spec(root, "demo", GOOD)
    with pytest.raises(SpecError) as info:
        load_spec(path, root)
    (problem,) = info.value.problems
    assert problem.render().startswith("patches/demo/series:3: '../evil.patch'")
    (folder / "series").write_text("a.patch\n")
    assert [p.name for p in load_spec(path, root).patches] == ["a.patch"]


def test_requirements_refuse_pip_options(root: Path) -> None:
    body = GOOD + "requirements:\n  - --index-url=https://evil.example/simple\n  - 'ok>=1'\n"
    (problem,) = problems_of(root, body)
    assert "requirements[0]" in problem and "pip options are not allowed" in problem


def test_use_must_name_a_present_section(root: Path) -> None:
    (problem,) = problems_of(root, GOOD.replace("use: git", "use: pypi"))
    assert "upstream.use: is 'pypi' but there is no upstream.pypi section" in problem


def test_cli_validate_reports_and_exits_nonzero(root: Path, giftbox) -> None:
    write_spec(root, "demo", GOOD + "requirments: []\n")
    write_spec(root, "fine", GOOD.replace("name: demo", "name: fine"))
    result = giftbox("spec", "validate", "--all")
    assert result.code == 2
    assert "ok    specs/fine.yaml" in result.out
    assert "specs/demo.yaml:" in result.err and "did you mean 'requirements'" in result.err
    assert "Traceback" not in result.err
    as_json = giftbox("spec", "validate", "demo", "--json")
    assert as_json.code == 2
    payload = json.loads(as_json.out.split("\n}\n")[0] + "\n}")
    assert payload["specs"][0]["problems"][0]["field"] == "requirments"


def test_unknown_project_suggests(root: Path, giftbox) -> None:
    write_spec(root, "demo", GOOD)
    result = giftbox("source", "dmeo")
    assert result.code == 2
    assert "no spec for project 'dmeo'" in result.err and "did you mean 'demo'" in result.err


def test_two_specs_installing_the_same_file_are_refused(root: Path, giftbox) -> None:
    write_spec(root, "demo", GOOD)
    write_spec(root, "other", GOOD.replace("name: demo", "name: other").replace(
        "prefix: /opt/openstack/demo", "prefix: /opt/openstack/other"))
    assert giftbox("spec", "validate", "--all").code == 0
    write_spec(root, "other", GOOD.replace("name: demo", "name: other").replace(
        "prefix: /opt/openstack/demo", "prefix: /opt/openstack/demo/sub"))
    result = giftbox("spec", "validate", "--all")
    assert result.code == 7
    assert "specs/demo.yaml" in result.err and "specs/other.yaml" in result.err


def test_a_verify_database_is_configured_whole_or_created_only(root: Path) -> None:
    # nova_cell0's URL is derived by nova itself: a database may name no file, section and
    # option, but never some of them (the check would not know where its URL goes).
    verify = ("verify:\n  migrate:\n    databases:\n"
              "      - {name: app, file: /etc/demo/demo.conf.d/50-v.conf, section: database,"
              " option: connection}\n"
              "      - {name: app_cell0}\n"
              "    commands:\n      - [demo-manage, db, sync]\n")
    spec = load_spec(write_spec(root, "demo", GOOD + verify), root)
    assert [(d.name, d.file) for d in spec.verify.databases] == \
        [("app", "/etc/demo/demo.conf.d/50-v.conf"), ("app_cell0", "")]
    (problem,) = problems_of(root, GOOD + verify.replace("{name: app_cell0}",
                                                         "{name: app_cell0, section: x}"))
    assert "verify.migrate.databases[1]" in problem and "names section but not file, option" \
        in problem


def test_nova_spec_verifies_its_three_migration_steps() -> None:
    spec = find_spec(REPO, "nova")
    assert [c[1:] for c in spec.verify.migrate] == [("api_db", "sync"),
                                                   ("cell_v2", "map_cell0"), ("db", "sync")]
    assert {d.name for d in spec.verify.databases} == {"nova_api", "nova", "nova_cell0"}
