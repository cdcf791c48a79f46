"""Build benchmark, run on demand: prints figures, asserts nothing.

    python3 benchmarks/bench_build.py [--rounds 2] [--small-rounds 2] [--skip-nova]
                                      [--skip-small] [--skip-all]

Three measurements, each alternating A B A B so that the machine's drift hits both sides:

* nova 33.0.0 + its patch series + a new patch each round, debian12/x86_64, to a signed
  package in the nightly channel: **A** ``giftbox build nova --publish nightly`` warm (deps
  layer, wheelhouse and builder image cached; the new patch makes a new source commit),
  then the same command again (no change: a cache hit); **B** Debian's dh-virtualenv on the
  same sdist, patches, upper-constraints and extras, ``debuild -b`` (which runs lintian, as a
  Debian packager would) in a Debian 12 container made from giftbox's bootstrapped base
  image, pip's cache kept between rounds (warm after the first);
* the same for a small project (demo-ext: a C extension, a console script, six);
* ``giftbox build --all`` over the shipped specs' debian12/x86_64 cells, warm (each cell's
  deps layer built once, untimed), a new build of every cell, with 1, 2 and 3 projects: how
  the total grows when projects share the wheelhouse and the builder.

Each giftbox stage is what the CLI reports ("<stage>: done in N s"); each dh-virtualenv stage
is timed from debuild's own output (dh_virtualenv, the other dh steps, lintian).
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
DHV_IMAGE = "giftbox-bench/dh-virtualenv:debian12"
DHV_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 LC_ALL=C.UTF-8
RUN apt-get update && apt-get install -y --no-install-recommends dh-virtualenv devscripts \
    lintian debhelper build-essential python3-dev python3-venv python3-pip python3-setuptools \
    libssl-dev libffi-dev libxml2-dev libxslt1-dev zlib1g-dev pkg-config git ca-certificates \
    fakeroot && apt-get clean && rm -rf /var/lib/apt/lists/*
"""
DONE_RE = re.compile(r"^\s+(.+?): done in ([\d.]+)s\s*$")
# giftbox's stage labels, grouped for the table
GROUPS = (("resolve", "resolve"), ("source", "source"), ("wheel", "wheel"),
          ("install", "install"), ("bytecode", "bytecode"),
          ("audit", "audit (tree; then scripts' wait)"),
          ("venv: link", "link deps layer"), ("apt-get", "apt-get update"),
          ("stage", "stage"), ("package", "package (xz blocks; lintian along)"),
          ("lintian", "lintian (the rest)"), ("publish", "publish"))


def row(name: str, *cells: str) -> None:
    print(f"  {name:<40}" + "".join(f"{c:>14}" for c in cells), flush=True)


def fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


# --- giftbox ------------------------------------------------------------------------------


def settle() -> None:
    """Write back what the last run left dirty before the next is timed: a dh-virtualenv
    round writes and removes gigabytes, and their writeback would otherwise land in the
    giftbox round after it (and the other way round). Both sides settle, untimed."""
    os.sync()


def giftbox(root: Path, cache: Path, *args: str) -> tuple[float, dict[str, float]]:
    env = dict(os.environ, GIFTBOX_ROOT=str(root), GIFTBOX_CACHE=str(cache))
    settle()
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "giftbox", *args], env=env, cwd=root,
                          capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"giftbox {' '.join(args)} failed:\n{proc.stdout[-3000:]}"
                         f"{proc.stderr[-3000:]}")
    stages: dict[str, float] = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        match = DONE_RE.match(line)
        if not match:
            continue
        label = match.group(1)
        group = next((name for prefix, name in GROUPS if label.startswith(prefix)), label)
        stages[group] = stages.get(group, 0.0) + float(match.group(2))
    return elapsed, stages


def tree_for(base: Path, projects: list[str]) -> Path:
    root = base / "tree"
    root.mkdir(parents=True)
    for sub in ("builders", "constraints"):
        shutil.copytree(REPO / sub, root / sub)
    shutil.copy(REPO / "channels.yaml", root / "channels.yaml")
    (root / "specs").mkdir()
    for project in projects:
        add_project(root, project)
    return root


def add_project(root: Path, project: str) -> None:
    shutil.copy(REPO / "specs" / f"{project}.yaml", root / "specs")
    for sub in ("patches", "files", "locks"):
        if (REPO / sub / project).is_dir():
            shutil.copytree(REPO / sub / project, root / sub / project, dirs_exist_ok=True)


def new_patch(root: Path, project: str, source: Path, rel: str, n: int) -> Path:
    """A plain diff appending a comment to ``rel`` (its text as ``source`` has it), added
    to the spec's series in place of the previous round's."""
    text = (source / rel).read_text()
    # a nonce: a patch never seen before, so no cache (the project's wheel) knows it
    after = text + f"# giftbox benchmark round {n} ({time.time_ns()})\n"
    diff = "".join(difflib.unified_diff(text.splitlines(True), after.splitlines(True),
                                        f"a/{rel}", f"b/{rel}"))
    patches = root / "patches" / project
    for old in patches.glob("9*-bench-round-*.patch"):
        old.unlink()
    patch = patches / f"9{n:03d}-bench-round-{n}.patch"
    patch.write_text(diff)
    spec = root / "specs" / f"{project}.yaml"
    lines = [line.replace("patches: []", "patches:") for line in
             spec.read_text().splitlines(True) if "-bench-round-" not in line]
    at = next(i for i, line in enumerate(lines) if line.startswith("patches:")) + 1
    while at < len(lines) and lines[at].startswith("  - "):
        at += 1
    lines.insert(at, f"  - {patch.name}\n")
    spec.write_text("".join(lines))
    return patch


# --- dh-virtualenv ------------------------------------------------------------------------


def dhv_image() -> None:
    if subprocess.run(["docker", "image", "inspect", DHV_IMAGE], capture_output=True,
                      check=False).returncode == 0:
        return
    base = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}",
                           "giftbox-base/debian12"], capture_output=True, text=True,
                          check=True).stdout.split()
    base = [b for b in base if ":x86_64-" in b]
    if not base:
        raise SystemExit("no giftbox-base/debian12 image: run `giftbox builder ensure "
                         "--distro debian12 --arch x86_64` first")
    with tempfile.TemporaryDirectory() as ctx:
        (Path(ctx) / "Dockerfile").write_text(DHV_DOCKERFILE)
        subprocess.run(["docker", "build", "--network", "host", "-q", "--build-arg",
                        f"BASE={base[0]}", "-t", DHV_IMAGE, ctx], check=True)


DEBIAN_RULES = """\
#!/usr/bin/make -f
export DH_VIRTUALENV_INSTALL_ROOT=/opt/openstack
export PBR_VERSION={version}
%:
\tdh $@ --with python-virtualenv

# dh_virtualenv installs the project; debhelper's own build system steps have nothing to do
override_dh_auto_clean override_dh_auto_configure override_dh_auto_build:
override_dh_auto_test override_dh_auto_install:

override_dh_virtualenv:
\tdh_virtualenv --builtin-venv --python /usr/bin/python3 \\
\t\t--requirements=giftbox-requirements.txt \\
\t\t--extra-pip-arg=--constraint=/build/constraints.txt \\
\t\t--extra-pip-arg=--progress-bar=off
"""


def dhv_source(work: Path, name: str, version: str, sdist_or_tree: Path,
               patches: list[Path], extras: list[str], constraints: str) -> Path:
    """The sdist (or source tree), patched, with a debian/ directory for dh-virtualenv."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    src = work / "src"
    if sdist_or_tree.is_file():
        with tarfile.open(sdist_or_tree) as tar:
            tar.extractall(work, filter="data")
        next(p for p in work.iterdir() if p.is_dir()).rename(src)
    else:
        shutil.copytree(sdist_or_tree, src, ignore=shutil.ignore_patterns(".git"))
    for patch in patches:
        subprocess.run(["git", "apply", "-p1", str(patch)], cwd=src, check=True)
    reqs = (src / "requirements.txt").read_text() if (src / "requirements.txt").is_file() \
        else ""
    (src / "giftbox-requirements.txt").write_text(reqs + "".join(f"{e}\n" for e in extras))
    (work / "constraints.txt").write_text(constraints)
    debian = src / "debian"
    (debian / "source").mkdir(parents=True)
    (debian / "source" / "format").write_text("3.0 (quilt)\n")
    (debian / "control").write_text(
        f"Source: {name}-dhv\nSection: net\nPriority: optional\n"
        "Maintainer: giftbox <giftbox@packages.invalid>\n"
        "Build-Depends: debhelper-compat (= 13), dh-virtualenv, python3-dev, python3-venv,"
        " libssl-dev, libffi-dev, pkg-config\nStandards-Version: 4.6.2\n\n"
        f"Package: {name}-dhv\nArchitecture: any\n"
        "Depends: ${shlibs:Depends}, ${misc:Depends}, python3.11\n"
        f"Description: {name} in a virtualenv, by dh-virtualenv\n"
        " The benchmark's side B.\n")
    (debian / "changelog").write_text(
        f"{name}-dhv ({version}-1) bookworm; urgency=medium\n\n  * Benchmark build.\n\n"
        " -- giftbox <giftbox@packages.invalid>  Tue, 01 Dec 2026 00:00:00 +0000\n")
    rules = debian / "rules"
    rules.write_text(DEBIAN_RULES.format(version=version))
    rules.chmod(0o755)
    return work


def dh_virtualenv(work: Path, pip_cache: Path,
                  wheelhouse: Path) -> tuple[float, dict[str, float]]:
    """debuild -b in the dh-virtualenv container; the wall time and per-stage times.

    pip in the container sees PyPI and, as find-links, giftbox's wheelhouse for the target
    (read-only): the same files side A installs (some pins, e.g. testresources 2.0.2, come
    from this host's extra indexes, which the container cannot read)."""
    pip_cache.mkdir(parents=True, exist_ok=True)
    # The host's CA bundle, as giftbox's builders get it (TLS-intercepting proxies).
    ca = next((p for p in ("/etc/ssl/certs/ca-certificates.crt",
                           "/etc/pki/tls/certs/ca-bundle.crt") if Path(p).is_file()), None)
    trust = ["-v", f"{ca}:/run/giftbox/ca-bundle.crt:ro"] + [
        f"--env={name}=/run/giftbox/ca-bundle.crt"
        for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")] if ca else []
    argv = ["docker", "run", "--rm", "--network", "host", "-v", f"{work}:/build",
            "-v", f"{pip_cache}:/root/.cache/pip", *trust,
            "-v", f"{wheelhouse}:/wheelhouse:ro", "--env=PIP_FIND_LINKS=/wheelhouse",
            "-w", "/build/src", DHV_IMAGE,
            # debuild clears the environment: keep the trust and index settings
            "debuild", "--no-conf", *(f"--preserve-envvar={v}" for v in
                                      ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
                                       "PIP_FIND_LINKS")),
            "-b", "-us", "-uc", "--lintian-opts", "--allow-root"]
    settle()
    start = time.monotonic()
    marks: list[tuple[float, str]] = [(start, "prepare")]
    tail: list[str] = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = (tail + [line])[-40:]
            now = time.monotonic()
            # dh prints each step indented, an override as "debian/rules override_dh_..."
            step = re.match(r"^\s+(?:debian/rules override_)?(dh_\w+)", line)
            if step:
                marks.append((now, step.group(1)))
            elif line.startswith("Now running lintian"):
                marks.append((now, "lintian"))
            elif line.startswith("Finished running lintian"):
                marks.append((now, "done"))
        code = proc.wait()
    end = time.monotonic()
    if code != 0 or not list(work.glob("*.deb")):
        raise SystemExit("dh-virtualenv build failed:\n" + "".join(tail))
    marks.append((end, "done"))
    stages: dict[str, float] = {}
    for (t0, name), (t1, _next) in zip(marks, marks[1:], strict=False):
        # a dh step of 5 s or more is a row of its own (dh_strip_nondeterminism, dh_shlibdeps
        # and dh_builddeb over a venv's 20,000 files); the quick ones are summed
        group = {"dh_virtualenv": "venv (dh_virtualenv: pip)", "lintian": "lintian",
                 "prepare": "docker run, dpkg-buildpackage"}.get(
            name, (name if t1 - t0 >= 5 else "other dh steps") if name != "done" else "")
        if group:
            stages[group] = stages.get(group, 0.0) + t1 - t0
    for deb in work.glob("*.deb"):
        deb.unlink()
    return end - start, stages


def wheelhouse(cache: Path) -> Path:
    """giftbox's wheelhouse of the benchmark's target (release 2026.1, debian12/x86_64)."""
    return cache / "wheelhouse" / "2026.1-debian12-x86_64-cp311"


# --- the comparisons ----------------------------------------------------------------------


def compare(title: str, rounds: int, run_a, run_b) -> None:  # type: ignore[no-untyped-def]
    print(f"\n{title}", flush=True)
    a_runs, b_runs, hits = [], [], []
    for n in range(1, rounds + 1):
        total, stages, hit = run_a(n)
        a_runs.append((total, stages))
        hits.append(hit)
        print(f"  round {n} A giftbox: {total:.1f} s; no change: {hit:.2f} s  ("
              + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()) + ")", flush=True)
        total_b, stages_b = run_b(n)
        b_runs.append((total_b, stages_b))
        print(f"  round {n} B dh-virtualenv: {total_b:.1f} s  ("
              + ", ".join(f"{k} {v:.1f}" for k, v in stages_b.items()) + ")", flush=True)
    for label, runs in (("A giftbox (warm, a new patch)", a_runs),
                        ("B dh-virtualenv + debuild -b", b_runs)):
        names = list(dict.fromkeys(k for _t, s in runs for k in s))
        row(label, *(f"round {i + 1}" for i in range(len(runs))))
        for name in names:
            row(f"  {name}", *(fmt(s.get(name)) for _t, s in runs))
        row("  wall clock", *(fmt(t) for t, _s in runs))
    row("A no-change rebuild (cache hit)", *(f"{h:.2f} s" for h in hits))
    ratios = [b / a for (a, _s), (b, _t) in zip(a_runs, b_runs, strict=True)]
    row("ratio B / A", *(f"{r:.1f}x" for r in ratios))


def nova(base: Path, cache: Path, pip_cache: Path, rounds: int) -> None:
    root = tree_for(base / "nova", ["nova"])
    giftbox(root, cache, "keys", "init")
    target = ("--distro", "debian12", "--arch", "x86_64")
    sdist = next((cache / "pypi").glob("*/nova-33.0.0.tar.gz"), None)
    if sdist is None:
        giftbox(root, cache, "source", "nova", "--into", str(base / "nova-src"))
        sdist = next((cache / "pypi").glob("*/nova-33.0.0.tar.gz"))
    src = base / "nova-src-plain"
    with tarfile.open(sdist) as tar:
        tar.extractall(src, filter="data")
    src = next(src.iterdir())
    for patch in sorted((root / "patches" / "nova").glob("0*.patch")):
        subprocess.run(["git", "apply", "-p1", str(patch)], cwd=src, check=True)
    rel = "nova/virt/libvirt/driver.py"
    print("warm-up: giftbox build nova --publish nightly (deps layer, wheelhouse, "
          "lint verdicts; untimed)", flush=True)
    new_patch(root, "nova", src, rel, 0)
    giftbox(root, cache, "build", "nova", *target, "--publish", "nightly")
    constraints = "".join(
        line for line in (REPO / "constraints" / "upper-constraints-2026.1.txt").read_text()
        .splitlines(True) if not line.lower().startswith("nova=="))

    def run_a(n: int) -> tuple[float, dict[str, float], float]:
        new_patch(root, "nova", src, rel, n)
        total, stages = giftbox(root, cache, "build", "nova", *target, "--publish", "nightly")
        hit, _ = giftbox(root, cache, "build", "nova", *target, "--publish", "nightly")
        return total, stages, hit

    def run_b(n: int) -> tuple[float, dict[str, float]]:
        series = sorted((root / "patches" / "nova").glob("*.patch"))
        work = dhv_source(base / "dhv-nova", "nova", "33.0.0", sdist, series,
                          ["python-memcached", "PyMySQL"], constraints)
        return dh_virtualenv(work, pip_cache, wheelhouse(cache))

    compare("nova 33.0.0 + patches + a new patch, debian12/x86_64, to a signed package in "
            "nightly", rounds, run_a, run_b)


def small(base: Path, cache: Path, pip_cache: Path, rounds: int) -> None:
    from test_build import demo_upstream  # the tests' real project with a C extension

    root = tree_for(base / "small", [])
    giftbox(root, cache, "keys", "init")
    up = demo_upstream(base / "demo-ext")
    (root / "patches" / "demo-ext").mkdir(parents=True)
    (root / "specs" / "demo-ext.yaml").write_text("\n".join([
        "name: demo-ext", 'release: "2026.1"',
        "constraints: constraints/upper-constraints-2026.1.txt",
        "upstream:", "  use: git", "  git:", f"    url: {up.url}", "    ref: 1.0.0",
        "patches: []",
        "package:", "  prefix: /opt/openstack/demo-ext", "  entry_points: [demo-ext]",
        "matrix:", "  distros: [debian12]", "  arches: [x86_64]", ""]))
    target = ("--distro", "debian12", "--arch", "x86_64")
    giftbox(root, cache, "lock", "demo-ext", *target)
    rel = "demo_ext/cli.py"
    print("\nwarm-up: giftbox build demo-ext --publish nightly (untimed)", flush=True)
    new_patch(root, "demo-ext", up.path, rel, 0)
    giftbox(root, cache, "build", "demo-ext", *target, "--publish", "nightly")
    constraints = (REPO / "constraints" / "upper-constraints-2026.1.txt").read_text()

    def run_a(n: int) -> tuple[float, dict[str, float], float]:
        new_patch(root, "demo-ext", up.path, rel, n)
        total, stages = giftbox(root, cache, "build", "demo-ext", *target, "--publish",
                                "nightly")
        hit, _ = giftbox(root, cache, "build", "demo-ext", *target, "--publish", "nightly")
        return total, stages, hit

    def run_b(n: int) -> tuple[float, dict[str, float]]:
        series = sorted((root / "patches" / "demo-ext").glob("*.patch"))
        work = dhv_source(base / "dhv-small", "demo-ext", "1.0.0", up.path, series, [],
                          constraints)
        return dh_virtualenv(work, pip_cache, wheelhouse(cache))

    compare("demo-ext 1.0.0 (a C extension, a console script, six) + a new patch, "
            "debian12/x86_64", rounds, run_a, run_b)


def build_all(base: Path, cache: Path) -> None:
    projects = ["nova", "keystone", "python-openstackclient"]
    root = tree_for(base / "all", [])
    giftbox(root, cache, "keys", "init")
    cells = ("--distro", "debian12", "--arch", "x86_64")
    print("\ngiftbox build --all (debian12/x86_64 cells, packaged and published to nightly), "
          "warm: every cell built once before (untimed), then its build directory removed",
          flush=True)
    row("projects", "total", "per cell")
    for count in range(1, len(projects) + 1):
        add_project(root, projects[count - 1])
        giftbox(root, cache, "build", "--all", *cells, "--publish", "nightly")  # warm-up
        shutil.rmtree(root / "build")
        total, _stages = giftbox(root, cache, "build", "--all", *cells, "--publish",
                                 "nightly")
        row(", ".join(projects[:count]), fmt(total), fmt(total / count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="nova rounds (A B each)")
    parser.add_argument("--small-rounds", type=int, default=2)
    parser.add_argument("--skip-nova", action="store_true")
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument("--skip-all", action="store_true")
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("GIFTBOX_CACHE",
                                                    Path.home() / ".cache" / "giftbox")),
                        help="giftbox's cache (warm: the README's first command fills it)")
    parser.add_argument("--pip-cache", type=Path,
                        default=Path.home() / ".cache" / "giftbox-bench" / "pip",
                        help="dh-virtualenv's pip cache, kept between runs")
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    dhv_image()
    base = Path(tempfile.mkdtemp(prefix="giftbox-bench-"))
    try:
        if not args.skip_nova:
            nova(base, args.cache, args.pip_cache, args.rounds)
        if not args.skip_small:
            small(base, args.cache, args.pip_cache, args.small_rounds)
        if not args.skip_all:
            build_all(base, args.cache)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end", flush=True)


if __name__ == "__main__":
    main()
