"""Build benchmark, run on demand: prints figures, asserts nothing.

    python benchmarks/bench_build.py [--skip-cold] [--skip-ppc64le]

Measures, in one run on this machine:

* nova 33.0.0 for debian12/x86_64 to an audited venv:
  - cold: an empty giftbox cache (wheelhouse, pip caches, deps layer, wheel); the builder
    image present (its bootstrap is measured by `giftbox builder ensure`, not here);
  - warm: wheelhouse, deps layer and wheel cached, the build directory gone;
  - no-change rebuild: everything unchanged (a cache hit);
* beside it, a plain `pip install nova==33.0.0 -c upper-constraints` into a fresh venv on the
  host (pip's cache warm after its first run), and the same with uv when uv is installed;
* a small project with a C extension (demo-ext, the tests' own, made on the fly) for
  debian12 x86_64 and ppc64le, same inputs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def giftbox(root: Path, cache: Path, *args: str) -> float:
    env = dict(os.environ, GIFTBOX_ROOT=str(root), GIFTBOX_CACHE=str(cache))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "giftbox", *args], env=env,
                          capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"giftbox {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return elapsed


def tree_for(base: Path, projects: list[str]) -> Path:
    root = base / "tree"
    for sub in ("builders", "constraints"):
        shutil.copytree(REPO / sub, root / sub)
    shutil.copy(REPO / "channels.yaml", root / "channels.yaml")
    (root / "specs").mkdir()
    for project in projects:
        shutil.copy(REPO / "specs" / f"{project}.yaml", root / "specs")
        for sub in ("patches", "files", "locks"):
            if (REPO / sub / project).is_dir():
                shutil.copytree(REPO / sub / project, root / sub / project)
    return root


def host_pip(base: Path, constraints: Path, installer: list[str]) -> float:
    venv = base / f"venv-{installer[0]}"
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    start = time.monotonic()
    if installer[0] == "uv":
        argv = ["uv", "pip", "install", "--python", str(venv / "bin" / "python")]
    else:
        argv = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    # pip's own constraints: nova's line is not in upper-constraints, so it can be pinned here.
    subprocess.run([*argv, "nova==33.0.0", "-c", str(constraints)], check=True,
                   capture_output=True)
    return time.monotonic() - start


def row(name: str, seconds: float, note: str = "") -> None:
    print(f"  {name:<58} {seconds:8.1f} s  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--skip-ppc64le", action="store_true")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="giftbox-bench-"))
    try:
        root = tree_for(base, ["nova"])
        cache = base / "cache"
        target = ["--distro", "debian12", "--arch", "x86_64", "--no-package"]
        print("nova 33.0.0, debian12/x86_64, to an audited venv")
        if not args.skip_cold:
            row("cold (empty giftbox cache, image present)",
                giftbox(root, cache, "build", "nova", *target))
        else:
            giftbox(root, cache, "build", "nova", *target)
        shutil.rmtree(root / "build")
        row("warm (wheelhouse, deps layer and wheel cached)",
            giftbox(root, cache, "build", "nova", *target))
        row("no-change rebuild (cache hit)", giftbox(root, cache, "build", "nova", *target))
        giftbox(root, cache, "keys", "init")
        row("package the built venv (.deb, zstd-3, dpkg-shlibdeps, lintian) and publish",
            giftbox(root, cache, "build", "nova", *target[:-1], "--publish", "nightly"))
        constraints = REPO / "constraints" / "upper-constraints-2026.1.txt"
        host_pip(base, constraints, ["pip"])  # warm pip's cache, as the figure was
        row("host: pip install nova -c upper-constraints (warm pip cache)",
            host_pip(base, constraints, ["pip"]))
        if shutil.which("uv"):
            host_pip(base, constraints, ["uv"])
            row("host: uv pip install nova -c upper-constraints (warm)",
                host_pip(base, constraints, ["uv"]))
        else:
            print("  (uv is not installed on the host: `pip install uv` to compare)")

        from test_build import demo_upstream  # the tests' real project with a C extension

        up = demo_upstream(base / "demo-ext")
        body = "\n".join([
            "name: demo-ext", 'release: "2026.1"',
            "constraints: constraints/upper-constraints-2026.1.txt",
            "upstream:", "  use: git", "  git:", f"    url: {up.url}", "    ref: 1.0.0",
            "package:", "  prefix: /opt/openstack/demo-ext",
            "matrix:", "  distros: [debian12]", "  arches: [x86_64, ppc64le]", ""])
        (root / "specs" / "demo-ext.yaml").write_text(body)
        print("demo-ext (a C extension + six), debian12: lock, then build from a cold layer")
        arches = ["x86_64"] if args.skip_ppc64le else ["x86_64", "ppc64le"]
        for arch in arches:
            lock = giftbox(root, cache, "lock", "demo-ext", "--distro", "debian12",
                           "--arch", arch)
            built = giftbox(root, cache, "build", "demo-ext", "--distro", "debian12",
                            "--arch", arch, "--no-package")
            row(f"{arch}: lock (pip-compile in the builder)", lock)
            row(f"{arch}: build to an audited venv", built)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
