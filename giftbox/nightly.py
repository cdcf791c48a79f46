"""Nightly builds: every tracked branch, built when something changed, published to a channel.

For each spec whose upstream tracks a branch (``upstream.git.track``), the branch head is
resolved and every target of the spec's matrix that can be built here goes through
``pipeline.run_target`` at that branch. The build key already captures every input (commit,
patch series, lock, builder image), so an unchanged target is a cache hit that costs seconds;
each run and each target's outcome is also recorded (``nightly_runs``/``nightly_targets`` in
the build records), so "unchanged since nightly #N" is a fact read back, not a guess.

Outcomes per target:

* ``built``     inputs changed: built, packaged and published;
* ``published`` a cache hit (built before, e.g. by ``giftbox build``) the channel lacked;
* ``unchanged`` a cache hit the channel already holds: nothing published, nothing recorded
  as a build (the build records only hold builds that ran);
* ``failed``    any GiftboxError (a vanished branch, a patch that no longer applies, a
  failed build or publish): recorded with its error and log, the other targets go on;
* ``skipped``   PyPI upstreams (a release tarball has no branch to follow) and git
  upstreams without ``track:``. Nightly never builds these: a pinned release changes only
  when someone edits its spec, and ``giftbox build --all`` is the tool for that.

Targets run ``jobs`` at a time on giftbox/runner.py's pool, each with its own reporter and
transcript (giftbox/progress.py); the targets and their outcomes are giftbox/targets.py's. This
module is the policy: what nightly builds and publishes, and the CI matrix (``matrix``).
"""

from __future__ import annotations

import difflib
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from giftbox.distros import Arch
from giftbox.errors import GiftboxError, SourceError, StateError
from giftbox.progress import Display, TargetReporter
from giftbox.runner import run_targets
from giftbox.settings import Settings
from giftbox.spec import Spec
from giftbox.targets import OUTCOMES, Catalog, Outcome, Target, matrix_targets
from giftbox.ui import Reporter

# --- what happened ------------------------------------------------------------------------


@dataclass
class NightlyResult:
    run_id: int | None
    channel: str
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.outcome == "failed"]

    def summary(self) -> dict[str, int]:
        return {k: sum(1 for o in self.outcomes if o.outcome == k) for k in OUTCOMES}

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "channel": self.channel, "summary": self.summary(),
                "seconds": round(self.seconds, 1),
                "targets": [o.as_dict() for o in self.outcomes]}


# --- the nightly --------------------------------------------------------------------------


def vanished_branch(spec: Spec, track: str, settings: Settings) -> SourceError:
    """The error for a tracked branch that no longer exists: name it, list nearby ones."""
    from giftbox.source import GitMirror

    assert spec.git is not None
    mirror = GitMirror(spec.git.url, settings)
    branches = mirror.branches() if (mirror.path / "HEAD").exists() else []
    near = difflib.get_close_matches(track, branches, n=8, cutoff=0.3)
    near += [b for b in sorted(branches) if b not in near][: max(0, 8 - len(near))]
    line = spec.lines.get("upstream.git.track")
    where = f"specs/{spec.name}.yaml" + (f":{line}" if line else "")
    return SourceError(
        f"{spec.name}: the tracked branch '{track}' ({where} upstream.git.track) no longer "
        f"exists in {spec.git.url}",
        hint=("branches there now: " + ", ".join(near) if near
              else "the repository has no branches") +
             "; point upstream.git.track at the branch to follow (or remove it to stop "
             "nightly builds of this project)")


def resolve_track(spec: Spec, settings: Settings, reporter: Reporter) -> str:
    """The commit at the head of the spec's tracked branch (fetching the mirror)."""
    from giftbox.source import GitMirror

    assert spec.git is not None and spec.git.track
    track = spec.git.track
    mirror = GitMirror(spec.git.url, settings)
    try:
        mirror.resolve(track, reporter)
    except SourceError as exc:
        if "does not exist" in exc.message:
            raise vanished_branch(spec, track, settings) from None
        raise
    # resolve() also accepts a tag of that name; nightly follows branches only.
    commit = mirror.rev(f"refs/heads/{track}")
    if commit is None:
        raise vanished_branch(spec, track, settings)
    return commit


def skipped_reason(spec: Spec) -> str | None:
    if spec.upstream_kind == "pypi":
        return ("upstream.use is pypi: a release tarball has no branch to follow; "
                "giftbox build builds it")
    if spec.git is None or not spec.git.track:
        return "upstream.git has no track: branch (nothing for nightly to follow)"
    return None


def _in_channel(settings: Settings, channel: str, filename: str, digest: str) -> bool:
    from giftbox.repo import channel_state

    entry = channel_state(settings, channel).entries.get(filename)
    return entry is not None and entry.digest == digest


def nightly_target(target: Target, reporter: TargetReporter, settings: Settings,
                   channel: str, heads: dict[str, str | GiftboxError],
                   heads_lock: threading.Lock,
                   locks: dict[str, threading.Lock]) -> Outcome:
    """Build, package and (if the channel lacks it) publish one target at its branch head."""
    from giftbox import records
    from giftbox.pipeline import run_target
    from giftbox.repo import publish

    spec, distro, arch = target.spec, target.distro, target.arch
    assert spec.git is not None and spec.git.track
    track = spec.git.track
    # One fetch per project, however many targets it has: the first target resolves while
    # the project's other targets wait; other projects resolve meanwhile.
    with heads_lock:
        project_lock = locks.setdefault(spec.name, threading.Lock())
    with project_lock:
        if spec.name not in heads:
            try:
                with reporter.stage(f"resolve {spec.name} {track}"):
                    heads[spec.name] = resolve_track(spec, settings, reporter)
            except GiftboxError as exc:
                heads[spec.name] = exc
        head = heads[spec.name]
    if isinstance(head, GiftboxError):
        raise head
    # The branch name, not the commit, so manifests and versions say what was followed; the
    # build re-resolves it (a push in between is built, and its commit recorded).
    started = records.now()
    try:
        result = run_target(spec, distro, arch, settings, reporter, ref=track, publish=())
    except GiftboxError as exc:
        reporter.info(f"error: {exc.render()}")
        failed = Outcome.of(target, "failed", ref=track, upstream_commit=head,
                            error=exc.render(), exit_code=exc.exit_code)
        # The build stage recorded the failed build (if it got that far): link to it.
        for b in records.last_builds(settings, spec.name):
            if (b.distro, b.arch) == (distro.name, arch.value) and b.status == "failed" \
                    and b.started_at >= started:
                failed.build_id, failed.version = b.id, b.version
                if b.log_path and Path(b.log_path).is_file():
                    failed.log_path = b.log_path
        return failed
    built, package = result.build, result.package
    assert package is not None
    out = Outcome.of(target, "built", ref=track,
                     upstream_commit=built.manifest.upstream_commit, build_key=built.key,
                     build_id=built.build_id, version=package.version,
                     filename=package.path.name, digest=package.sha256, result=result,
                     log_path=str(built.log_path) if not built.cached else None)
    if built.cached and _in_channel(settings, channel, package.path.name, package.sha256):
        # Nothing to publish: say since when the channel has held this build.
        with records.open_records(settings) as db:
            last = db.last_nightly_target(spec.name, distro.name, arch.value, good=True)
        since = f"since nightly #{last.run_id}" if last and last.build_key == built.key \
            else f"already in {channel}"
        out.outcome, out.detail = "unchanged", f"{since}, inputs {built.key[:12]}"
        return out
    # Recorded by the publish, in its transaction, linked to the build.
    with reporter.stage(f"publish {package.path.name} to {channel}"):
        publish(channel, [package.path], settings, reporter, record=True,
                build_id=built.build_id)
    if built.cached:
        out.outcome, out.detail = "published", f"built before, new to {channel}"
    else:
        out.detail = f"{built.manifest.upstream_commit[:12]} of {track}, published to {channel}"
    return out


def run_nightly(settings: Settings, *, channel: str = "nightly", jobs: int = 1,
                projects: Sequence[str] = (), display: Display | None = None,
                reporter: Reporter | None = None) -> NightlyResult:
    """Build every tracked project's matrix (runnable here) and publish what changed."""
    from giftbox import records
    from giftbox.keys import signing_key
    from giftbox.repo import get_channel

    start = time.monotonic()
    # Fail before any build: an unknown channel, no signing key, an unusable database.
    signing_key(settings, get_channel(settings, channel))
    catalog = Catalog.load(settings)
    specs = catalog.specs(projects)
    with records.open_records(settings) as db:
        run_id = db.start_nightly(channel)
    result = NightlyResult(run_id=run_id, channel=channel)
    targets: list[Target] = []
    for spec in specs:
        reason = skipped_reason(spec)
        if reason is None:
            targets.extend(catalog.matrix(spec))
            continue
        for t in catalog.matrix(spec):
            result.outcomes.append(Outcome.of(t, "skipped", detail=reason))
    if reporter is not None:
        reporter.info(f"==> nightly #{run_id} into {channel}: {len(targets)} target(s), "
                      f"{len(result.outcomes)} skipped, {jobs} at a time")
    heads: dict[str, str | GiftboxError] = {}
    heads_lock = threading.Lock()
    locks: dict[str, threading.Lock] = {}
    logs = settings.state_dir / "logs" / f"nightly-{run_id}"

    def work(target: Target, rep: TargetReporter) -> Outcome:
        return nightly_target(target, rep, settings, channel, heads, heads_lock, locks)

    result.outcomes += run_targets(targets, work, settings, jobs=jobs, display=display,
                                   logs=logs)
    result.outcomes.sort(key=lambda o: (o.project, o.distro, o.arch))
    unrecorded = []
    with records.open_records(settings) as db:
        for o in result.outcomes:
            try:
                db.record_nightly_target(
                    run_id, o.project, o.distro, o.arch, o.outcome, ref=o.ref,
                    upstream_commit=o.upstream_commit, build_key=o.build_key,
                    build_id=o.build_id, version=o.version, filename=o.filename,
                    digest=o.digest, detail=o.detail, error=o.error, log_path=o.log_path,
                    duration=o.duration)
            except StateError as exc:  # locked for longer than the timeout: say so, go on
                unrecorded.append(f"{o.target}: {exc.message}")
        db.finish_nightly(run_id, "failed" if result.failed else "succeeded",
                          result.summary())
    if unrecorded:
        raise StateError("nightly #{} ran, but some outcomes could not be recorded:\n{}"
                         .format(run_id, "\n".join(unrecorded)))
    result.seconds = time.monotonic() - start
    return result


# --- the CI matrix ------------------------------------------------------------------------

# GitHub's hosted runners are x86_64: other arches build there under qemu-user.
GITHUB_RUNNER = "ubuntu-latest"
_LABEL_RE = re.compile(r"[^a-z0-9]+")


def matrix(settings: Settings, *, runnable_here: bool = False,
           tracked_only: bool = False) -> list[dict[str, Any]]:
    """Every spec x distro x arch as CI matrix cells.

    ``runnable_here``: the distro's builder can be bootstrapped by this giftbox without a
    registry (``runnable_here`` in builder.yaml); ``emulated``: the arch is not the runner's
    own, so the job needs qemu-user (docker/setup-qemu-action); ``ref``: the branch a
    nightly builds (empty: the pinned ref).
    """
    from giftbox import builders

    catalog = Catalog.load(settings)
    cells = []
    for spec in catalog.specs():
        tracked = skipped_reason(spec) is None
        if tracked_only and not tracked:
            continue
        for t in matrix_targets(spec, catalog.distros, runnable_only=runnable_here):
            # Whether the distro's archive serves the arch (its Release's Architectures:).
            archive = builders.served(t.distro, t.arch, settings)
            if runnable_here and not archive.ok:
                continue  # `giftbox matrix` without --runnable-here lists it, with why
            cells.append({
                "served": archive.ok, "problem": "" if archive.ok else archive.problem(),
                "project": spec.name, "distro": t.distro.name, "arch": t.arch.value,
                "family": t.distro.family, "runnable_here": t.distro.runnable_here,
                "emulated": t.arch is not Arch.x86_64, "runs_on": GITHUB_RUNNER,
                "platform": t.arch.platform, "tracked": tracked,
                "ref": spec.git.track if tracked and spec.git else "",
                "name": _LABEL_RE.sub("-", t.log_name.lower()).strip("-"),
            })
    return cells
