"""The audit gate after every build: a venv that fails any check is not a build.

* no build path anywhere in the tree (the builder's own directories, the host's tree and cache);
* ``pip check`` clean;
* every top-level module and every extension module imports;
* every console script of the project runs ``--help`` (or ``--version``), or passed before
  with the very files its run read (giftbox.scriptcache);
* every ELF file is for the target architecture.

Checks that read files run on the host over the bind-mounted venv; checks that run code run in
the builder with the venv's own interpreter (giftbox/data/audit_venv.py).
"""

from __future__ import annotations

import json
import os
import stat
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from giftbox.container import Container
from giftbox.distros import Arch
from giftbox.distros import elf_machine as parse_elf_machine
from giftbox.errors import BuildError
from giftbox.files import write_atomic
from giftbox.lock import BUILD_DIR
from giftbox.relocate import own_files
from giftbox.scriptcache import ScriptVerdicts, Venv, base_key
from giftbox.spec import Spec


def elf_machine(path: Path) -> int | None:
    """e_machine of an ELF file, or None when ``path`` is not ELF."""
    with open(path, "rb") as handle:
        return parse_elf_machine(handle.read(20))


def scan_tree(tree: Path, arch: Arch, needles: list[str]) -> tuple[list[str],
                                                                 dict[str, list[str]]]:
    """One pass over every file: ELF files not built for ``arch``, and files whose bytes
    contain any of ``needles`` (leaked build paths)."""
    encoded = [n.encode() for n in needles if n and n != "/"]
    wrong: list[str] = []
    hits: dict[str, list[str]] = {}
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            _scan_file(path, str(path.relative_to(tree)), arch, encoded, wrong, hits)
    return sorted(wrong), hits


def audit_venv_source() -> bytes:
    return (resources.files("giftbox") / "data" / "audit_venv.py").read_bytes()


def script_verdicts(store: Path, venv_dir: Path, prefix: str, layer: Path,
                    image_id: str) -> ScriptVerdicts:
    """The cached console-script verdicts of one target (``store``) for a build's venv
    (``venv_dir``, at ``prefix`` in the builder) linked from the deps layer ``layer``."""
    return ScriptVerdicts(store, Venv(venv_dir, prefix, layer / "venv"),
                          base_key(image_id, layer, prefix, audit_venv_source()))


def run_scope(c: Container, scope: str, prefix: str, spec: Spec, dist_name: str,
              work: Path, log_path: Path, verdicts: ScriptVerdicts | None = None,
              started: threading.Event | None = None) -> dict[str, Any]:
    """The in-builder checks for ``scope`` (deps, project or all): imports, extensions,
    and for the project its console scripts. Returns name -> error (None when fine) per
    kind; with ``verdicts``, a script whose cached pass still holds is not run again
    (``scripts_cached`` names them, ``scripts_run`` the others) and every new pass that can
    be is cached. ``started`` is set as the checks are started in the builder: a caller on
    another thread waits for it before its own Python work, so the verdicts' reading of the
    venv, which the console scripts wait for, does not share the interpreter with that work
    (the caller sets it too when this fails before)."""
    (work / "audit_venv.py").write_bytes(audit_venv_source())
    out = f"audit-{scope}.json"
    argv = [f"{prefix}/bin/python", f"{BUILD_DIR}/audit_venv.py", scope, dist_name,
            f"{BUILD_DIR}/{out}", ",".join(spec.audit.skip_imports),
            ",".join(spec.audit.skip_scripts)]
    if verdicts is not None:
        verdicts.load()
        (work / "audit-control.json").write_text(json.dumps(
            {"records": f"{BUILD_DIR}/script-records", "cached": verdicts.still_valid()}))
        argv.append(f"{BUILD_DIR}/audit-control.json")
    if started is not None:
        started.set()  # what is left of this thread's work here waits on the builder
    c.call(argv, log_path=log_path, stream=False)
    report: dict[str, Any] = json.loads((work / out).read_text())
    runs = report.pop("script_runs", None)
    if runs is not None:
        report["scripts_run"] = sorted(runs)
        if verdicts is not None:
            verdicts.learn(runs, report["scripts"], work / "script-records")
            verdicts.save()
            report["scripts_not_cacheable"] = dict(sorted(verdicts.why.items()))
    return report


def scripts_summary(report: dict[str, Any]) -> str:
    return (f"console scripts: {len(report.get('scripts_run', []))} run, "
            f"{len(report.get('scripts_cached', []))} verdicts cached by the digest of what "
            "they read")


def failures(report: dict[str, Any]) -> list[str]:
    problems = []
    if report.get("pip_check"):
        problems.append("pip check found broken requirements:\n" + str(report["pip_check"]))
    for kind in ("imports", "extensions", "scripts"):
        checked = report.get(kind, {})
        failed = {k: v for k, v in checked.items() if v}
        if failed:
            listing = "\n".join(f"  {name}: {error}" for name, error in sorted(failed.items()))
            problems.append(f"{len(failed)} of {len(checked)} {kind} failed:\n{listing}")
    return problems


def _scan_file(path: Path, rel: str, arch: Arch, encoded: list[bytes], wrong: list[str],
               hits: dict[str, list[str]]) -> None:
    data = path.read_bytes()
    machine = parse_elf_machine(data[:20])
    if machine is not None and machine != arch.elf_machine:
        wrong.append(f"{rel} (e_machine {machine})")
    found = [n.decode() for n in encoded if n in data]
    if found:
        hits[rel] = found


def shared_scan(shared: Path, arch: Arch, needles: list[str]) -> dict[str, Any]:
    """``scan_tree`` of a deps layer's venv, made once and kept beside it (per arch and
    needles: another giftbox root or cache names other build paths)."""
    record = shared.parent / "tree-scan.json"
    wanted = {"arch": arch.value, "needles": sorted(needles)}
    if record.is_file():
        try:
            data: dict[str, Any] = json.loads(record.read_text())
            if data.get("for") == wanted:
                return data
        except (OSError, ValueError):
            pass
    wrong, hits = scan_tree(shared, arch, needles)
    data = {"for": wanted, "elf_wrong_arch": wrong, "build_paths": hits}
    write_atomic(record, json.dumps(data, indent=1) + "\n")
    return data


def scan_tree_shared(tree: Path, arch: Arch, needles: list[str], shared: Path,
                     own: list[str] | None = None) -> tuple[list[str], dict[str, list[str]]]:
    """``scan_tree(tree)``, reading only the files that are not hard links to the same path
    in ``shared`` (the deps layer's venv, scanned once): the same inode holds the same bytes,
    since giftbox replaces files by rename and never writes into a linked one. ``own`` is
    ``own_files(tree, shared)`` when the caller has it."""
    encoded = [n.encode() for n in needles if n and n != "/"]
    known = shared_scan(shared, arch, needles)
    mine = own if own is not None else own_files(tree, shared)
    wrong: list[str] = []
    hits: dict[str, list[str]] = {}
    for rel in mine:
        _scan_file(tree / rel, rel, arch, encoded, wrong, hits)
    # the layer's findings, for its files the build still has (as links): few, checked one
    # by one
    mine_set = set(mine)
    for finding in known["elf_wrong_arch"]:
        rel = finding.rsplit(" (e_machine ", 1)[0]
        if rel not in mine_set and _linked(tree / rel, shared / rel):
            wrong.append(finding)
    for rel, found in known["build_paths"].items():
        if rel not in mine_set and _linked(tree / rel, shared / rel):
            hits[rel] = found
    return sorted(wrong), dict(sorted(hits.items()))


def _linked(path: Path, other: Path) -> bool:
    """Whether ``path`` is a regular file and the same inode as ``other``."""
    try:
        a, b = path.lstat(), other.lstat()
    except OSError:
        return False
    return stat.S_ISREG(a.st_mode) and (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)


def tree_checks(venv_dir: Path, arch: Arch, forbidden: list[str],
                shared: Path | None = None,
                own: list[str] | None = None) -> tuple[list[str], dict[str, object]]:
    """Host-side checks over the whole venv: ELF architecture and leaked build paths. With
    ``shared`` (the deps layer's venv), its files are read once per layer, not per build;
    ``own``: ``own_files(venv_dir, shared)``, when the caller has it."""
    problems = []
    wrong, leaked = scan_tree_shared(venv_dir, arch, forbidden, shared, own) if shared else \
        scan_tree(venv_dir, arch, forbidden)
    if wrong:
        problems.append(f"ELF files not built for {arch.value}:\n  " + "\n  ".join(wrong[:20]))
    if leaked:
        listing = "\n".join(f"  {path}: {', '.join(needles)}"
                            for path, needles in sorted(leaked.items())[:20])
        problems.append(f"{len(leaked)} file(s) name a build path:\n{listing}")
    return problems, {"elf_wrong_arch": wrong, "build_paths": leaked}


def gate(spec: Spec, problems: list[str], log_path: Path) -> None:
    if problems:
        raise BuildError(f"the audit of {spec.name}'s venv failed:\n" + "\n".join(problems),
                         hint="skip a check only with a reason: audit.skip_imports or "
                              f"audit.skip_scripts in specs/{spec.name}.yaml; log: {log_path}")
