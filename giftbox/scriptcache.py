"""Cached PASS verdicts of the audit's console-script runs, keyed by what each run read.

Every console script of the project runs ``--help`` (or ``--version``) in the audit gate
(giftbox/data/audit_venv.py), under a wrapper that records what the run opened and listed, the
modules it loaded, the shared objects it mapped and the processes it started. A run that
passed leaves a verdict here, for the digest of:

* its base: the builder image, the deps layer (its key and its instance: a layer made again
  has new files), the prefix, and audit_venv.py itself (the wrapper, the flags);
* its context, computed in the builder: the environment, the interpreter;
* every file it read under the prefix, by content (a hard link to the deps layer's own file
  stands for that file's bytes: the layer is immutable and in the base), or as absent;
* the names, types and modes of everything in the venv (a new module file anywhere is noticed,
  in a directory the import system listed or one a script only looked for a file in).

What a run reads outside the prefix is the builder image's (in the base) or the kernel's and
the engine's per-container plumbing (``/proc``, ``/sys``, ``/dev``, ``/etc/hosts``): neither
is an input of the verdict. A run that reads the bind mounts (the build dir, the source, the
wheelhouse, the tool cache) or ``/tmp`` beyond its own fresh HOME, that forks, execs, uses a
shell through ``os.system``, connects a stream socket, or starts a program of the venv, or
names one of those places to the program it starts, is not cached: it runs on every build.
A failure is never cached. Reads the audit hook cannot see (a C library's own fopen, a stat
without an open) are covered by the image, the deps layer and the venv's tree digest.

On disk: ``<cache>/audit-scripts/<project>/<target slug>.json``, one verdict per script,
written by rename; a damaged or hand-edited file (or entry) is a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from giftbox.files import sha256_file, write_atomic
from giftbox.lock import BUILD_DIR, CACHE_DIR, SRC_DIR, WHEELHOUSE_DIR

RECIPE = "1"
# The run's own HOME (audit_venv.HOMES/<script>): fresh and empty, so what it reads there it
# wrote itself.
HOMES = "/tmp/giftbox-audit-home"
VOLATILE = (BUILD_DIR, SRC_DIR, WHEELHOUSE_DIR, CACHE_DIR, "/tmp")
PLUMBING = ("/proc", "/sys", "/dev", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")


def under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def base_key(image_id: str, layer: Path, prefix: str, audit_source: bytes) -> str:
    """What every verdict of one build shares besides the venv's files."""
    marker = (layer / "audit-deps.json").stat()
    return hashlib.sha256(json.dumps({
        "recipe": RECIPE, "image": image_id, "layer": layer.name,
        "layer_instance": [marker.st_ino, marker.st_mtime_ns], "prefix": prefix,
        "audit_venv": hashlib.sha256(audit_source).hexdigest()}, sort_keys=True).encode()
    ).hexdigest()


def tree_digest(venv: Path) -> str:
    """The digest of the name, type and mode of everything in ``venv`` (and symlinks'
    targets), not of contents."""
    digest = hashlib.sha256()

    def walk(folder: str, rel: str) -> None:
        with os.scandir(folder) as entries:
            ordered = sorted(entries, key=lambda e: e.name)
        for entry in ordered:
            st = entry.stat(follow_symlinks=False)
            name = f"{rel}/{entry.name}"
            link = os.readlink(entry.path) if stat.S_ISLNK(st.st_mode) else ""
            digest.update(f"{name}\0{st.st_mode:o}\0{link}\n".encode(errors="surrogateescape"))
            if stat.S_ISDIR(st.st_mode):
                walk(entry.path, name)

    walk(str(venv), "")
    return digest.hexdigest()


@dataclass
class Venv:
    """The build's venv as the builder sees it at ``prefix``, read on the host at ``root``;
    files that are hard links to the deps layer's (``layer``) are not read."""

    root: Path
    prefix: str
    layer: Path
    _dirs: dict[str, tuple[Path | None, str]] = field(default_factory=dict)
    _states: dict[str, str] = field(default_factory=dict)

    def state(self, path: str) -> str:
        """What the builder's ``path`` (under the prefix) holds: ``sha256:...``, ``layer``
        (the deps layer's file), ``dir``, ``absent``, or where it leads out of the venv."""
        if path not in self._states:
            self._states[path] = self._state(path)
        return self._states[path]

    def _state(self, path: str) -> str:
        rel = path[len(self.prefix):].strip("/")
        folder, name = rel.rpartition("/")[0], rel.rpartition("/")[2]
        host, chain = self._resolve_dir(folder)
        if host is None:
            return chain
        if not name:
            return chain + "dir"
        resolved, chain2 = self._step(host, name, chain, 0)
        if resolved is None:
            return chain2
        try:
            st = resolved.lstat()
        except FileNotFoundError:
            return chain2 + "absent"
        except OSError as exc:
            return chain2 + f"unreadable ({exc.errno})"
        if stat.S_ISDIR(st.st_mode):
            return chain2 + "dir"
        if not stat.S_ISREG(st.st_mode):
            return chain2 + f"special {st.st_mode:o}"
        try:
            other = (self.layer / resolved.relative_to(self.root)).lstat()
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                return chain2 + "layer"
        except OSError:
            pass
        return chain2 + "sha256:" + sha256_file(resolved)

    def _resolve_dir(self, rel: str) -> tuple[Path | None, str]:
        """The host directory for the builder's ``prefix/rel``, with the symlinks passed."""
        if rel not in self._dirs:
            if not rel:
                self._dirs[rel] = (self.root, "")
            else:
                parent, _, name = rel.rpartition("/")
                host, chain = self._resolve_dir(parent)
                self._dirs[rel] = (host, chain) if host is None else \
                    self._step(host, name, chain, 0)
        return self._dirs[rel]

    def _step(self, host: Path, name: str, chain: str, hops: int) -> tuple[Path | None, str]:
        """``host/name`` with a symlink there followed as the builder would follow it."""
        if name in ("", "."):
            return host, chain
        if name == "..":
            return (host.parent, chain) if host != self.root else (None, chain + "leaves")
        candidate = host / name
        if not candidate.is_symlink():
            return candidate, chain
        if hops > 40:
            return None, chain + "symlink loop"
        target = os.readlink(candidate)
        chain += f"{candidate.relative_to(self.root)}->{target};"
        if target.startswith("/"):
            if not under(target, self.prefix):
                return None, chain + "outside"
            host, target = self.root, target[len(self.prefix):]
        for part in target.split("/")[:-1]:
            found, chain = self._step(host, part, chain, hops + 1)
            if found is None:
                return None, chain
            host = found
        return self._step(host, target.split("/")[-1], chain, hops + 1)


def why_not_cacheable(records: list[dict[str, Any]], prefix: str,
                      home: str) -> tuple[set[str], str | None]:
    """The files under the prefix the runs read, and why their verdict cannot be cached
    (None when it can)."""
    inputs: set[str] = set()
    named = (prefix, *VOLATILE)
    for record in records:
        if record["unsafe"]:
            return inputs, "it " + record["unsafe"][0]
        for path in record["opened"] + record["listed"]:
            if under(path, home):
                continue
            if under(path, prefix):
                inputs.add(path)
            elif any(under(path, top) for top in VOLATILE):
                return inputs, f"it read {path}"
        for child in record["spawned"]:
            text = " ".join([child["program"] or "", *child["argv"], child["cwd"] or "",
                             *(child["env"] or [])])
            if child["cwd"] is not None or any(top in text for top in named):
                return inputs, f"it started {' '.join(child['argv'])[:120]}"
    return inputs, None


def read_record(path: Path) -> dict[str, Any] | None:
    """A run's record as the wrapper wrote it, or None when missing or malformed."""
    try:
        data = json.loads(path.read_text())
        lists = ("opened", "listed", "unsafe")
        if not (isinstance(data, dict) and all(
                isinstance(data.get(k), list) and all(isinstance(p, str) for p in data[k])
                for k in lists) and isinstance(data.get("spawned"), list)):
            return None
        for child in data["spawned"]:
            if not (isinstance(child, dict) and isinstance(child.get("argv"), list)
                    and all(isinstance(a, str) for a in child["argv"])
                    and isinstance(child.get("program"), (str, type(None)))
                    and isinstance(child.get("cwd"), (str, type(None)))
                    and isinstance(child.get("env"), (list, type(None)))):
                return None
        return data
    except (OSError, ValueError):
        return None


def _home(script: str) -> str:
    return f"{HOMES}/{re.sub(r'[^A-Za-z0-9_.-]', '_', script)}"


@dataclass
class ScriptVerdicts:
    """One build's view of its target's cached script verdicts."""

    store: Path
    venv: Venv
    base: str
    _tree: str | None = None
    _known: dict[str, dict[str, Any]] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)  # script -> why its pass is not cached

    @property
    def tree(self) -> str:
        if self._tree is None:
            self._tree = tree_digest(self.venv.root)
        return self._tree

    def load(self) -> None:
        """The verdicts on disk; a damaged file or entry is a miss."""
        try:
            data = json.loads(self.store.read_text())
        except (OSError, ValueError):
            return
        verdicts = data.get("verdicts") if isinstance(data, dict) else None
        if not isinstance(verdicts, dict):
            return
        for name, entry in verdicts.items():
            if (isinstance(entry, dict) and all(isinstance(entry.get(k), str)
                                                for k in ("base", "tree", "context"))
                    and isinstance(entry.get("inputs"), dict)
                    and all(isinstance(k, str) and isinstance(v, str)
                            for k, v in entry["inputs"].items())):
                self._known[name] = entry

    def still_valid(self) -> dict[str, str]:
        """script -> the context its cached pass is for, for every verdict whose base, tree
        and inputs are this build's (the builder checks the context)."""
        valid = {}
        for name, entry in self._known.items():
            if entry["base"] != self.base or entry["tree"] != self.tree:
                continue
            if all(under(p, self.venv.prefix) and self.venv.state(p) == s
                   for p, s in entry["inputs"].items()):
                valid[name] = entry["context"]
        return valid

    def learn(self, runs: dict[str, Any], scripts: dict[str, str | None],
              records: Path) -> None:
        """Keep a verdict for every script that ran and passed and whose run can be cached."""
        for name, facts in runs.items():
            if scripts.get(name) is not None or not isinstance(facts, dict):
                continue
            files = facts.get("records") or []
            read = [read_record(records / f) for f in files if isinstance(f, str)]
            if not files or any(r is None for r in read) or len(read) != len(files):
                self.why[name] = "its run left no record"
                continue
            inputs, why = why_not_cacheable([r for r in read if r], self.venv.prefix,
                                            _home(name))
            if why is not None:
                self.why[name] = why
                continue
            self._known[name] = {"base": self.base, "tree": self.tree,
                                 "context": str(facts.get("context")),
                                 "inputs": {p: self.venv.state(p) for p in sorted(inputs)}}

    def save(self) -> None:
        write_atomic(self.store, json.dumps({"verdicts": self._known}, separators=(",", ":")))
