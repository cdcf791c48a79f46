"""CycloneDX SBOMs of giftbox packages (cyclonedx-python-lib).

What a package contains is already inside it, beside the venv: ``giftbox-manifest.json`` (the
upstream URL, commit and tarball sha256, the patches with their digests, the distro packages
it depends on) and ``giftbox-lock.txt`` (every locked dependency with its hashes). The SBOM is
derived from those and from the package's own control data, so it describes exactly the bytes
it sits beside and needs nothing but the artifact:

* the package itself is the BOM's subject (``metadata.component``), with the artifact's sha256;
* the upstream project is a component with its VCS or distribution URL, commit and sha256;
* every patch is a ``file`` component with its sha256;
* every locked dependency is a ``pkg:pypi`` library with all of its locked hashes;
* every distro package in ``Depends:`` is a ``pkg:deb`` component with the relation as written.

It is published beside the package in the channel, at
``repos/<channel>/sbom/<package filename>.cdx.json`` (written atomically; apt and dnf never
read that directory), and is what the ``vulns`` check of giftbox verify audits. The document
is deterministic: the serial number derives from the artifact's sha256 and the timestamp from
the build's SOURCE_DATE_EPOCH.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from giftbox import host
from giftbox.errors import PackageError
from giftbox.files import sha256_file, temp_beside
from giftbox.settings import Settings

SBOM_DIR = "sbom"
SPEC_VERSION = "1.6"


@dataclass(frozen=True)
class Contents:
    """What a .deb says about itself: control fields, manifest, lock."""

    package: str
    version: str
    arch: str
    depends: str
    manifest: dict[str, Any]
    lock: str


def read_deb(path: Path) -> Contents:
    """The control fields and the manifest and lock from the venv root of a giftbox .deb."""
    try:
        fields = host.run(["dpkg-deb", "-f", path, "Package", "Version", "Architecture",
                           "Depends"], error=PackageError, needed_for="to read a .deb",
                          check=True, timeout=120).stdout
        tar_bytes = host.run(["dpkg-deb", "--fsys-tarfile", path], error=PackageError,
                             needed_for="to read a .deb", check=True, timeout=300,
                             text=False).stdout
    except (OSError, host.TimedOut, PackageError) as exc:
        said = exc.message if isinstance(exc, PackageError) else exc
        raise PackageError(f"{path}: dpkg-deb cannot read it: {said}",
                           hint="is it a .deb made by giftbox build?") from None
    control = {}
    for line in fields.splitlines():
        key, _, value = line.partition(":")
        control[key.strip()] = value.strip()
    manifest: dict[str, Any] | None = None
    lock: str | None = None
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            base = member.name.rsplit("/", 1)[-1]
            if base == "giftbox-manifest.json" and manifest is None:
                data = tar.extractfile(member)
                manifest = json.loads(data.read()) if data else None
            elif base == "giftbox-lock.txt" and lock is None:
                data = tar.extractfile(member)
                lock = data.read().decode() if data else None
    if manifest is None or lock is None:
        raise PackageError(f"{path} holds no giftbox-manifest.json and giftbox-lock.txt in "
                           "its venv root", hint="only packages giftbox built carry an SBOM")
    return Contents(control.get("Package", ""), control.get("Version", ""),
                    control.get("Architecture", ""), control.get("Depends", ""), manifest, lock)


def build_sbom(path: Path, digest: str | None = None, distro: str | None = None) -> str:
    """The CycloneDX JSON (spec 1.6) of the package at ``path``."""
    from cyclonedx.model import (
        ExternalReference,
        ExternalReferenceType,
        HashAlgorithm,
        HashType,
        Property,
        XsUri,
    )
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    c = read_deb(path)
    m = c.manifest
    digest = digest or sha256_file(path)
    distro = distro or str(m.get("distro", ""))

    def sha(value: str) -> HashType:
        return HashType(alg=HashAlgorithm.SHA_256, content=value)

    bom = Bom(serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"giftbox:sbom:{digest}"))
    epoch = int(m.get("source_date_epoch") or 0)
    bom.metadata.timestamp = datetime.fromtimestamp(epoch, UTC)
    subject = Component(
        type=ComponentType.APPLICATION, name=c.package, version=c.version,
        bom_ref=f"package:{c.package}@{c.version}",
        purl=PackageURL("deb", "giftbox", c.package, c.version,
                        {"arch": c.arch, "distro": distro}),
        hashes=[sha(digest)],
        properties=[Property(name="giftbox:filename", value=path.name),
                    Property(name="giftbox:prefix", value=str(m.get("prefix", ""))),
                    Property(name="giftbox:lock_digest", value=str(m.get("lock_digest", ""))),
                    Property(name="giftbox:builder_image",
                             value=str(m.get("builder_image", "")))])
    bom.metadata.component = subject
    refs = []
    up_url = str(m.get("upstream_url", ""))
    up_refs = []
    if up_url.startswith(("https://", "http://", "ssh://", "git://", "file://")):
        up_refs.append(ExternalReference(type=ExternalReferenceType.VCS, url=XsUri(up_url)))
    upstream_name = str(m.get("project", c.package))
    upstream = Component(
        type=ComponentType.LIBRARY, name=upstream_name,
        version=str(m.get("upstream_version", "")), bom_ref=f"upstream:{upstream_name}",
        purl=PackageURL("pypi", None, upstream_name, str(m.get("upstream_version", ""))),
        hashes=[sha(m["upstream_sha256"])] if m.get("upstream_sha256") else [],
        external_references=up_refs,
        properties=[Property(name="giftbox:upstream_url", value=up_url),
                    Property(name="giftbox:upstream_ref", value=str(m.get("upstream_ref", ""))),
                    Property(name="giftbox:upstream_commit",
                             value=str(m.get("upstream_commit", ""))),
                    Property(name="giftbox:source_commit",
                             value=str(m.get("source_commit", "")))])
    bom.components.add(upstream)
    refs.append(upstream)
    for i, p in enumerate(m.get("patches") or []):
        patch = Component(type=ComponentType.FILE, name=str(p["name"]),
                          bom_ref=f"patch:{i}:{p['name']}", hashes=[sha(p["sha256"])],
                          description=str(p.get("subject") or "") or None,
                          properties=[Property(name="giftbox:role", value="patch"),
                                      Property(name="giftbox:series_index", value=str(i + 1))])
        bom.components.add(patch)
        refs.append(patch)
    from giftbox.lock import requirements

    for dep in requirements(c.lock):
        lib = Component(type=ComponentType.LIBRARY, name=dep.name, version=dep.version,
                        bom_ref=f"pypi:{dep.name.lower()}@{dep.version}",
                        purl=PackageURL("pypi", None, dep.name.lower(), dep.version),
                        hashes=[sha(h) for h in dep.hashes],
                        properties=[Property(name="giftbox:role", value="locked dependency")])
        bom.components.add(lib)
        refs.append(lib)
    for relation in (r.strip() for r in c.depends.split(",") if r.strip()):
        name = re.split(r"[\s(|:]", relation, maxsplit=1)[0]
        pkg = Component(type=ComponentType.LIBRARY, name=name,
                        bom_ref=f"deb:{name}:{len(refs)}",
                        purl=PackageURL("deb", distro.rstrip("0123456789.") or None, name),
                        properties=[Property(name="giftbox:role", value="distro dependency"),
                                    Property(name="giftbox:relation", value=relation)])
        bom.components.add(pkg)
        refs.append(pkg)
    bom.register_dependency(subject, refs)
    return JsonV1Dot6(bom).output_as_string(indent=2) + "\n"


def validate(text: str) -> None:
    """Raise PackageError unless ``text`` is valid CycloneDX 1.6 JSON (the strict schema)."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise PackageError(f"the SBOM is not valid CycloneDX {SPEC_VERSION}: {error}")


def sbom_path(settings: Settings, channel: str, filename: str) -> Path:
    return settings.repos_dir / channel / SBOM_DIR / f"{filename}.cdx.json"


def publish_sbom(settings: Settings, channel: str, artifact: Path, filename: str,
                 digest: str, distro: str) -> Path:
    """Write the SBOM of ``artifact`` beside it in ``channel`` (atomically); returns the path."""
    text = build_sbom(artifact, digest, distro)
    validate(text)
    dest = sbom_path(settings, channel, filename)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(dest)
    tmp.write_text(text)
    os.replace(tmp, dest)
    return dest


def for_entry(settings: Settings, channel: str, entry: Any) -> dict[str, Any]:
    """The SBOM of a channel entry: the published one when it is there and describes these
    bytes, else made from the artifact (and published beside it)."""
    from giftbox.repo.pool import Pool

    path = sbom_path(settings, channel, entry.filename)
    if path.is_file():
        doc = json.loads(path.read_text())
        hashes = doc.get("metadata", {}).get("component", {}).get("hashes", [])
        if any(h.get("content") == entry.digest for h in hashes):
            return dict(doc)
    pool = Pool(settings.repos_dir)
    artifact = pool.object_path(pool.load(entry.digest))
    written = publish_sbom(settings, channel, artifact, entry.filename, entry.digest,
                           entry.distro)
    return dict(json.loads(written.read_text()))


def python_requirements(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The locked Python dependencies an SBOM lists, as (name, version)."""
    out = []
    for comp in doc.get("components", []):
        purl = str(comp.get("purl", ""))
        roles = {p.get("value") for p in comp.get("properties", [])
                 if p.get("name") == "giftbox:role"}
        if purl.startswith("pkg:pypi/") and "locked dependency" in roles:
            out.append((str(comp["name"]), str(comp["version"])))
    return sorted(out)


__all__ = ["build_sbom", "for_entry", "publish_sbom",
           "python_requirements", "read_deb", "sbom_path", "validate"]
