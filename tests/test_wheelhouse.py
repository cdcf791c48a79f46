"""The wheelhouse as an artifact: export (PEP 503 with hashes), import (checked against the
target's locks and tags, all or nothing), serve; the fill lock. No Docker: wheels are made here.

Docker-backed parts (a real ppc64le fill, an imported wheelhouse that leaves a build nothing
to compile) are in tests/test_ppc64le.py.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from giftbox import wheelhouse as wh
from giftbox.distros import Arch, get_distro
from giftbox.errors import BuildError
from giftbox.settings import Settings

RELEASE = "2026.1"


def make_wheel(folder: Path, name: str, version: str, tag: str, payload: str = "") -> Path:
    """A real, installable wheel: one module and its dist-info."""
    filename = f"{name}-{version}-{tag}.whl"
    path = folder / filename
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}.py": f"VALUE = {payload!r}\n",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              f"Tag: {tag}\n"}
    record = "".join(f"{n},,\n" for n in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as archive:
        for n, text in sorted(files.items()):
            archive.writestr(zipfile.ZipInfo(n, (2020, 1, 1, 0, 0, 0)), text)
        archive.writestr(zipfile.ZipInfo(f"{dist}/RECORD", (2020, 1, 1, 0, 0, 0)), record)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_lock(root: Path, project: str, target: str, pins: dict[str, list[str]]) -> Path:
    path = root / "locks" / project / f"{target}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{pin} \\\n" + " \\\n".join(f"    --hash=sha256:{h}" for h in hashes) + "\n"
                   for pin, hashes in pins.items())
    path.write_text(f"# giftbox lock for {project} on {target.replace('-', '/')} (Python 3.11), "
                    f"release {RELEASE}.\n# inputs: sha256:{'0' * 64}\n{body}")
    return path


@pytest.fixture
def made(root: Path, settings: Settings, tmp_path: Path):
    """A filled debian12/ppc64le wheelhouse: two wheels from the index (their hashes locked)
    and one built from a locked sdist (its own hash cannot be in the lock)."""
    target = wh.Target(RELEASE, get_distro(settings.builders_dir, "debian12"), Arch.ppc64le)
    house = wh.directory(settings, target)
    house.mkdir(parents=True)
    pure = make_wheel(house, "purelib", "1.0", "py3-none-any")
    native = make_wheel(house, "fastthing", "2.0", "cp311-cp311-manylinux_2_17_ppc64le")
    built = make_wheel(house, "fromsdist", "3.0", "cp311-cp311-linux_ppc64le")
    sdist_hash = "a" * 64
    # nova pins two of them; keystone pins the built one: one wheelhouse serves both projects.
    write_lock(root, "nova", "debian12-ppc64le",
               {"purelib==1.0": [sha(pure)], "fastthing==2.0": [sha(native), "b" * 64]})
    write_lock(root, "keystone", "debian12-ppc64le",
               {"fromsdist==3.0": [sdist_hash], "purelib==1.0": [sha(pure)]})
    return target, {"pure": pure, "native": native, "built": built}


def export_to(settings: Settings, target: wh.Target, dest: Path) -> dict:
    result = wh.export(settings, target, dest)
    assert result.wheels == 3 and result.built == 1, result
    return json.loads((dest / wh.MANIFEST).read_text())


def fresh_settings(root: Path, tmp_path: Path, name: str) -> Settings:
    import os

    return Settings.resolve(root=root, env=dict(os.environ, GIFTBOX_CACHE=str(tmp_path / name)))


def test_export_is_a_pep503_index_pip_installs_from(made, settings: Settings, tmp_path: Path):
    target, wheels = made
    dest = tmp_path / "export"
    manifest = export_to(settings, target, dest)
    assert manifest["target"]["arch"] == "ppc64le" and manifest["target"]["abi"] == "cp311"
    entry = manifest["wheels"][wheels["built"].name]
    assert entry["origin"] == "built" and entry["source_sha256"] == ["a" * 64]
    assert manifest["wheels"][wheels["pure"].name]["origin"] == "index"
    page = (dest / "simple" / "purelib" / "index.html").read_text()
    assert f"#sha256={sha(wheels['pure'])}" in page
    # Real pip reads it as an index and checks the hash it names.
    got = tmp_path / "got"
    req = tmp_path / "req.txt"
    req.write_text(f"purelib==1.0 --hash=sha256:{sha(wheels['pure'])}\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--isolated",
                           "--index-url", (dest / "simple").as_uri(), "--dest", str(got),
                           "-r", str(req), "--no-cache-dir", "--disable-pip-version-check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (got / wheels["pure"].name).read_bytes() == wheels["pure"].read_bytes()
    # Never merged into an existing export.
    with pytest.raises(BuildError, match="not empty"):
        wh.export(settings, target, dest)


def test_import_into_an_empty_cache_then_again(made, root: Path, settings: Settings,
                                               tmp_path: Path):
    target, wheels = made
    export_to(settings, target, tmp_path / "export")
    other = fresh_settings(root, tmp_path, "other-cache")
    result = wh.import_(other, target, str(tmp_path / "export"))
    assert sorted(result.added) == sorted(w.name for w in wheels.values())
    for w in wheels.values():
        assert (wh.directory(other, target) / w.name).read_bytes() == w.read_bytes()
    again = wh.import_(other, target, str(tmp_path / "export"))
    assert again.added == [] and len(again.present) == 3


def _assert_refused(settings: Settings, target: wh.Target, source: Path, match: str) -> None:
    with pytest.raises(BuildError, match=match) as info:
        wh.import_(settings, target, str(source))
    assert "nothing was imported" in info.value.render()
    assert not list(wh.directory(settings, target).glob("*.whl"))


def test_import_refuses_a_wheel_whose_hash_is_not_in_the_lock(made, root, settings, tmp_path):
    target, wheels = made
    dest = tmp_path / "export"
    export_to(settings, target, dest)
    # Same name and version, other bytes: a wheel nobody locked.
    rogue = make_wheel(tmp_path, "purelib", "1.0", "py3-none-any", payload="rogue")
    shutil.copy2(rogue, dest / "files" / rogue.name)
    manifest = json.loads((dest / wh.MANIFEST).read_text())
    manifest["wheels"][rogue.name]["sha256"] = sha(rogue)
    (dest / wh.MANIFEST).write_text(json.dumps(manifest))
    other = fresh_settings(root, tmp_path, "other-cache")
    _assert_refused(other, target, dest, r"files/purelib-1\.0-py3-none-any\.whl refused: its "
                                         r"sha256 \w+ is not in the lock")


def test_import_refuses_a_tampered_file(made, root, settings, tmp_path):
    target, wheels = made
    dest = tmp_path / "export"
    export_to(settings, target, dest)
    with zipfile.ZipFile(dest / "files" / wheels["native"].name, "a") as archive:
        archive.writestr("extra.txt", "x")
    other = fresh_settings(root, tmp_path, "other-cache")
    _assert_refused(other, target, dest, rf"files/{wheels['native'].name} refused: its sha256")


def test_import_refuses_a_built_wheel_from_another_source(made, root, settings, tmp_path):
    target, wheels = made
    dest = tmp_path / "export"
    export_to(settings, target, dest)
    manifest = json.loads((dest / wh.MANIFEST).read_text())
    manifest["wheels"][wheels["built"].name]["source_sha256"] = ["c" * 64]
    (dest / wh.MANIFEST).write_text(json.dumps(manifest))
    other = fresh_settings(root, tmp_path, "other-cache")
    _assert_refused(other, target, dest, r"fromsdist-3\.0-cp311-cp311-linux_ppc64le\.whl "
                                         r"refused: .* not built from the source that lock pins")


@pytest.mark.parametrize("tag, why", [
    ("cp311-cp311-manylinux_2_17_x86_64", "another arch"),
    ("cp312-cp312-manylinux_2_17_ppc64le", "another Python ABI"),
    ("cp311-cp311-manylinux_2_39_ppc64le", "a newer glibc than bookworm's 2.36"),
    ("cp311-cp311-musllinux_1_2_ppc64le", "musl"),
])
def test_import_refuses_a_wheel_for_another_target(made, root, settings, tmp_path, tag, why):
    target, wheels = made
    dest = tmp_path / "export"
    export_to(settings, target, dest)
    foreign = make_wheel(dest / "files", "fastthing", "2.0", tag)
    manifest = json.loads((dest / wh.MANIFEST).read_text())
    manifest["wheels"][foreign.name] = {"sha256": sha(foreign), "origin": "index",
                                        "pin": "fastthing==2.0"}
    (dest / wh.MANIFEST).write_text(json.dumps(manifest))
    other = fresh_settings(root, tmp_path, "other-cache")
    _assert_refused(other, target, dest, rf"files/{foreign.name} refused: its tags")


def test_tags_that_fit():
    distro = get_distro(Path(__file__).resolve().parent.parent / "builders", "debian12")
    ppc = wh.Target(RELEASE, distro, Arch.ppc64le)
    for ok in ("x-1-py3-none-any.whl", "x-1-cp311-cp311-linux_ppc64le.whl",
               "x-1-cp39-abi3-manylinux2014_ppc64le.whl",
               "x-1-cp311-cp311-manylinux_2_17_ppc64le.manylinux2014_ppc64le.whl",
               "x-1-py2.py3-none-any.whl"):
        assert wh.incompatibility(ok, ppc) is None, ok
    for bad in ("x-1-cp311-cp311-linux_x86_64.whl", "x-1-cp313-abi3-linux_ppc64le.whl",
                "x-1-py2-none-any.whl", "x-1-pp310-pypy310_pp73-linux_ppc64le.whl"):
        assert wh.incompatibility(bad, ppc) is not None, bad


def test_serve_then_import_from_the_url(made, root, settings, tmp_path):
    target, wheels = made
    dest = tmp_path / "export"
    export_to(settings, target, dest)
    other = fresh_settings(root, tmp_path, "other-cache")
    with wh.serving(dest) as url:
        assert url.startswith("http://127.0.0.1:")
        result = wh.import_(other, target, url)
    assert len(result.added) == 3


def test_cli_export_import_and_a_refusal(made, giftbox, root, tmp_path):
    target, wheels = made
    out = giftbox("wheelhouse", "export", "--distro", "debian12", "--arch", "ppc64le",
                  str(tmp_path / "export"), "--json")
    assert out.code == 0, out.err
    assert json.loads(out.out)["built"] == 1
    # Into a target with no lock: refused before anything, naming the target.
    args = ("wheelhouse", "import", "--distro", "debian13", "--arch", "ppc64le",
            "--release", RELEASE, str(tmp_path / "export"))
    out = giftbox(*args)
    assert out.code == 6 and "Traceback" not in out.err
    assert "no lock for release 2026.1 on debian13/ppc64le" in out.err
    # With debian13's lock pinning the same wheels: Python 3.13 cannot load cp311 wheels.
    shutil.copy2(root / "locks" / "nova" / "debian12-ppc64le.txt",
                 root / "locks" / "nova" / "debian13-ppc64le.txt")
    out = giftbox(*args)
    assert out.code == 6 and "Traceback" not in out.err
    assert "files/fastthing-2.0-cp311-cp311-manylinux_2_17_ppc64le.whl refused: its tags" \
        in out.err.replace("\n", " ")


def _hold(path: str, seconds: float, started) -> None:
    with wh.filling(Path(path)):
        started.set()
        time.sleep(seconds)


def test_fill_lock_serializes_two_fillers(tmp_path: Path):
    house = tmp_path / "house"
    started = multiprocessing.Event()
    other = multiprocessing.Process(target=_hold, args=(str(house), 1.0, started))
    other.start()
    assert started.wait(10)
    t0 = time.monotonic()
    with wh.filling(house):
        waited = time.monotonic() - t0
    other.join()
    assert waited > 0.5  # the second filler waited for the first to finish


@pytest.mark.parametrize("output, said", [
    ("src/lxml/includes/etree_defs.h:14:10: fatal error: libxml/xmlversion.h: No such file or "
     "directory", "missing header libxml/xmlversion.h (Debian: libxml2-dev)"),
    ("error: failed to get `asn1` as a dependency of package `cryptography-rust v0.1.0`\n"
     "Caused by: download of config.json failed\n  [6] Could not resolve hostname (Could not "
     "resolve host: index.crates.io)", "crates.io is unreachable"),
    ("error: can't find Rust compiler", "no Rust toolchain"),
    ("error: package `bcrypt v0.1.0` cannot be built because it requires rustc 1.74 or newer",
     "rustc is too old (needs 1.74)"),
])
def test_diagnose_names_what_was_missing(output: str, said: str):
    assert said in (wh.diagnose(output) or "")


def test_toolchain_problems_named_before_compiling(settings: Settings):
    target = wh.Target(RELEASE, get_distro(settings.builders_dir, "debian12"), Arch.ppc64le)
    builds = [wh.SdistBuild("cryptography==43.0.3", "cryptography-43.0.3.tar.gz", True, False),
              wh.SdistBuild("vendored==1", "vendored-1.tar.gz", True, True),
              wh.SdistBuild("lxml==6.0.2", "lxml-6.0.2.tar.gz", False, False)]
    full = {"cc": True, "cargo": True, "rustc": "rustc 1.85.0", "crates": True}
    assert wh.toolchain_problems(builds, full, target) == {}
    offline = {**full, "crates": False, "crates_source": "index.crates.io: timed out"}
    problems = wh.toolchain_problems(builds, offline, target)
    assert list(problems) == ["cryptography==43.0.3"]
    assert "crates.io" in problems["cryptography==43.0.3"]
    no_rust = {**full, "cargo": False, "rustc": None}
    assert "no Rust toolchain" in wh.toolchain_problems(builds, no_rust, target)[
        "vendored==1"]
