"""A stateful property test of the channels (issue #12): random sequences of publish, promote,
rollback, prune, pin and recovery, with a kill injected at any step boundary of the change
(``publish.FAULT_HOOK``: journal, built, swap, swapped, saved, recorded, done) and a few real
SIGKILLs of ``giftbox publish`` at random delays, checked against a model after every step:

* what giftbox's state says each channel holds is what the model says;
* ``apt-get update`` (the host's apt, against the channels served on loopback, with each
  channel's key) succeeds, and apt offers exactly the model's versions once no change is
  pending (while one is, what it offers was the model's since the last clean state);
* every file named by the live or the previous index generation is served (no 404 for a client
  mid-update), so every package is either served or was removed by an explicit prune/rollback;
* the history (build records) replayed from empty gives the channel's state;
* at the end of each example, dnf reads nightly's signed yum repository.

Bounded for CI: 4 derandomized examples of up to 10 steps (30-60 s here). For a longer
random campaign: GIFTBOX_MODEL_RANDOM=1 GIFTBOX_MODEL_EXAMPLES=50 GIFTBOX_MODEL_STEPS=20
(GIFTBOX_MODEL_VERBOSE=1 prints each example's steps).
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Verbosity, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from plumbum import local

from giftbox.errors import RepoError
from giftbox.family import DEB
from giftbox.repo import channel_state, public_key_path, publish, republish
from giftbox.repo.promote import history, pin, promote, prune, rollback
from tests.repo_fixtures import (
    dnf_repoquery,
    http_server,
    keyring_template,  # noqa: F401  (fixture)
    make_deb,
    make_tree,
)
from tests.test_repo_integrity import apt_lists, packages_of

publish_mod = importlib.import_module("giftbox.repo.publish")  # the module, not the function
HELLO = "giftbox-hello"
VERSIONS = [f"1.{i}-1~deb12" for i in range(5)]
KILLS = st.sampled_from([None, None, *publish_mod.FAULT_POINTS])
CHANNELS = ("nightly", "stable")
EXAMPLES = int(os.environ.get("GIFTBOX_MODEL_EXAMPLES", "4"))
STEPS = int(os.environ.get("GIFTBOX_MODEL_STEPS", "10"))


class Killed(BaseException):
    """Stands for a SIGKILL at a fault point: nothing after it runs (not an Exception, so no
    cleanup meant for errors catches it)."""


def filename(version: str) -> str:
    return f"{HELLO}_{version}_all.deb"


def version_of(name: str) -> str:
    return name.split("_")[1]


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("model-debs")
    return {v: make_deb(out, version=v) for v in VERSIONS}


class Channels(RuleBasedStateMachine):
    """The channels nightly and stable of a fresh tree per example, and their model."""

    # Set by the tests before a run (hypothesis builds the machine without arguments).
    where: Path
    keyring: Path
    debs: dict[str, Path]
    examples = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        base = self.where / f"example-{next(self.examples)}"
        self.tree = make_tree(base)
        self.base = base
        self.tree.settings.state_dir.mkdir(parents=True)
        shutil.copytree(self.keyring, self.tree.settings.state_dir / "gnupg",
                        ignore=shutil.ignore_patterns("S.*", "*.lock", ".#*"))
        self.s = self.tree.settings
        self.model: dict[str, set[str]] = {c: set() for c in CHANNELS}
        self.previous: dict[str, set[str]] = {c: set() for c in CHANNELS}
        self.maybe_live: dict[str, set[str]] = {c: set() for c in CHANNELS}
        self.pins: dict[str, set[str]] = {c: set() for c in CHANNELS}
        self.promotions: list[dict[str, object]] = []  # {"before": set, "rolled": bool}
        self.sigkills = 0
        self.killed = False
        self.log: list[str] = []
        self.tree.repos.mkdir(parents=True, exist_ok=True)
        self._server = http_server(self.tree.repos)
        self.url = self._server.__enter__()

    def teardown(self) -> None:
        if os.environ.get("GIFTBOX_MODEL_VERBOSE"):
            print("steps:", "; ".join(self.log), "| model:", self.model)
        try:
            if (self.tree.repos / "nightly" / "yum").is_dir():
                # dnf reads nightly's yum repository, signed, after whatever happened
                # (once per example: dnf costs seconds).
                code, out = dnf_repoquery(self.base, f"{self.url}/nightly/yum/rocky9/x86_64",
                                          public_key_path(self.s, "nightly"))
                assert code == 0, out
        finally:
            self._server.__exit__(None, None, None)
        local["gpgconf"]["--homedir", str(self.s.state_dir / "gnupg"), "--kill",
                         "all"].run(retcode=None)

    # --- running a step with a kill injected -----------------------------------------

    def _step(self, kill_at: str | None, fn):  # type: ignore[no-untyped-def]
        self.previous = {c: set(v) for c, v in self.model.items()}
        fired: list[str] = []

        def hook(point: str) -> None:
            if point == kill_at and not fired:
                fired.append(point)
                raise Killed(point)

        publish_mod.FAULT_HOOK = hook
        try:
            fn()
        except Killed:
            pass
        finally:
            publish_mod.FAULT_HOOK = None
        self.killed = bool(fired)
        self.log.append(f"{sys._getframe(1).f_code.co_name}"
                        + (f" killed at {kill_at}" if fired else ""))

    # --- rules: every kill point is after the journal, so a killed change is committed

    @rule(version=st.sampled_from(VERSIONS), kill_at=KILLS)
    def publish_nightly(self, version: str, kill_at: str | None) -> None:
        self._step(kill_at, lambda: publish("nightly", [self.debs[version]], self.s,
                                            record=True))
        self.model["nightly"].add(version)

    @rule(kill_at=KILLS)
    def promote_to_stable(self, kill_at: str | None) -> None:
        if not self.model["nightly"]:
            with pytest.raises(RepoError):
                promote(self.s, "hello", "nightly", "stable")
            return
        best = max(self.model["nightly"], key=DEB.sort_key())
        before = set(self.model["stable"])
        self._step(kill_at, lambda: promote(self.s, "hello", "nightly", "stable"))
        if best not in before:
            self.model["stable"].add(best)
            self.promotions.append({"before": before, "rolled": False})

    @rule(kill_at=KILLS)
    def rollback_stable(self, kill_at: str | None) -> None:
        live = [p for p in self.promotions if not p["rolled"]]
        if not live:
            with pytest.raises(RepoError, match="nothing to roll back"):
                rollback(self.s, "stable", "hello")
            return
        self._step(kill_at, lambda: rollback(self.s, "stable", "hello"))
        live[-1]["rolled"] = True
        self.model["stable"] = set(live[-1]["before"])  # type: ignore[call-overload]

    @rule(channel=st.sampled_from(CHANNELS), keep=st.integers(1, 2), kill_at=KILLS)
    def prune_channel(self, channel: str, keep: int, kill_at: str | None) -> None:
        self._step(kill_at, lambda: prune(self.s, channel, keep))
        ranked = sorted(self.model[channel], key=DEB.sort_key(), reverse=True)
        self.model[channel] = set(ranked[:keep]) | (set(ranked[keep:]) & self.pins[channel])

    @rule(channel=st.sampled_from(CHANNELS), version=st.sampled_from(VERSIONS))
    def pin_version(self, channel: str, version: str) -> None:
        self.previous = {c: set(v) for c, v in self.model.items()}
        self.killed = False
        if version not in self.model[channel]:
            with pytest.raises(RepoError, match="does not have|has no package"):
                pin(self.s, channel, HELLO, version)
            return
        pin(self.s, channel, HELLO, version)
        self.pins[channel].add(version)
        self.log.append(f"pin {channel} {version}")

    @rule(channel=st.sampled_from(CHANNELS))
    def recover(self, channel: str) -> None:
        self.previous = {c: set(v) for c, v in self.model.items()}
        self.killed = False
        republish(channel, self.s)
        self.log.append(f"recover {channel}")

    @precondition(lambda self: self.sigkills < 2)
    @rule(version=st.sampled_from(VERSIONS), delay=st.floats(0.2, 1.6))
    def sigkill_a_real_publish(self, version: str, delay: float) -> None:
        """A real SIGKILL of ``giftbox publish`` at a random moment: committed or not,
        the channel holds it afterwards exactly when its state (journal folded) says so."""
        self.sigkills += 1
        self.previous = {c: set(v) for c, v in self.model.items()}
        proc = subprocess.Popen(
            [sys.executable, "-c", "from giftbox.cli import main; main()", "publish",
             "nightly", str(self.debs[version])], env={**os.environ, **self.tree.env()},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.killed = True
        if filename(version) in channel_state(self.s, "nightly").entries:
            self.model["nightly"].add(version)
        self.log.append(f"sigkill publish {version} after {delay:.2f}s "
                        f"(rc {proc.returncode})")

    # --- the checks ------------------------------------------------------------------

    @invariant()
    def channels_agree_with_the_model(self) -> None:
        for ch in CHANNELS:
            root = self.tree.repos / ch
            held = {version_of(f) for f in channel_state(self.s, ch).entries}
            assert held == self.model[ch], (ch, held, self.model[ch])
            if not (root / "apt" / "dists").exists():
                continue
            pending = (root / "pending.json").exists()
            code, out, offered = apt_lists(self.base / f"apt-{ch}", f"{self.url}/{ch}/apt",
                                           public_key_path(self.s, ch))
            assert code == 0, out
            if pending:
                # An interrupted change of this channel, finished by its next change: apt sees
                # what was live before it, or after it.
                self.maybe_live[ch] |= self.previous[ch] | self.model[ch]
                assert set(offered) <= self.maybe_live[ch], (ch, offered, self.log)
            else:
                assert set(offered) == self.model[ch], (ch, offered, self.model[ch])
                self.maybe_live[ch] = set(self.model[ch])
            # Every file the live or the previous index names is there to download.
            gens = sorted(p.name for p in (root / "apt" / ".gen" / "bookworm").iterdir())
            for gen in gens[-2:]:
                for s in packages_of(self.tree, ch, gen):
                    assert (root / "apt" / s["Filename"]).is_file(), (ch, gen, s)
            if not pending:
                assert self._replayed(ch) == {filename(v) for v in self.model[ch]}
                if not self.killed:
                    assert [p for p in root.rglob("*.tmp") if p.is_file()] == []

    def _replayed(self, ch: str) -> set[str]:
        """The channel's entries as its history tells them, from empty."""
        held: set[str] = set()
        for e in history(self.s, ch):
            if e.kind == "publish":
                held.add(e.detail["filename"])
            elif e.kind == "promote":
                held |= set(e.detail["filenames"])
            elif e.kind == "rollback":  # the scope (one package here) as it is after it
                held = set(e.detail["filenames"])
            elif e.kind == "prune":
                held -= set(e.detail["filenames"])
        return held


def _prepare(tmp_path: Path, keyring: Path, debs: dict[str, Path],
             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIFTBOX_USER", "model")
    monkeypatch.delenv("GIFTBOX_DATABASE", raising=False)
    Channels.where, Channels.keyring, Channels.debs = tmp_path, keyring, debs


def test_every_operation_killed_at_every_point(
        tmp_path: Path, keyring_template: Path, debs: dict[str, Path],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same machine driven through a fixed sequence: publish, promote and a rollback or a
    prune, each killed at each fault point in turn, checked after every step."""
    _prepare(tmp_path, keyring_template, debs, monkeypatch)
    start = time.monotonic()
    m = Channels()
    try:
        m.channels_agree_with_the_model()
        points = list(publish_mod.FAULT_POINTS)
        for i, point in enumerate(points):
            after = points[(i + 3) % len(points)]
            m.publish_nightly(VERSIONS[i % len(VERSIONS)], point)
            m.channels_agree_with_the_model()
            m.promote_to_stable(after)
            m.channels_agree_with_the_model()
            if i % 3 == 1:
                m.pin_version("stable", max(m.model["stable"], key=DEB.sort_key()))
            if i % 2:
                m.prune_channel("stable" if i % 4 == 1 else "nightly", 1, point)
            else:
                m.rollback_stable(point)
            m.channels_agree_with_the_model()
        kills = [line for line in m.log if "killed at" in line]
        assert {line.rsplit(" ", 1)[1] for line in kills} == set(points), m.log
    finally:
        m.teardown()
    print(f"\nscripted model test: {len(m.log)} steps in {time.monotonic() - start:.1f}s")


def test_channels_match_a_model_under_random_operations_and_kills(
        tmp_path: Path, keyring_template: Path, debs: dict[str, Path],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    _prepare(tmp_path, keyring_template, debs, monkeypatch)
    start = time.monotonic()
    Channels.TestCase.settings = settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
        derandomize=not os.environ.get("GIFTBOX_MODEL_RANDOM"),
        database=None, suppress_health_check=list(HealthCheck), print_blob=True,
        verbosity=Verbosity.verbose if os.environ.get("GIFTBOX_MODEL_VERBOSE") else Verbosity.normal)
    Channels.TestCase().runTest()
    print(f"\nmodel test: {EXAMPLES} example(s) in {time.monotonic() - start:.1f}s")
