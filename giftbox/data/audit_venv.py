"""Runs inside the builder with the venv's own interpreter; prints a JSON report.

Usage: python audit_venv.py SCOPE PROJECT_DIST OUT.json [skip_imports] [skip_scripts]

SCOPE is "deps" (every distribution but the project: what a cached deps layer holds),
"project" (the project's own distribution, with its console scripts) or "all".

Kept compatible with old target Pythons (3.5+): no f-strings, no importlib.metadata.
"""

import concurrent.futures
import importlib
import json
import os
import re
import subprocess
import sys


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def site_packages():
    for path in sys.path:
        if path.endswith("site-packages") and path.startswith(sys.prefix):
            return path
    raise SystemExit("no site-packages of the venv on sys.path")


def dists(site):
    for entry in sorted(os.listdir(site)):
        if entry.endswith(".dist-info"):
            yield entry, os.path.join(site, entry)


def dist_name(entry):
    return canonical(entry[: -len(".dist-info")].rsplit("-", 1)[0])


def dist_top_level(path):
    """The importable top-level names one distribution installs."""
    names = set()
    top = os.path.join(path, "top_level.txt")
    if os.path.isfile(top):
        with open(top) as handle:
            names.update(line.strip() for line in handle if line.strip())
        return names
    record = os.path.join(path, "RECORD")
    if not os.path.isfile(record):
        return names
    with open(record) as handle:
        for line in handle:
            first = line.split(",", 1)[0].split("/", 1)
            head = first[0]
            if head.endswith((".dist-info", ".data")) or head.startswith(".."):
                continue
            if len(first) == 1:
                if head.endswith(".py"):
                    names.add(head[:-3])
                elif head.endswith(".so"):
                    names.add(head.split(".", 1)[0])
            elif first[1] == "__init__.py" or first[1].endswith(".py"):
                names.add(head)
    return names


def top_level_names(site, wanted):
    names = set()
    for entry, path in dists(site):
        if wanted(dist_name(entry)):
            names.update(dist_top_level(path))
    return sorted(n for n in names if n and "/" not in n and not n.startswith("_")
                  and n not in ("tests", "test", "docs", "examples", "benchmarks", "bin"))


def extension_modules(site, roots):
    """Extension modules under the given top-level names (packages or modules)."""
    found = []
    for root in roots:
        base = os.path.join(site, root)
        if not os.path.isdir(base):
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            # manylinux wheels bundle plain shared libraries in <pkg>.libs/: not modules; a
            # package's own test suite (greenlet/tests needs objgraph) is not runtime code.
            dirnames[:] = [d for d in dirnames if not d.endswith(".libs")
                           and d not in ("__pycache__", "tests", "test", "testing")]
            for filename in filenames:
                if filename.endswith(".so"):
                    rel = os.path.relpath(os.path.join(dirpath, filename), site)
                    parts = rel.split(os.sep)
                    parts[-1] = parts[-1].split(".", 1)[0]
                    found.append(".".join(parts))
    for filename in os.listdir(site):
        if filename.endswith(".so") and filename.split(".", 1)[0] in roots:
            found.append(filename.split(".", 1)[0])
    return sorted(set(found))


def try_import(name):
    try:
        importlib.import_module(name)
        return None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: B036 - a module calling sys.exit is a failure too
        return "{}: {}".format(type(exc).__name__, str(exc)[:300])


def console_scripts(site, project):
    for entry, path in dists(site):
        if dist_name(entry) != canonical(project):
            continue
        points = os.path.join(path, "entry_points.txt")
        if not os.path.isfile(points):
            return []
        names, section = [], None
        with open(points) as handle:
            for line in handle:
                line = line.strip()
                if line.startswith("["):
                    section = line.strip("[]")
                elif section == "console_scripts" and "=" in line:
                    names.append(line.split("=", 1)[0].strip())
        return sorted(names)
    return []


def run_script(path):
    env = dict(os.environ, HOME="/tmp")
    for flag in ("--help", "--version"):
        try:
            proc = subprocess.run([path, flag], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  env=env, timeout=300)
        except subprocess.TimeoutExpired:
            return "timed out after 300s with {}".format(flag)
        if proc.returncode == 0:
            return None
        last = proc.stdout.decode("utf-8", "replace")
    return "exit {}: {}".format(proc.returncode, last.strip()[-400:])


def main():
    scope, project, out = sys.argv[1], canonical(sys.argv[2]), sys.argv[3]
    skip_imports = set(filter(None, (sys.argv[4] if len(sys.argv) > 4 else "").split(",")))
    skip_scripts = set(filter(None, (sys.argv[5] if len(sys.argv) > 5 else "").split(",")))
    site = site_packages()
    if scope == "deps":
        wanted = lambda name: name != project  # noqa: E731
    elif scope == "project":
        wanted = lambda name: name == project  # noqa: E731
    else:
        wanted = lambda name: True  # noqa: E731
    report = {"imports": {}, "extensions": {}, "scripts": {}, "skipped": {
        "imports": sorted(skip_imports), "scripts": sorted(skip_scripts)}}
    names = top_level_names(site, wanted)
    # setuptools replaces distutils on import and asserts nobody loaded the stdlib's first;
    # in one process importing everything, it must come first, as it does in real programs.
    names.sort(key=lambda n: (n not in ("setuptools", "pkg_resources"), n))
    for name in names:
        if name not in skip_imports:
            report["imports"][name] = try_import(name)
    for name in extension_modules(site, names):
        if name.split(".")[0] in skip_imports:
            continue
        problem = try_import(name)
        if problem and "does not define module export function" in problem:
            continue  # a plain shared library shipped inside a package, not a module
        report["extensions"][name] = problem
    if scope != "deps":
        scripts = [s for s in console_scripts(site, project) if s not in skip_scripts]
        bindir = os.path.join(sys.prefix, "bin")
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            results = pool.map(run_script, [os.path.join(bindir, s) for s in scripts])
            report["scripts"] = dict(zip(scripts, results))
    with open(out, "w") as handle:
        json.dump(report, handle, indent=2, sort_keys=True)


if __name__ == "__main__":
    main()
