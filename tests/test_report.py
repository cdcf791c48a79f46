"""``giftbox report``: a static page a person reads in a browser, checked in headless Chromium.

The state is made through the real interfaces, no builds needed: build records written with
the records API (a succeeded build, a failed one with a real log file), a real signed
channel holding real .deb files, a promotion recorded by ``giftbox promote``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import git_spec, write_spec
from repo_fixtures import (  # noqa: F401 - fixtures
    Tree,
    giftbox_cli,
    keyring_template,
    make_deb,
    need,
    tree,
)

from giftbox import records
from giftbox.repo import publish


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def history(tree: Tree, tmp_path: Path) -> Tree:  # noqa: F811 - the fixture
    """demo built on debian12/x86_64 (succeeded, published, promoted) and on debian12/ppc64le
    (failed, with its log); its packages in nightly and stable."""
    s = tree.settings
    up = tmp_path / "upstream"
    up.mkdir()
    (tree.root / "constraints").mkdir()
    (tree.root / "constraints" / "upper-constraints-2026.1.txt").write_text("")
    write_spec(tree.root, "demo", git_spec("demo", f"file://{up}", "1.0.0").replace(
        "arches: [x86_64]", "arches: [x86_64, ppc64le]").replace(
        "  prefix: /opt/openstack/demo", "  prefix: /opt/openstack/demo\n  name: giftbox-hello"))
    debs = tmp_path / "debs"
    debs.mkdir()
    old = make_deb(debs, version="1.0.0-1~deb12", arch="amd64")
    new = make_deb(debs, version="1.0.1~dev2-1~deb12", arch="amd64")
    publish("nightly", [old, new], s)
    publish("stable", [old], s)
    with records.open_records(s) as db:
        ok = db.start_build("demo", "debian12", "x86_64", version="1.0.1~dev2-1~deb12",
                            log_path=str(tmp_path / "ok.log"))
        db.finish_build(ok, "succeeded")
        log = tmp_path / "failed-build.log"
        log.write_text("==> wheel: build demo with build\ngcc: error: _speed.c: boom\n")
        bad = db.start_build("demo", "debian12", "ppc64le", version="1.0.1~dev2-1~deb12",
                             log_path=str(log))
        db.finish_build(bad, "failed", error="building demo's wheel failed:\ngcc: boom")
        db.record_promotion(kind="promote", project="demo", from_channel="nightly",
                            to_channel="stable", digests=["0" * 64],
                            filenames=[old.name], version="1.0.0-1~deb12",
                            reason="passed staging")
    return tree


def test_report_shows_matrix_channels_promotions_and_failed_logs(history: Tree,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "site"
    cmd = giftbox_cli(history, "report", "--output", str(out), "--offline")
    code, stdout, stderr = cmd.run(retcode=None)
    assert code == 0, stderr
    page = out / "index.html"
    assert stdout.strip() == str(page)
    dom = chromium(page, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    html = dom.stdout
    row = html.split('data-project="demo"')[1].split("</tr>")[0]
    failed = row.split('data-target="debian12/ppc64le"')[1].split("</td>")[0]
    ok = row.split('data-target="debian12/x86_64"')[1].split("</td>")[0]
    assert "failed" in failed and "building demo's wheel failed" in failed
    assert "succeeded" in ok and "1.0.1~dev2-1~deb12" in ok
    link = failed.split('href="')[1].split('"')[0]
    assert not link.startswith("/") and (out / link).is_file()  # relative: works offline
    assert "gcc: error: _speed.c: boom" in (out / link).read_text()
    channels = html.split('id="channels"')[1].split("</table>")[0]
    nightly = channels.split('data-channel="nightly"')[1].split("</td>")[0]
    stable = channels.split('data-channel="stable"')[1].split("</td>")[0]
    assert "1.0.1~dev2-1~deb12" in nightly and "1.0.0-1~deb12" in stable
    promotions = html.split('id="promotions"')[1].split("</table>")[0]
    assert "nightly → stable" in promotions and "passed staging" in promotions
    # What a person sees: the page renders, and has colour (not a blank or broken page).
    shot = tmp_path / "report.png"
    rendered = chromium(page, tmp_path / "profile", f"--screenshot={shot}",
                        "--window-size=1200,900", "--hide-scrollbars")
    assert rendered.returncode == 0 and shot.stat().st_size > 5000, rendered.stderr
    assert "<script" not in page.read_text()  # static: no JS


def test_report_directory_not_writable(history: Tree, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    code, out, err = giftbox_cli(history, "report", "--output", str(blocker / "site"),
                                 "--offline").run(retcode=None)
    assert code == 1
    assert f"cannot write the report to {blocker / 'site'}" in err
    assert "Traceback" not in err
