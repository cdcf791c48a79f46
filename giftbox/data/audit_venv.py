"""Runs inside the builder with the venv's own interpreter; prints a JSON report.

Usage: python audit_venv.py SCOPE PROJECT_DIST OUT.json [skip_imports] [skip_scripts] [CONTROL]

SCOPE is "deps" (every distribution but the project: what a cached deps layer holds),
"project" (the project's own distribution, with its console scripts, and ``pip check`` of the
whole venv, run beside them: ``pip_check`` is None or what it said) or "all".

CONTROL (a JSON file, from giftbox.scriptcache) names a directory for the record of what each
console script's run read, and the scripts whose PASS verdict the host found still valid for
the files they read: those are not run again when their context (environment, interpreter,
this file's wrapper) is the one they passed in. The report says which ran (``script_runs``,
with their records) and which were cached (``scripts_cached``).

Each script runs as ``python -c WRAPPER SCRIPT FLAG`` with the venv's interpreter, the one
its shebang (giftbox's trampoline) execs: the wrapper records, with an audit hook (3.8+; on
older Pythons nothing is recorded and the script is never cached), the files it opens, the
directories it lists, the modules it loaded and the shared objects mapped at exit, and the
processes it starts, and runs the script with ``runpy`` as its shebang would.

Kept compatible with old target Pythons (3.5+): no f-strings, no importlib.metadata.
"""

import concurrent.futures
import hashlib
import importlib
import json
import os
import re
import shutil
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


FLAGS = ("--help", "--version")
RECORD_VAR = "GIFTBOX_AUDIT_RECORD"
# Each script's own empty HOME, also its working directory: runs see neither each other's
# caches (stevedore keeps its entry point cache under HOME) nor the audit's work directory.
HOMES = "/tmp/giftbox-audit-home"
# Records what a script's run opened, listed and started, written at exit (atexit runs the
# last registered first: this handler, registered before the script runs, comes after the
# script's own).
WRAPPER = r"""
import sys


def _giftbox_record(out):
    import atexit
    import json
    import os

    opened, listed, unsafe, spawned = set(), set(), set(), []
    refused = ("os.exec", "os.posix_spawn", "os.spawn", "os.system", "os.fork", "os.forkpty",
               "pty.spawn")
    on = [True]

    def path_of(arg):
        if arg is None:
            return os.getcwd()
        if isinstance(arg, int):
            return None
        return os.path.abspath(os.fsdecode(arg))

    def program(executable, env):
        if os.sep in executable:
            return os.path.realpath(executable)
        search = (env or os.environ).get("PATH", os.defpath)
        for folder in search.split(os.pathsep):
            candidate = os.path.join(folder or ".", executable)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return os.path.realpath(os.path.abspath(candidate))
        return None

    def hook(event, args):
        if not on[0]:
            return
        on[0] = False
        try:
            if event == "open":
                path = path_of(args[0])
                if path is not None:
                    opened.add(path)
            elif event in ("os.listdir", "os.scandir"):
                path = path_of(args[0])
                if path is None:
                    unsafe.add(event + " of a file descriptor")
                else:
                    listed.add(path)
            elif event == "subprocess.Popen":
                executable, argv, cwd, env = args
                argv = [os.fsdecode(a) for a in ([argv] if isinstance(argv, (str, bytes))
                                                 else argv)]
                spawned.append({"program": program(os.fsdecode(executable), env),
                                "argv": argv, "cwd": None if cwd is None else path_of(cwd),
                                "env": None if env is None else sorted(
                                    "{}={}".format(os.fsdecode(k), os.fsdecode(v))
                                    for k, v in env.items())})
            elif event in refused:
                unsafe.add(event)
            elif event == "socket.connect" and args[0].type != 2:  # SOCK_DGRAM: route lookup
                unsafe.add("socket.connect {!r}".format(args[1])[:200])
        except Exception as exc:  # a hook that fails makes the run uncacheable
            unsafe.add("audit hook on {}: {}: {}".format(event, type(exc).__name__, exc))
        finally:
            on[0] = True

    def write():
        on[0] = False
        for module in list(sys.modules.values()):
            name = getattr(module, "__file__", None)
            if isinstance(name, str):
                opened.add(os.path.abspath(name))
        try:
            with open("/proc/self/maps") as handle:
                for line in handle:
                    fields = line.rstrip("\n").split(None, 5)
                    if len(fields) == 6 and fields[5].startswith("/"):
                        if fields[5].endswith(" (deleted)"):
                            unsafe.add("maps a deleted file: " + fields[5])
                        opened.add(fields[5])
        except OSError:
            unsafe.add("cannot read /proc/self/maps")
        with open(out, "w") as handle:
            json.dump({"opened": sorted(opened), "listed": sorted(listed),
                       "unsafe": sorted(unsafe), "spawned": spawned}, handle)

    # What the interpreter read before this code ran: pyvenv.cfg and site's .pth files.
    opened.add(os.path.join(sys.prefix, "pyvenv.cfg"))
    for folder in sys.path:
        if folder.startswith(sys.prefix + os.sep) and os.path.isdir(folder):
            listed.add(folder)
            opened.update(os.path.join(folder, n) for n in os.listdir(folder)
                          if n.endswith(".pth"))
    atexit.register(write)
    sys.addaudithook(hook)


def _giftbox_run():
    import os

    out = os.environ.pop("GIFTBOX_AUDIT_RECORD", "")
    path, flag = sys.argv[1], sys.argv[2]
    if out and hasattr(sys, "addaudithook"):
        _giftbox_record(out)
    sys.argv = [path, flag]
    sys.path[0] = os.path.dirname(os.path.realpath(path))
    import runpy
    runpy.run_path(path, run_name="__main__")


_giftbox_run()
"""
TRAMPOLINE_START = b"#!/bin/sh\n'''exec' "  # giftbox.relocate.TRAMPOLINE


def run_by_wrapper(path):
    """Whether ``path``'s shebang runs it with this interpreter (giftbox's trampoline, or a
    plain shebang naming it): only then is the wrapper the same run as the script's own."""
    with open(path, "rb") as handle:
        head = handle.read(256)
    plain = "#!{}\n".format(os.path.join(sys.prefix, "bin", "python")).encode()
    return head.startswith(TRAMPOLINE_START) or head.startswith(plain)


def script_env(name):
    """The environment a script runs in, with its own fresh, empty HOME."""
    home = os.path.join(HOMES, re.sub(r"[^A-Za-z0-9_.-]", "_", name))
    shutil.rmtree(home, ignore_errors=True)
    os.makedirs(home)
    env = dict(os.environ, HOME=home)
    env.pop(RECORD_VAR, None)
    return env


def context_digest(env):
    """What besides the files a run reads its verdict depends on: the environment (but the
    container's host name, which names the container, not an input), the interpreter, the
    flags tried and the wrapper."""
    env = dict((k, v) for k, v in env.items() if k != "HOSTNAME")
    text = json.dumps({"env": env, "executable": sys.executable, "version": sys.version,
                       "flags": FLAGS, "wrapper": WRAPPER}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def run_script(name, path, records, index):
    """(error or None, what the host needs to cache a pass): each flag in turn until one
    exits 0, each run recorded in the directory ``records`` (when given and the script is
    run by the wrapper)."""
    env = script_env(name)
    facts = {"context": context_digest(env), "records": [], "flag": None}
    wrapped = run_by_wrapper(path)
    for flag in FLAGS:
        argv = [sys.executable, "-c", WRAPPER, path, flag] if wrapped else [path, flag]
        run_env = dict(env)
        if records and wrapped:
            record = "{:03d}{}.json".format(index, flag.replace("-", "_"))
            run_env[RECORD_VAR] = os.path.join(records, record)
            facts["records"].append(record)
        try:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  env=run_env, cwd=env["HOME"], timeout=300)
        except subprocess.TimeoutExpired:
            return "timed out after 300s with {}".format(flag), facts
        if proc.returncode == 0:
            facts["flag"] = flag
            return None, facts
        last = proc.stdout.decode("utf-8", "replace")
    return "exit {}: {}".format(proc.returncode, last.strip()[-400:]), facts


def read_control(path):
    if not path:
        return None, {}
    with open(path) as handle:
        control = json.load(handle)
    return control.get("records"), control.get("cached") or {}


def check_scripts(site, project, skip_scripts, control, report):
    """Every console script not skipped runs, unless the host found its PASS verdict valid
    for what it reads and it passed in this same context."""
    records, cached = read_control(control)
    if records:
        os.makedirs(records, exist_ok=True)
    bindir = os.path.join(sys.prefix, "bin")
    scripts = [s for s in console_scripts(site, project) if s not in skip_scripts]
    reused = [s for s in scripts if s in cached and cached[s] == context_digest(script_env(s))]
    todo = [s for s in scripts if s not in reused]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(run_script, todo, [os.path.join(bindir, s) for s in todo],
                                [records] * len(todo), range(len(todo))))
    report["scripts"] = dict((s, None) for s in reused)
    report["scripts"].update((s, r[0]) for s, r in zip(todo, results))
    report["scripts_cached"] = sorted(reused)
    report["script_runs"] = dict((s, r[1]) for s, r in zip(todo, results))


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
    # pip check (the venv's requirements all met) runs beside the imports and the scripts
    checking = None
    if scope != "deps":
        checking = subprocess.Popen([sys.executable, "-m", "pip", "check"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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
        check_scripts(site, project, skip_scripts, sys.argv[6] if len(sys.argv) > 6 else "",
                      report)
    if checking is not None:
        said = checking.communicate()[0].decode("utf-8", "replace").strip()
        report["pip_check"] = None if checking.returncode == 0 else (
            said or "pip check exited {}".format(checking.returncode))
    with open(out, "w") as handle:
        json.dump(report, handle, indent=2, sort_keys=True)


if __name__ == "__main__":
    main()
