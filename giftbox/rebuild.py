"""``giftbox rebuild --check``: rebuild a published artifact from its manifest alone and
compare the bytes (what Nix's ``--check`` and Guix's ``challenge`` do for their stores).

The inputs are the ones the artifact names, never the tree's current ones:

* the upstream: the git URL and commit of the manifest (fetched afresh), or the PyPI tarball
  by its sha256;
* the patches, found in ``patches/<project>/`` by digest (a renamed file still serves);
* the lock the package carries (``giftbox-lock.txt``; its digest is the manifest's);
* the builder image, by the engine id the manifest records.

The spec still supplies what the manifest does not hold (package metadata: units, config
files, descriptions): it must describe the artifact (package name, release, prefix, runtime
depends, bindings), or the check is refused rather than run against something else.

The rebuild runs in a scratch tree with an empty cache and state under
``build/<project>/<distro>-<arch>/rebuild-<digest16>/`` (removed afterwards); what stays there
is the rebuilt package, its build log, ``rebuild.json`` and, on a mismatch, diffoscope's
HTML report. The outcome is recorded as the verdict ``reproducible`` on the artifact's sha256,
which a channel can require (``requires: [reproducible]``) like the other checks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from giftbox import host, lock, source
from giftbox.build import Builder, BuildResult
from giftbox.builders import BuilderImage
from giftbox.distros import Arch, Distro
from giftbox.errors import BuildError, PackageError, RepoError, SourceError
from giftbox.family import NAMES
from giftbox.files import sha256_file
from giftbox.gitutil import locked
from giftbox.manifest import Manifest
from giftbox.settings import Settings
from giftbox.spec import GitUpstream, Spec, load_spec
from giftbox.targets import Catalog
from giftbox.ui import NULL_REPORTER, Reporter

CHECK = "reproducible"  # the verdict's name (giftbox.repo.requirements.CHECKS)
CHANNEL_PREFIX = "channel:"
DIFFOSCOPE_TIMEOUT = 3600  # seconds; a nova .deb takes minutes


class InputUnavailable(BuildError):
    """An input the artifact's manifest names can no longer be had (builder image, upstream
    commit or tarball, a patch by digest, a lock that still fits the spec): the artifact
    cannot be rebuilt, so nothing was compared and no verdict recorded."""


@dataclass(frozen=True)
class Artifact:
    path: Path
    kind: str  # deb | rpm
    filename: str
    digest: str
    channel: str = ""


@dataclass(frozen=True)
class RebuildResult:
    project: str
    distro: str
    arch: str
    version: str
    artifact: str  # the original's path
    filename: str
    digest: str
    rebuilt: str  # the rebuilt package's path
    rebuilt_digest: str
    reproducible: bool
    directory: str
    report: str | None  # diffoscope's HTML report, on a mismatch
    detail: str
    duration: float
    verdict_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def locate(settings: Settings, target: str) -> Artifact:
    """``ARTIFACT`` (a .deb/.rpm file) or ``channel:NAME/PROJECT[/DISTRO/ARCH]``."""
    if target.startswith(CHANNEL_PREFIX):
        return _from_channel(settings, target)
    path = Path(target)
    kind = path.suffix.lstrip(".")
    if kind not in NAMES:
        raise PackageError(f"{target}: not a .deb or .rpm",
                           hint="name a package file or channel:NAME/PROJECT[/DISTRO/ARCH]")
    if not path.is_file():
        raise PackageError(f"{target}: no such file",
                           hint="name a package file or channel:NAME/PROJECT[/DISTRO/ARCH]")
    return Artifact(path=path.resolve(), kind=kind, filename=path.name, digest=sha256_file(path))


def _from_channel(settings: Settings, target: str) -> Artifact:
    from giftbox.repo import Pool, channel_state, get_channel
    from giftbox.repo.promote import select

    parts = target[len(CHANNEL_PREFIX):].split("/")
    if len(parts) not in (2, 4) or not all(parts):
        raise RepoError(f"'{target}': expected channel:NAME/PROJECT or "
                        "channel:NAME/PROJECT/DISTRO/ARCH",
                        hint="e.g. channel:nightly/nova/debian12/x86_64")
    name, project = parts[0], parts[1]
    distro, arch = (parts[2], parts[3]) if len(parts) == 4 else (None, None)
    ch = get_channel(settings, name)
    entries = select(settings, ch, channel_state(settings, ch.name), project, distro=distro,
                     arch=arch)
    if len(entries) > 1:
        held = ", ".join(f"{e.distro}/{e.arch} ({e.version})" for e in entries)
        raise RepoError(f"channel '{ch.name}' holds {project} for more than one target: {held}",
                        hint=f"name one: channel:{ch.name}/{project}/DISTRO/ARCH")
    (entry,) = entries
    pool = Pool(settings.repos_dir)
    path = pool.object_path(pool.load(entry.digest))
    return Artifact(path=path, kind=entry.kind, filename=entry.filename, digest=entry.digest,
                    channel=ch.name)


def read_manifest(artifact: Artifact) -> tuple[Manifest, str]:
    """The manifest and lock the package carries (the lock checked against the manifest)."""
    from giftbox.workflow.diff import LOCK_FILE, MANIFEST_FILE, package_files

    found = package_files(artifact.path, artifact.kind)
    if found.manifest is None:
        raise PackageError(f"{artifact.filename} carries no {MANIFEST_FILE}: what it was built "
                           "from is unknown, so it cannot be rebuilt")
    try:
        manifest = Manifest.from_json(found.manifest)
    except (ValueError, TypeError, KeyError) as exc:
        raise PackageError(f"{artifact.filename}: its {found.manifest_path} is not a giftbox "
                           f"manifest ({exc})") from None
    if found.lock is None:
        raise InputUnavailable(f"{artifact.filename} carries no {LOCK_FILE} beside its "
                               "manifest: the locked dependencies it was built with are unknown",
                               hint="only artifacts built since packages carry their lock can "
                                    "be rebuilt")
    if hashlib.sha256(found.lock.encode()).hexdigest() != manifest.lock_digest:
        raise PackageError(f"{artifact.filename}: the {LOCK_FILE} it carries does not have its "
                           f"manifest's lock digest {manifest.lock_digest[:16]}…",
                           hint="the package was altered after it was built")
    return manifest, found.lock


# --- the inputs ---------------------------------------------------------------------------


def _check_spec(spec: Spec, manifest: Manifest, distro: Distro) -> None:
    from giftbox.package.layout import install_prefix, package_version

    where = f"specs/{spec.name}.yaml"
    version = package_version(manifest, distro)
    facts = [
        ("package.name", spec.package.name, manifest.package_name),
        ("package.release", spec.package.release, int(manifest.version.get("release", 0))),
        (f"package.depends.{distro.family}",
         tuple(spec.package.depends.get(distro.family, ())), tuple(manifest.depends)),
        ("package.system_bindings", tuple(b.module for b in spec.package.system_bindings),
         tuple(manifest.system_bindings)),
        ("package.prefix", install_prefix(spec, version), manifest.prefix),
    ]
    for field, now, then in facts:
        if now != then:
            raise InputUnavailable(
                f"{where} no longer describes this artifact: {field} is {now!r} in the tree, "
                f"{then!r} in the artifact's manifest",
                hint=f"check out the revision of {where} that built it and run the check there")


def _image(settings: Settings, manifest: Manifest, distro: Distro, arch: Arch) -> BuilderImage:
    from giftbox.engine import Engine

    with Engine(settings) as engine:
        present = engine.exists(manifest.builder_image)
    if not present:
        raise InputUnavailable(
            f"the builder image {manifest.builder_image} the artifact was built in is no longer "
            "in the Docker engine", hint="load it from where it was kept (docker load, or a "
            "registry mirror); a builder made again from builders/ today gets another id, and "
            "the artifact cannot be rebuilt bit for bit without the original")
    return BuilderImage(tag=manifest.builder_image, image_id=manifest.builder_image,
                        distro=distro.name, arch=arch, python=distro.python, digest="")


def _patches(settings: Settings, manifest: Manifest, into: Path) -> tuple[Path, ...]:
    """The manifest's patches, found by digest in the tree's patches/<project>/."""
    folder = settings.root / "patches" / manifest.project
    by_digest: dict[str, Path] = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.is_symlink():
                by_digest.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), path)
    into.mkdir(parents=True, exist_ok=True)
    out = []
    for patch in manifest.patches:
        named = folder / patch.name
        if named.is_file() and hashlib.sha256(named.read_bytes()).hexdigest() == patch.sha256:
            found = named
        elif patch.sha256 in by_digest:
            found = by_digest[patch.sha256]
        else:
            raise InputUnavailable(
                f"patch {patch.name} (sha256 {patch.sha256[:16]}…) is no longer in "
                f"patches/{manifest.project}/ under any name",
                hint="restore it from the revision that built the artifact")
        (into / patch.name).write_bytes(found.read_bytes())
        out.append(into / patch.name)
    return tuple(out)


def _scratch_tree(settings: Settings, manifest: Manifest, lock_text: str,
                  tree: Path) -> tuple[Spec, Settings]:
    project = manifest.project
    (tree / "specs").mkdir(parents=True)
    shutil.copy(settings.root / "specs" / f"{project}.yaml", tree / "specs")
    for sub in ("builders", "constraints"):
        if (settings.root / sub).is_dir():
            shutil.copytree(settings.root / sub, tree / sub, symlinks=True)
    for sub in ("files", "patches"):
        if (settings.root / sub / project).is_dir():
            shutil.copytree(settings.root / sub / project, tree / sub / project, symlinks=True)
    lock_file = tree / "locks" / project / f"{manifest.distro}-{manifest.arch}.txt"
    lock_file.parent.mkdir(parents=True)
    lock_file.write_text(lock_text)
    env = {k: v for k, v in os.environ.items()
           if k not in ("GIFTBOX_ROOT", "GIFTBOX_DATABASE", "GIFTBOX_STATE")}
    env.update(GIFTBOX_CACHE=str(tree.parent / "cache"), GIFTBOX_STATE=str(tree.parent / "state"))
    scratch = Settings.resolve(root=tree, env=env)
    spec = load_spec(tree / "specs" / f"{project}.yaml", tree)
    patches = _patches(settings, manifest, tree / "patches" / project)
    if manifest.upstream_kind == "git":
        git = GitUpstream(url=manifest.upstream_url, ref=manifest.upstream_ref) \
            if spec.git is None else dataclasses.replace(spec.git, url=manifest.upstream_url,
                                                         ref=manifest.upstream_ref)
        spec = dataclasses.replace(spec, upstream_kind="git", patches=patches, git=git)
    else:
        if spec.pypi is None or manifest.upstream_sha256 is None:
            raise InputUnavailable(f"specs/{project}.yaml has no upstream.pypi section to fetch "
                                   f"the tarball {manifest.upstream_url} from")
        spec = dataclasses.replace(spec, upstream_kind="pypi", patches=patches,
                                   pypi=dataclasses.replace(spec.pypi,
                                                            version=manifest.upstream_version,
                                                            sha256=manifest.upstream_sha256))
    return spec, scratch


class _Rebuilder(Builder):
    """A build whose upstream commit and builder image are the manifest's."""

    def __init__(self, spec: Spec, distro: Distro, arch: Arch, settings: Settings,
                 reporter: Reporter, manifest: Manifest, image: BuilderImage) -> None:
        super().__init__(spec, distro, arch, settings, reporter,
                         ref=manifest.upstream_commit if manifest.upstream_kind == "git" else None)
        self.manifest = manifest
        self.image = image

    def inputs(self) -> tuple[source.Upstream, BuilderImage, lock.ProjectMeta, lock.LockInputs]:
        m = self.manifest
        what = (f"commit {m.upstream_commit} of {m.upstream_url}" if m.upstream_kind == "git"
                else f"tarball {m.upstream_url} (sha256 {m.upstream_sha256})")
        try:
            upstream, _current, meta, inputs = super().inputs()
        except SourceError as exc:
            raise InputUnavailable(f"the upstream {what} is no longer available: {exc.message}",
                                   hint=exc.hint) from None
        if upstream.commit != m.upstream_commit:
            raise InputUnavailable(f"the upstream {what} now gives commit {upstream.commit}, "
                                   f"not the artifact's {m.upstream_commit}")
        lock_file = lock.lock_path(self.settings, self.spec, self.distro, self.arch)
        try:
            lock.check_fresh(lock_file, self.spec, self.distro, self.arch, inputs)
        except BuildError as exc:
            raise InputUnavailable(
                f"the lock the artifact carries no longer fits specs/{self.spec.name}.yaml and "
                f"its constraints ({exc.message})",
                hint="check out the revision that built the artifact and run the check there")\
                from None
        return dataclasses.replace(upstream, ref=m.upstream_ref), self.image, meta, inputs


def _package(result: BuildResult, spec: Spec, distro: Distro, arch: Arch,
             image: BuilderImage, settings: Settings, reporter: Reporter, out: Path) -> Path:
    """Packaged as ``giftbox build`` does, its target-side steps in the same builder image."""
    from giftbox.container import Container
    from giftbox.package import build_package
    from giftbox.package.runner import ContainerRunner

    with Container(image, arch, settings, reporter, workdir="/giftbox-package") as c:
        update = list(distro.family_obj.index_update)
        if update:
            with reporter.stage(f"{' '.join(a for a in update if not a.startswith('-'))} "
                                f"in the {distro.name} builder"):
                c.call(update, stream=False)
        artifact = build_package(result.venv_dir, result.manifest, spec, distro, out,
                                 runner=ContainerRunner(c), reporter=reporter)
    return artifact.path


def diffoscope(original: Path, rebuilt: Path, report: Path) -> str:
    """diffoscope's HTML report of the two packages at ``report``; returns a one-line note."""
    if host.which("diffoscope") is None:
        return f"diffoscope is not installed ({host.install_hint('diffoscope')}): no report"
    tmp = report.with_name(f".{report.name}.tmp")
    try:
        proc = host.run(["diffoscope", "--html", tmp, "--no-progress", original, rebuilt],
                        error=BuildError, needed_for="to compare a rebuild with its original",
                        timeout=DIFFOSCOPE_TIMEOUT)
    except host.TimedOut:
        tmp.unlink(missing_ok=True)
        return f"diffoscope did not finish in {DIFFOSCOPE_TIMEOUT}s: no report"
    if proc.returncode not in (0, 1) or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        return f"diffoscope failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"
    tmp.replace(report)
    return f"diffoscope report: {report}"


def _rebuild(settings: Settings, manifest: Manifest, lock_text: str, distro: Distro,
             arch: Arch, image: BuilderImage, folder: Path, reporter: Reporter) -> Path:
    """The rebuilt package, moved into ``folder/rebuilt/``; the scratch tree goes."""
    work = folder / "work"
    work.mkdir(parents=True)
    try:
        scratch_spec, scratch = _scratch_tree(settings, manifest, lock_text, work / "tree")
        try:
            built = _Rebuilder(scratch_spec, distro, arch, scratch, reporter, manifest,
                               image).run()
        finally:
            logs = list((work / "tree" / "build").glob("*/*/*/build.log"))
            if logs:
                shutil.copy(logs[0], folder / "build.log")
        if built.manifest != manifest:
            changed = sorted(k for k, v in dataclasses.asdict(built.manifest).items()
                             if dataclasses.asdict(manifest).get(k) != v)
            reporter.detail("the rebuild's manifest differs in: " + ", ".join(changed))
        packaged = _package(built, scratch_spec, distro, arch, image, scratch, reporter,
                            work / "package")
        rebuilt = folder / "rebuilt" / packaged.name
        rebuilt.parent.mkdir()
        shutil.move(str(packaged), rebuilt)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rebuilt


def rebuild_dir(settings: Settings, manifest: Manifest, digest: str) -> Path:
    return (settings.root / "build" / manifest.project / f"{manifest.distro}-{manifest.arch}"
            / f"rebuild-{digest[:16]}")


def check(target: str, settings: Settings, reporter: Reporter = NULL_REPORTER) -> RebuildResult:
    """Rebuild ``target`` from its manifest in an empty cache, compare, record the verdict."""
    started = time.monotonic()
    artifact = locate(settings, target)
    manifest, lock_text = read_manifest(artifact)
    reporter.info(f"==> rebuild {artifact.filename} (sha256 {artifact.digest[:16]}…) from its "
                  "manifest")
    catalog = Catalog.load(settings)
    distro = catalog.distro(manifest.distro)
    arch = Arch.parse(manifest.arch)
    spec = catalog.spec(manifest.project)
    _check_spec(spec, manifest, distro)
    image = _image(settings, manifest, distro, arch)

    folder = rebuild_dir(settings, manifest, artifact.digest)
    with locked(folder):  # one check of one artifact at a time
        return _check(settings, artifact, manifest, lock_text, distro, arch, image, folder,
                      reporter, started)


def _check(settings: Settings, artifact: Artifact, manifest: Manifest, lock_text: str,
           distro: Distro, arch: Arch, image: BuilderImage, folder: Path, reporter: Reporter,
           started: float) -> RebuildResult:
    if folder.exists():
        shutil.rmtree(folder)  # an earlier check of the same artifact
    try:
        rebuilt = _rebuild(settings, manifest, lock_text, distro, arch, image, folder, reporter)
    except InputUnavailable:
        shutil.rmtree(folder, ignore_errors=True)  # nothing was compared: leave nothing
        raise
    rebuilt_digest = sha256_file(rebuilt)
    same = rebuilt_digest == artifact.digest
    report: Path | None = None
    if same:
        detail = f"rebuilt bit for bit from its manifest in an empty cache ({rebuilt.name})"
    else:
        with reporter.stage(f"diffoscope {artifact.filename}"):
            note = diffoscope(artifact.path, rebuilt, folder / "diffoscope.html")
        report = folder / "diffoscope.html" if (folder / "diffoscope.html").is_file() else None
        detail = f"the rebuild's sha256 is {rebuilt_digest}; {note}"
    duration = round(time.monotonic() - started, 1)
    family_version = str(manifest.version.get(manifest.family, ""))
    from giftbox import records

    with records.open_records(settings) as db:
        verdict = db.record_verdict(
            digest=artifact.digest, distro=manifest.distro, arch=manifest.arch, check=CHECK,
            passed=same, filename=artifact.filename, project=manifest.project,
            version=family_version, channel=artifact.channel,
            log_path=str(report or folder / "build.log"), duration=duration, detail=detail)
    result = RebuildResult(
        project=manifest.project, distro=manifest.distro, arch=manifest.arch,
        version=family_version, artifact=str(artifact.path), filename=artifact.filename,
        digest=artifact.digest, rebuilt=str(rebuilt), rebuilt_digest=rebuilt_digest,
        reproducible=same, directory=str(folder), report=str(report) if report else None,
        detail=detail, duration=duration, verdict_id=verdict.id)
    tmp = folder / ".rebuild.json.tmp"
    tmp.write_text(json.dumps(result.as_dict(), indent=2, sort_keys=True) + "\n")
    tmp.replace(folder / "rebuild.json")
    return result


__all__ = ["CHECK", "InputUnavailable", "RebuildResult", "check", "diffoscope", "locate",
           "read_manifest"]
