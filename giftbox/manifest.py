"""The manifest every artifact carries (design invariant 7), as plain data.

Two views of one build: ``Manifest`` is what goes inside the package (beside the venv), and
must be identical for identical inputs so packages stay bit-identical (invariant 1): it holds
no wall-clock time, only ``source_date_epoch``. ``BuildRecord`` adds what differs between two
runs of the same inputs (when, how long, on which host) and is written beside the artifact
and into the build records, never into the package.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from giftbox import __version__


@dataclass(frozen=True)
class PatchInfo:
    name: str
    sha256: str
    subject: str = ""


@dataclass(frozen=True)
class Manifest:
    project: str
    package_name: str
    upstream_kind: str  # git | pypi
    upstream_url: str
    upstream_ref: str
    upstream_commit: str
    upstream_version: str
    upstream_sha256: str | None  # the tarball's, for pypi
    patches: tuple[PatchInfo, ...]
    patch_digest: str
    source_commit: str  # the patched head
    lock_digest: str
    builder_image: str  # image id (sha256:...) of the builder
    distro: str
    family: str  # deb | rpm
    arch: str  # kernel spelling: x86_64, ppc64le
    python: str  # "3.11"
    prefix: str  # the venv's install path on the target
    version: dict[str, Any]  # PackageVersion.as_dict()
    source_date_epoch: int
    system_bindings: tuple[str, ...] = ()  # modules the venv takes from the distro
    depends: tuple[str, ...] = ()  # runtime packages from the spec, for this family
    giftbox_version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "the manifest") -> Manifest:
        from giftbox.errors import PackageError

        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError("it is not a JSON object")
            data["patches"] = tuple(PatchInfo(**p) for p in data["patches"])
            data["system_bindings"] = tuple(data.get("system_bindings", ()))
            data["depends"] = tuple(data.get("depends", ()))
            return cls(**data)
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            detail = f"misses field {exc}" if isinstance(exc, KeyError) else str(exc)[:200]
            raise PackageError(f"{where} is not a giftbox manifest ({detail})",
                               hint="use the manifest.json a build wrote, unedited; "
                                    "rebuild to get a new one") from None

    @classmethod
    def read(cls, path: Path) -> Manifest:
        from giftbox.errors import PackageError

        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PackageError(f"{path} cannot be read as a manifest: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
        return cls.from_json(text, str(path))


@dataclass(frozen=True)
class BuildRecord:
    """What a run adds to the manifest: wall-clock facts, kept outside the package."""

    manifest: Manifest
    started_at: str  # ISO 8601, UTC
    timings: dict[str, float]
    host: str
    log_path: str | None = None
    cache_hits: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"
