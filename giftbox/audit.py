"""The audit gate after every build: a venv that fails any check is not a build.

* no build path anywhere in the tree (the builder's own directories, the host's tree and cache);
* ``pip check`` clean;
* every top-level module and every extension module imports;
* every console script of the project runs ``--help`` (or ``--version``);
* every ELF file is for the target architecture.

Checks that read files run on the host over the bind-mounted venv; checks that run code run in
the builder with the venv's own interpreter (giftbox/data/audit_venv.py).
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path

from giftbox.container import CommandFailed, Container
from giftbox.distros import Arch
from giftbox.distros import elf_machine as parse_elf_machine
from giftbox.errors import BuildError
from giftbox.lock import BUILD_DIR
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
            data = path.read_bytes()
            rel = str(path.relative_to(tree))
            machine = parse_elf_machine(data[:20])
            if machine is not None and machine != arch.elf_machine:
                wrong.append(f"{rel} (e_machine {machine})")
            found = [n.decode() for n in encoded if n in data]
            if found:
                hits[rel] = found
    return sorted(wrong), hits


def run_scope(c: Container, scope: str, prefix: str, spec: Spec, dist_name: str,
              work: Path, log_path: Path) -> dict[str, dict[str, str | None]]:
    """The in-builder checks for ``scope`` (deps, project or all): imports, extensions,
    and for the project its console scripts. Returns name -> error (None when fine)."""
    script = work / "audit_venv.py"
    with resources.as_file(resources.files("giftbox") / "data" / "audit_venv.py") as src:
        shutil.copyfile(src, script)
    out = f"audit-{scope}.json"
    c.call([f"{prefix}/bin/python", f"{BUILD_DIR}/audit_venv.py", scope, dist_name,
            f"{BUILD_DIR}/{out}", ",".join(spec.audit.skip_imports),
            ",".join(spec.audit.skip_scripts)], log_path=log_path, stream=False)
    return json.loads((work / out).read_text())  # type: ignore[no-any-return]


def failures(report: dict[str, dict[str, str | None]]) -> list[str]:
    problems = []
    for kind in ("imports", "extensions", "scripts"):
        checked = report.get(kind, {})
        failed = {k: v for k, v in checked.items() if v}
        if failed:
            listing = "\n".join(f"  {name}: {error}" for name, error in sorted(failed.items()))
            problems.append(f"{len(failed)} of {len(checked)} {kind} failed:\n{listing}")
    return problems


def pip_check(c: Container, prefix: str, log_path: Path) -> list[str]:
    try:
        c.call([f"{prefix}/bin/python", "-m", "pip", "check"], log_path=log_path, stream=False)
    except CommandFailed as exc:
        return ["pip check found broken requirements:\n" + exc.output.strip()]
    return []


def tree_checks(venv_dir: Path, arch: Arch, forbidden: list[str]) -> tuple[list[str],
                                                                           dict[str, object]]:
    """Host-side checks over the whole venv: ELF architecture and leaked build paths."""
    problems = []
    wrong, leaked = scan_tree(venv_dir, arch, forbidden)
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
