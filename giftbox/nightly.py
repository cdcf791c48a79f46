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

Targets run on a thread pool (``jobs``): the work happens in containers and git, so threads
only wait. Each target gets its own ``TargetReporter``, which keeps a transcript of its
stages (the log the report links to) and feeds one shared progress display.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from giftbox.distros import Arch, Distro, load_distros
from giftbox.errors import GiftboxError, SourceError, StateError
from giftbox.settings import Settings
from giftbox.spec import Spec, find_spec, list_projects
from giftbox.ui import Reporter

OUTCOMES = ("built", "published", "unchanged", "failed", "skipped")


# --- targets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    spec: Spec
    distro: Distro
    arch: Arch

    @property
    def name(self) -> str:
        return f"{self.spec.name} {self.distro.name}/{self.arch.value}"

    @property
    def slug(self) -> str:
        return f"{self.spec.name}-{self.distro.name}-{self.arch.value}"


def matrix_targets(spec: Spec, distros: dict[str, Distro], *,
                   runnable_only: bool = True) -> list[Target]:
    """The spec's matrix (distro x arch the distro supports), where runnable here."""
    out = []
    for name in spec.distros:
        d = distros[name]
        if runnable_only and not d.runnable_here:
            continue
        for arch_name in spec.arches:
            arch = Arch.parse(arch_name)
            if d.supports(arch):
                out.append(Target(spec, d, arch))
    return out


def load_specs(settings: Settings, projects: Sequence[str] = ()) -> list[Spec]:
    distros = frozenset(load_distros(settings.builders_dir))
    return [find_spec(settings.root, p, distros) for p in projects or list_projects(settings.root)]


# --- what happened ------------------------------------------------------------------------


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


# --- progress -----------------------------------------------------------------------------


class Display:
    """Where per-target reporters send their events. Thread-safe."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.lock = threading.Lock()

    def start(self, targets: Sequence[str]) -> None:
        pass

    def stage(self, target: str, name: str, event: str, elapsed: float | None = None) -> None:
        pass

    def line(self, target: str, text: str) -> None:
        pass

    def finish(self, target: str, outcome: Outcome) -> None:
        with self.lock:
            print(outcome.line(), file=self.stream, flush=True)

    def close(self) -> None:
        pass


class SerialDisplay(Display):
    """One target at a time: everything the reporter says goes through, as in ``build``."""

    def line(self, target: str, text: str) -> None:
        with self.lock:
            print(text, file=self.stream, flush=True)


class LineDisplay(Display):
    """Not a terminal (CI): one line per stage event, prefixed with its target, so that
    interleaved targets stay readable in a log."""

    def stage(self, target: str, name: str, event: str, elapsed: float | None = None) -> None:
        suffix = f" after {elapsed:.1f}s" if elapsed is not None else ""
        with self.lock:
            print(f"[{target}] {event} {name}{suffix}", file=self.stream, flush=True)


class LiveDisplay(Display):
    """A terminal: one line per target, redrawn in place, with its stage and elapsed time."""

    def __init__(self, stream: TextIO | None = None, interval: float = 0.5) -> None:
        super().__init__(stream)
        self.interval = interval
        self.rows: dict[str, list[Any]] = {}  # target -> [state, stage, started, ended]
        self.drawn = 0
        self.done: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self, targets: Sequence[str]) -> None:
        for t in targets:
            self.rows[t] = ["queued", "", None, None]
        self._thread.start()

    def stage(self, target: str, name: str, event: str, elapsed: float | None = None) -> None:
        with self.lock:
            row = self.rows.setdefault(target, ["queued", "", None, None])
            if row[2] is None:
                row[0], row[2] = "running", time.monotonic()
            if event == "start":
                row[1] = name

    def finish(self, target: str, outcome: Outcome) -> None:
        with self.lock:
            row = self.rows.setdefault(target, ["queued", "", None, None])
            row[0], row[1], row[3] = outcome.outcome, outcome.version or outcome.detail, \
                time.monotonic()
            # Finished targets are printed once above the live block, never redrawn.
            self.done.append(outcome.line())
            self._draw()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self.lock:
                self._draw()

    def _draw(self) -> None:
        out = self.stream
        width = _term_width()
        if self.drawn:
            out.write(f"\x1b[{self.drawn}F\x1b[J")  # back to the block's top, clear below
        for text in self.done:
            out.write(text + "\n")
        self.done.clear()
        now = time.monotonic()
        live = [(t, r) for t, r in self.rows.items() if r[0] in ("queued", "running")]
        for target, (state, stage, started, _ended) in live:
            elapsed = f"{now - started:6.0f}s" if started is not None else "      "
            text = f"  {state:<7} {elapsed}  {target:<36} {stage}"
            out.write(text[: width - 1] + "\n")
        self.drawn = len(live)
        out.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with self.lock:
            self._draw()


def _term_width() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except OSError:
        return 120


def make_display(jobs: int, stream: TextIO | None = None) -> Display:
    stream = stream or sys.stderr
    if jobs <= 1:
        return SerialDisplay(stream)
    if stream.isatty() and os.environ.get("TERM") != "dumb":
        return LiveDisplay(stream)
    return LineDisplay(stream)


class TargetReporter(Reporter):
    """A Reporter for one target: a transcript file (the target's log) plus the display."""

    def __init__(self, target: str, display: Display, transcript: Path) -> None:
        transcript.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(transcript, "w")  # noqa: SIM115 - closed by close()
        super().__init__(self._file)
        # Parallel targets interleave: CI log groups would nest nonsensically.
        self.ci_groups = False
        self.target = target
        self.display = display
        self.transcript = transcript

    def info(self, message: str) -> None:
        super().info(message)
        self.display.line(self.target, message)

    def detail(self, message: str) -> None:
        super().detail(message)
        self.display.line(self.target, f"    {message}")

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.display.stage(self.target, name, "start")
        start = time.monotonic()
        try:
            with super().stage(name):
                yield
        except BaseException:
            self.display.stage(self.target, name, "failed", time.monotonic() - start)
            raise
        self.display.stage(self.target, name, "done", time.monotonic() - start)

    def close(self) -> None:
        self._file.close()


# --- running targets ----------------------------------------------------------------------


Work = Callable[[Target, TargetReporter], Outcome]


def run_targets(targets: Sequence[Target], work: Work, settings: Settings, *, jobs: int = 1,
                display: Display | None = None, logs: Path | None = None) -> list[Outcome]:
    """``work`` for every target, ``jobs`` at a time; a failure never stops the others.

    ``work`` returns the target's Outcome; a GiftboxError it raises becomes a ``failed``
    outcome. Results come back in the order of ``targets``.
    """
    display = display or make_display(jobs)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    logs = logs or settings.state_dir / "logs" / stamp
    display.start([t.name for t in targets])
    cancelled = threading.Event()

    def one(target: Target) -> Outcome:
        transcript = logs / f"{target.slug}.log"
        if cancelled.is_set():
            return Outcome(target.spec.name, target.distro.name, target.arch.value, "failed",
                           error="interrupted before it started", exit_code=130)
        reporter = TargetReporter(target.name, display, transcript)
        start = time.monotonic()
        try:
            outcome = work(target, reporter)
        except GiftboxError as exc:
            reporter.info(f"error: {exc.render()}")
            outcome = Outcome(target.spec.name, target.distro.name, target.arch.value,
                              "failed", error=exc.render(), exit_code=exc.exit_code)
        except Exception as exc:  # a bug: keep the other targets going, show the traceback
            import traceback

            reporter.info(traceback.format_exc())
            outcome = Outcome(target.spec.name, target.distro.name, target.arch.value,
                              "failed", error=f"{type(exc).__name__}: {exc}", exit_code=1)
        finally:
            reporter.close()
        outcome.duration = round(time.monotonic() - start, 1)
        if outcome.log_path is None:
            outcome.log_path = str(transcript)
        display.finish(target.name, outcome)
        return outcome

    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="giftbox") as pool:
            futures = [pool.submit(one, t) for t in targets]
            try:
                return [f.result() for f in futures]
            except KeyboardInterrupt:
                # Running targets finish (their containers are cleaned up by their own
                # context managers); queued ones do not start.
                cancelled.set()
                for f in futures:
                    f.cancel()
                raise
    finally:
        display.close()


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
        failed = Outcome(spec.name, distro.name, arch.value, "failed", ref=track,
                         upstream_commit=head, error=exc.render(), exit_code=exc.exit_code)
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
    out = Outcome(spec.name, distro.name, arch.value, "built", ref=track,
                  upstream_commit=built.manifest.upstream_commit, build_key=built.key,
                  build_id=built.build_id, version=package.version,
                  filename=package.path.name, digest=package.sha256, result=result,
                  log_path=str(built.log_path) if not built.cached else None)
    if built.cached and _in_channel(settings, channel, package.path.name, package.sha256):
        # pipeline.run_target(publish=...) would record a publish of the unchanged file
        # every night; the channel history should show only what changed.
        with records.open_records(settings) as db:
            last = db.last_nightly_target(spec.name, distro.name, arch.value, good=True)
        since = f"since nightly #{last.run_id}" if last and last.build_key == built.key \
            else f"already in {channel}"
        out.outcome, out.detail = "unchanged", f"{since}, inputs {built.key[:12]}"
        return out
    with reporter.stage(f"publish {package.path.name} to {channel}"):
        publish(channel, [package.path], settings, reporter)
    records.record_publish(settings, channel, package.sha256, package.path.name,
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
    distros = load_distros(settings.builders_dir)
    specs = load_specs(settings, projects)
    with records.open_records(settings) as db:
        run_id = db.start_nightly(channel)
    result = NightlyResult(run_id=run_id, channel=channel)
    targets: list[Target] = []
    for spec in specs:
        reason = skipped_reason(spec)
        if reason is None:
            targets.extend(matrix_targets(spec, distros))
            continue
        for t in matrix_targets(spec, distros):
            result.outcomes.append(Outcome(spec.name, t.distro.name, t.arch.value, "skipped",
                                           detail=reason))
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

    distros = load_distros(settings.builders_dir)
    cells = []
    for spec in load_specs(settings):
        tracked = skipped_reason(spec) is None
        if tracked_only and not tracked:
            continue
        for t in matrix_targets(spec, distros, runnable_only=runnable_here):
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
                "name": _LABEL_RE.sub("-", t.slug.lower()).strip("-"),
            })
    return cells
