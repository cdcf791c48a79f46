"""What a command builds: one ``Target(spec, distro, arch)``, the catalog it is chosen from,
and the ``Outcome`` of running it.

A target is checked once, when it is made (the distro builds the arch), and then carries its
names: ``slug`` (``debian12-x86_64``: lock files, build and log directories), ``label``
(``nova debian12/x86_64``: what the operator reads) and ``log_name``. The ``Catalog`` reads
the specs and the distros once per command; ``Catalog.select`` is the target choice of
``giftbox lock`` and ``giftbox build`` (``--distro``/``--arch``, or the spec's matrix where
runnable here), ``matrix_targets`` the spec's matrix that nightly and the CI matrix walk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from giftbox.distros import Arch, Distro, load_distros, pick_distro
from giftbox.errors import BuildError
from giftbox.settings import Settings
from giftbox.spec import Spec, find_spec, list_projects

OUTCOMES = ("built", "published", "unchanged", "failed", "skipped")


@dataclass(frozen=True)
class Target:
    """One spec built for one distro and arch; made only for an arch the distro builds."""

    spec: Spec
    distro: Distro
    arch: Arch

    def __post_init__(self) -> None:
        if not self.distro.supports(self.arch):
            raise BuildError(
                f"{self.spec.name}: {self.distro.name} does not build {self.arch.value}",
                hint=f"builders/{self.distro.name}/builder.yaml arches: "
                     + ", ".join(a.value for a in self.distro.arches))

    @property
    def slug(self) -> str:
        """``debian12-x86_64``: the distro/arch part of lock, build and log paths."""
        return self.distro.slug(self.arch)

    @property
    def label(self) -> str:
        """``nova debian12/x86_64``: the target as the operator reads it."""
        return f"{self.spec.name} {self.distro.name}/{self.arch.value}"

    @property
    def log_name(self) -> str:
        """``nova-debian12-x86_64``: the target's transcript in a run's log directory."""
        return f"{self.spec.name}-{self.slug}"


def _buildable(spec: Spec, distros: Sequence[Distro], arches: Sequence[Arch]) -> list[Target]:
    """Every distro x arch pair the distro builds (the others left out), distro first."""
    return [Target(spec, d, a) for d in distros for a in arches if d.supports(a)]


def matrix_targets(spec: Spec, distros: dict[str, Distro], *,
                   runnable_only: bool = True) -> list[Target]:
    """The spec's matrix (distro x arch the distro supports), where runnable here."""
    chosen = [distros[n] for n in spec.distros if distros[n].runnable_here or not runnable_only]
    return _buildable(spec, chosen, [Arch.parse(a) for a in spec.arches])


@dataclass
class Catalog:
    """The distros (builders/*/builder.yaml) and specs of one command, each read once."""

    settings: Settings
    distros: dict[str, Distro]
    _specs: dict[str, Spec] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, settings: Settings) -> Catalog:
        return cls(settings, load_distros(settings.builders_dir))

    def distro(self, name: str) -> Distro:
        return pick_distro(self.distros, name)

    def spec(self, project: str) -> Spec:
        if project not in self._specs:
            self._specs[project] = find_spec(self.settings.root, project,
                                             frozenset(self.distros))
        return self._specs[project]

    def projects(self) -> list[str]:
        """Every project of the tree (specs/*.yaml), sorted."""
        return list_projects(self.settings.root)

    def specs(self, projects: Sequence[str] = ()) -> list[Spec]:
        """The named specs, or every spec of the tree."""
        return [self.spec(p) for p in projects or self.projects()]

    def matrix(self, spec: Spec, *, runnable_only: bool = True) -> list[Target]:
        return matrix_targets(spec, self.distros, runnable_only=runnable_only)

    def select(self, spec: Spec, distros: Sequence[str] = (),
               arches: Sequence[str] = ()) -> list[Target]:
        """The requested targets (``--distro``, ``--arch``); by default the spec's matrix
        runnable here. A requested pair the distro does not build is left out; nothing left
        is an error."""
        if distros:
            chosen = [self.distro(d) for d in distros]
        else:
            chosen = [self.distros[d] for d in spec.distros if self.distros[d].runnable_here]
        arch_list = [Arch.parse(a) for a in arches or spec.arches]
        targets = _buildable(spec, chosen, arch_list)
        if not targets:
            raise BuildError(f"nothing to do for {spec.name}: no requested distro supports "
                             + ", ".join(a.value for a in arch_list))
        return targets

    def select_many(self, projects: Sequence[str] = (), distros: Sequence[str] = (),
                    arches: Sequence[str] = ()) -> list[Target]:
        """``select`` over the named specs; with none named, over every spec, leaving out
        those with nothing to build here (not an error then)."""
        targets: list[Target] = []
        for spec in self.specs(projects):
            try:
                targets += self.select(spec, distros, arches)
            except BuildError:
                if projects:
                    raise
        return targets


def load_specs(settings: Settings, projects: Sequence[str] = ()) -> list[Spec]:
    return Catalog.load(settings).specs(projects)


@dataclass
class Outcome:
    """What happened to one target (in a nightly or a ``build --all``)."""

    project: str
    distro: str
    arch: str
    outcome: str  # one of OUTCOMES
    detail: str = ""
    ref: str = ""
    upstream_commit: str = ""
    build_key: str = ""
    build_id: int | None = None
    version: str = ""
    filename: str = ""
    digest: str = ""
    error: str | None = None
    exit_code: int = 0
    log_path: str | None = None
    duration: float = 0.0
    result: Any = None  # the TargetResult, when there is one (not serialised)

    @classmethod
    def of(cls, target: Target, outcome: str, **fields: Any) -> Outcome:
        return cls(target.spec.name, target.distro.name, target.arch.value, outcome, **fields)

    @property
    def target(self) -> str:
        return f"{self.project} {self.distro}/{self.arch}"

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "result"}
        if self.result is not None:
            d["result"] = self.result.as_dict()
        return d

    def line(self) -> str:
        text = f"{self.outcome:<9} {self.target}"
        if self.version:
            text += f"  {self.version}"
        if self.detail:
            text += f"  ({self.detail})"
        if self.error:
            text += "\n          " + self.error.strip().replace("\n", "\n          ")
        return text
