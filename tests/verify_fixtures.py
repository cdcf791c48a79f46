"""Small giftbox-shaped packages for the verify and SBOM tests: a real .deb (dpkg-deb) with a
venv-root manifest and lock like giftbox build writes, a script in /usr/bin and a conffile,
and the spec that describes it. Seconds to make, where a real build takes minutes."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

from plumbum import local

LOCK = """\
# giftbox lock for hello on debian12/x86_64 (Python 3.11), release 2026.1.
idna==3.7 \\
    --hash=sha256:028ff3aadf0609c1fd278d8ea3089299412a7a8b9bd005dd08b9f8285bcb5cfc \\
    --hash=sha256:82fee1fc78add43492d3a1898bfa6d8a904cc97d8427f683ed8e798d07761aa0
    # via requests
requests[socks]==2.32.3 \\
    --hash=sha256:70761cfe03c773ceb22aa2f671b4757976145175cdfca038c02654d061d6dcc6
"""
# requests 2.19.1 has published advisories (e.g. PYSEC-2018-28, CVE-2018-18074).
VULNERABLE_LOCK = """\
requests==2.19.1 \\
    --hash=sha256:63b52e3c866428a224f97cab011de738c36aec0185aa91cfacd418b5d58911d1
"""


def make_giftbox_deb(out: Path, *, name: str = "giftbox-hello", version: str = "1.0-1~deb12",
                     lock: str = LOCK, depends: str = "sudo, python3 (>= 3.11)",
                     message: str = "hello", prefix: str = "/opt/giftbox-hello") -> Path:
    tree = out / f"deb-{name}-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    root = tree / prefix.lstrip("/")
    root.mkdir(parents=True)
    (tree / "usr" / "bin").mkdir(parents=True)
    (tree / "etc" / "hello").mkdir(parents=True)
    manifest = {
        "project": "hello", "package_name": name, "upstream_kind": "pypi",
        "upstream_url": "https://files.example.invalid/hello-1.0.tar.gz",
        "upstream_ref": "1.0", "upstream_commit": "ab" * 20, "upstream_version": "1.0",
        "upstream_sha256": "cd" * 32,
        "patches": [{"name": "0001-Say-hello.patch", "sha256": "ef" * 32,
                     "subject": "Say hello"}],
        "patch_digest": "01" * 32, "source_commit": "23" * 20, "lock_digest": "45" * 32,
        "builder_image": "sha256:" + "67" * 32, "distro": "debian12", "family": "deb",
        "arch": "x86_64", "python": "3.11", "prefix": prefix, "version": {},
        "source_date_epoch": 1767225600}
    (root / "giftbox-manifest.json").write_text(json.dumps(manifest, indent=2))
    (root / "giftbox-lock.txt").write_text(lock)
    script = tree / "usr" / "bin" / name
    script.write_text(f"#!/bin/sh\necho '{message}'\n")
    script.chmod(0o755)
    (tree / "etc" / "hello" / "hello.conf").write_text(f"[DEFAULT]\ngreeting = {message}\n")
    (tree / "DEBIAN" / "conffiles").write_text("/etc/hello/hello.conf\n")
    (tree / "DEBIAN" / "control").write_text(textwrap.dedent(f"""\
        Package: {name}
        Version: {version}
        Architecture: all
        Maintainer: giftbox tests <tests@giftbox.invalid>
        Depends: {depends}
        Section: misc
        Priority: optional
        Description: giftbox verify test package
         Prints a greeting; built by tests/verify_fixtures.py.
        """))
    deb = out / f"{name}_{version}_all.deb"
    local["dpkg-deb"]["-Zxz", "--root-owner-group", "--build", str(tree), str(deb)].run()
    shutil.rmtree(tree)
    return deb


def hello_spec(root: Path, verify: str) -> Path:
    """specs/hello.yaml (valid for the spec validator) with the given ``verify:`` body."""
    (root / "constraints").mkdir(exist_ok=True)
    (root / "constraints" / "uc.txt").write_text("idna===3.7\n")
    (root / "files" / "hello").mkdir(parents=True, exist_ok=True)
    (root / "files" / "hello" / "hello.conf").write_text("[DEFAULT]\n")
    path = root / "specs" / "hello.yaml"
    path.write_text(textwrap.dedent("""\
        name: hello
        release: "2026.1"
        constraints: constraints/uc.txt
        upstream:
          use: pypi
          pypi: {name: hello, version: "1.0", sha256: %s}
        package:
          name: giftbox-hello
          prefix: /opt/giftbox-hello
          entry_points: [giftbox-hello]
          config_files: [{path: /etc/hello/hello.conf, source: hello.conf}]
        matrix: {distros: [debian12], arches: [x86_64]}
        """) % ("cd" * 32) + verify)
    return path
