"""Running many targets at once: a thread pool, one reporter and transcript per target, a
failure never stopping the others.

``run_targets`` runs any per-target work (nightly's, build's); ``build_targets`` is
``giftbox build --all``/``--jobs``: ``pipeline.run_target`` for each target. The work happens
in containers and git, so threads only wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from giftbox.errors import GiftboxError
from giftbox.progress import Display, TargetReporter, make_display
from giftbox.settings import Settings
from giftbox.targets import Outcome, Target

Work = Callable[[Target, TargetReporter], Outcome]


def run_targets(targets: Sequence[Target], work: Work, settings: Settings, *, jobs: int = 1,
                display: Display | None = None, logs: Path | None = None) -> list[Outcome]:
    """``work`` for every target, ``jobs`` at a time; a failure never stops the others.

    ``work`` returns the target's Outcome; a GiftboxError it raises becomes a ``failed``
    outcome. Results come back in the order of ``targets``.
    """
    display = display or make_display(jobs, smart_terminal=settings.smart_terminal)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    logs = logs or settings.state_dir / "logs" / stamp
    display.start([t.label for t in targets])
    cancelled = threading.Event()

    def one(target: Target) -> Outcome:
        transcript = logs / f"{target.log_name}.log"
        if cancelled.is_set():
            return Outcome.of(target, "failed", error="interrupted before it started",
                              exit_code=130)
        reporter = TargetReporter(target.label, display, transcript)
        start = time.monotonic()
        try:
            outcome = work(target, reporter)
        except GiftboxError as exc:
            reporter.info(f"error: {exc.render()}")
            outcome = Outcome.of(target, "failed", error=exc.render(), exit_code=exc.exit_code)
        except Exception as exc:  # a bug: keep the other targets going, show the traceback
            import traceback

            reporter.info(traceback.format_exc())
            outcome = Outcome.of(target, "failed", error=f"{type(exc).__name__}: {exc}",
                                 exit_code=1)
        finally:
            reporter.close()
        outcome.duration = round(time.monotonic() - start, 1)
        if outcome.log_path is None:
            outcome.log_path = str(transcript)
        display.finish(target.label, outcome)
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


def build_targets(targets: Sequence[Target], settings: Settings, *, jobs: int = 1,
                  ref: str | None = None, package: bool = True, publish: Sequence[str] = (),
                  packager: str = "auto", compression: str | None = None,
                  compression_level: int | None = None) -> list[Outcome]:
    """``giftbox build`` for several targets: built (or a cache hit: ``unchanged``),
    packaged and published as asked, ``jobs`` at a time."""
    from giftbox.pipeline import run_target

    def work(target: Target, reporter: TargetReporter) -> Outcome:
        result = run_target(target.spec, target.distro, target.arch, settings, reporter,
                            ref=ref, package=package, publish=tuple(publish),
                            packager=packager, compression=compression,
                            compression_level=compression_level)
        b, p = result.build, result.package
        return Outcome.of(target, "unchanged" if b.cached else "built",
                          detail=", ".join(f"published to {c}" for c in result.published),
                          upstream_commit=b.manifest.upstream_commit, build_key=b.key,
                          build_id=b.build_id, version=p.version if p else "",
                          filename=p.path.name if p else "", digest=p.sha256 if p else "",
                          log_path=str(b.log_path), result=result)

    return run_targets(targets, work, settings, jobs=jobs)
