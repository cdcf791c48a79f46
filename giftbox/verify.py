"""``giftbox verify``: evidence that a candidate installs, upgrades, migrates and is not known
to be vulnerable, recorded as verdicts on its exact sha256 (giftbox/records/verdicts.py) for
the gates of giftbox/repo/gates.py.

The candidate is installed the way a fleet gets it: apt, in a clean container of the target's
*base* image (the distro as bootstrapped, not the builder with its compilers), from the channel
served over HTTP on loopback (a small server this module starts on 127.0.0.1; the container
uses the host network) and trusting only the channel's key. Checks:

``install``  install, run the spec's smoke commands, remove, purge, nothing left behind (the
             prefix, the config files, the /usr/bin links, dpkg's record).
``upgrade``  install the version the target channel (``against``) holds now, edit its first
             config file, upgrade to the candidate, the edit kept, the smoke commands pass.
``migrate``  MariaDB from Debian's archive in a sibling container (an image made once from
             the same base image with mariadb-server installed), started on a free loopback
             port and removed afterwards; the old version's schema made by its own commands
             (the spec's ``verify.migrate.commands``), then the candidate's, each timed.
``vulns``    the artifact's locked dependencies (read from its SBOM, giftbox/sbom.py) checked
             with pip-audit against PyPI's vulnerability data; the target channel's
             ``allow:`` entries (advisory, reason) are accepted, anything else fails.

Every command runs from an argv list (never a shell) under ``timeout``: a hung smoke command
fails its check after ``verify.timeout`` seconds with the log's tail. The log of each check is
under ``<state dir>/logs/verify/``. A failed check records a failed verdict and raises
VerifyError (exit 10); infrastructure that cannot run (no base image, a database that does not
start) raises VerifyError and records nothing. verify never changes a channel.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from giftbox import host
from giftbox.distros import Arch, Distro
from giftbox.engine import LABEL, OWNER_LABEL, Engine, EngineError, engine_for
from giftbox.errors import GiftboxError, RepoError, VerifyError
from giftbox.family import DEB, get_family
from giftbox.loopback import serve_directory
from giftbox.repo.requirements import VERIFY_CHECKS as CHECKS  # reproducible: giftbox rebuild
from giftbox.repo.requirements import Allowance
from giftbox.settings import Settings
from giftbox.ui import NULL_REPORTER, Reporter

APT_TIMEOUT = 900  # seconds for one apt-get step (downloads from Debian's archive included)
MIGRATE_TIMEOUT = 3600  # seconds for one migration command
DB_START_TIMEOUT = 120.0
LOG_TAIL = 20
DB_USER = "giftbox"
_ENV = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"}


# --- results ------------------------------------------------------------------------------


@dataclass
class CheckResult:
    check: str
    project: str
    filename: str
    digest: str
    version: str
    distro: str
    arch: str
    passed: bool
    detail: str
    timings: dict[str, float] = field(default_factory=dict)
    duration: float = 0.0
    log_path: str | None = None
    against: str = ""
    verdict_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Failed(Exception):
    """A check's own failure: becomes a failed verdict, with the log's tail."""

    def __init__(self, detail: str, tail: str = "", *, advice: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.tail = tail
        self.advice = advice


@dataclass(frozen=True)
class Candidate:
    project: str
    entry: Any  # giftbox.repo.publish.Entry
    distro: Distro
    arch: Arch


# --- the channel over HTTP ----------------------------------------------------------------


@contextlib.contextmanager
def serve_repos(settings: Settings) -> Iterator[str]:
    """``repos/`` over HTTP on 127.0.0.1 (a free port) while the block runs; yields the URL."""
    with serve_directory(settings.repos_dir, name="giftbox-verify-http") as base:
        yield base


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- containers ---------------------------------------------------------------------------


def base_image(settings: Settings, distro: Distro, arch: Arch,
               reporter: Reporter = NULL_REPORTER, *, engine: Engine | None = None) -> str:
    """The target's base image tag (the bootstrapped distro), made when missing."""
    from giftbox.builders import definition, ensure

    d = definition(distro, arch, settings)
    with engine_for(settings, engine) as engine:
        if not engine.exists(d.base_tag):
            ensure(distro, arch, settings, reporter, engine=engine)  # bootstraps the base
    return d.base_tag


class _Session:
    """One check's container, log and timings."""

    def __init__(self, container: Any, log: Path, timings: dict[str, float]) -> None:
        self.c = container
        self.log = log
        self.timings = timings

    def tail(self, n: int = LOG_TAIL) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def run(self, argv: Sequence[str], step: str, limit: int, *, what: str | None = None,
            check: bool = True) -> Any:
        """argv under ``timeout``; its time goes into timings[step]; a failure is _Failed."""
        start = time.monotonic()
        result = self.c.call(["timeout", "-k", "10", str(limit), *argv], check=False,
                             log_path=self.log, stream=False, env=_ENV)
        self.timings[step] = round(time.monotonic() - start, 3)
        if check and result.returncode != 0:
            shown = what or " ".join(argv)
            if result.returncode in (124, 137):
                raise _Failed(f"`{shown}` did not finish within {limit}s (verify.timeout): "
                              "killed as hung", self.tail())
            raise _Failed(f"`{shown}` failed with exit code {result.returncode}", self.tail())
        return result


def _apt_setup(s: _Session, settings: Settings, url: str, codename: str,
               channels: Sequence[str], tmp: Path) -> None:
    from giftbox.repo.publish import public_key_path

    for ch in channels:
        key = public_key_path(settings, ch)
        if not key.is_file():
            raise VerifyError(f"channel '{ch}' has no public key at {key}",
                              hint="publish into it first (giftbox publish / build --publish)")
        s.c.copy_into(key, f"/etc/apt/keyrings/giftbox-{ch}.asc")
        line = tmp / f"giftbox-{ch}.list"
        line.write_text(f"deb [signed-by=/etc/apt/keyrings/giftbox-{ch}.asc] "
                        f"{url}/{ch}/apt {codename} main\n")
        s.c.copy_into(line, f"/etc/apt/sources.list.d/giftbox-{ch}.list")
    conf = tmp / "99giftbox-verify"
    conf.write_text('Acquire::Check-Valid-Until "false";\nAPT::Install-Recommends "false";\n'
                    'Dpkg::Options { "--force-confdef"; "--force-confold"; };\n')
    s.c.copy_into(conf, "/etc/apt/apt.conf.d/99giftbox-verify")
    s.run(["apt-get", "update", "-q"], "apt-get update", APT_TIMEOUT)


def _install(s: _Session, package: str, version: str, step: str) -> None:
    s.run(["apt-get", "install", "-y", "-q", f"{package}={version}"], step, APT_TIMEOUT,
          what=f"apt-get install {package}={version}")
    out = s.run(["dpkg-query", "-W", "-f=${Version}", package], f"{step}: check",
                60).output.strip().splitlines()
    installed = out[-1] if out else ""
    if installed != version:
        raise _Failed(f"after installing {package}={version}, dpkg reports version "
                      f"'{installed}'", s.tail())


def _smoke(s: _Session, spec: Any, label: str = "smoke") -> None:
    for i, argv in enumerate(spec.verify.smoke, 1):
        s.run(list(argv), f"{label} {i}: {' '.join(argv)}"[:120], spec.verify.timeout,
              what=" ".join(argv))


# --- the checks ---------------------------------------------------------------------------


def _check_install(s: _Session, spec: Any, cand: Candidate, ctx: dict[str, Any]) -> str:
    e = cand.entry
    _apt_setup(s, ctx["settings"], ctx["url"], cand.distro.codename, [ctx["channel"]],
               ctx["tmp"])
    _install(s, e.name, e.version, "install")
    _smoke(s, spec)
    s.run(["apt-get", "remove", "-y", "-q", e.name], "remove", APT_TIMEOUT)
    s.run(["apt-get", "purge", "-y", "-q", e.name], "purge", APT_TIMEOUT)
    status = s.run(["dpkg-query", "-W", "-f=${db:Status-Status}", e.name], "left behind",
                   60, check=False).output.strip()
    left = [] if status in ("", "not-installed") or "no packages found" in status else \
        [f"dpkg still records {e.name} ({status})"]
    paths = [spec.package.prefix, *(c.path for c in spec.package.config_files),
             *(f"/usr/bin/{ep}" for ep in spec.package.entry_points)]
    for path in paths:
        if s.c.call(["test", "-e", path], check=False, stream=False).returncode == 0 or \
                s.c.call(["test", "-L", path], check=False, stream=False).returncode == 0:
            left.append(path)
    if left:
        raise _Failed("purge left behind: " + ", ".join(left), s.tail())
    return (f"installed {e.version}, {len(spec.verify.smoke)} smoke command(s) passed, "
            "removed and purged cleanly")


def _against_entry(ctx: dict[str, Any], cand: Candidate) -> Any | None:
    """The version of the candidate's package the target channel holds now (its highest)."""
    from giftbox.repo.publish import channel_state, scope_key

    against = ctx["against"]
    held = [x for x in channel_state(ctx["settings"], against).entries.values()
            if scope_key(x) == scope_key(cand.entry)]
    best = None
    for x in held:
        if best is None or get_family(x.kind).compare(x.version, best.version) > 0:
            best = x
    return best


def _check_upgrade(s: _Session, spec: Any, cand: Candidate, ctx: dict[str, Any]) -> str:
    e = cand.entry
    old = _against_entry(ctx, cand)
    if old is None:
        raise _Failed(f"channel '{ctx['against']}' holds no {e.name} for {cand.distro.name}/"
                      f"{cand.arch.value}: nothing to upgrade from (promote a first version "
                      "with --force --reason, or verify against another channel)")
    if old.digest == e.digest:
        raise _Failed(f"'{ctx['against']}' already holds this very artifact ({e.version}): "
                      "nothing to upgrade from")
    _apt_setup(s, ctx["settings"], ctx["url"], cand.distro.codename,
               sorted({ctx["channel"], ctx["against"]}), ctx["tmp"])
    _install(s, e.name, old.version, f"install {old.version}")
    marker = None
    if spec.package.config_files:
        conf = spec.package.config_files[0].path
        local = ctx["tmp"] / "edited.conf"
        s.c.copy_out(conf, local)
        marker = f"# giftbox verify: an operator's edit {secrets.token_hex(8)}"
        local.write_text(local.read_text() + f"\n{marker}\n")
        s.c.copy_into(local, conf)
    _install(s, e.name, e.version, f"upgrade to {e.version}")
    if marker is not None:
        conf = spec.package.config_files[0].path
        back = ctx["tmp"] / "after.conf"
        s.c.copy_out(conf, back)
        if marker not in back.read_text():
            raise _Failed(f"the upgrade replaced the edited {conf}: the operator's edit is "
                          "gone (a config file must be a conffile)", s.tail())
    _smoke(s, spec, "smoke after upgrade")
    return (f"upgraded {old.version} ({ctx['against']}) -> {e.version}"
            + (", config edit kept" if marker else "") + ", smoke passed")


# --- MariaDB ------------------------------------------------------------------------------


class MariaDB:
    """A MariaDB server from Debian's archive in a sibling container on 127.0.0.1:port.

    Labelled like a builder container (owner pid included), so ``giftbox builder prune``
    removes one left behind by a killed run. ``engine`` is the verify run's (left open);
    without one the server makes its own for its lifetime."""

    def __init__(self, settings: Settings, base: str, distro: Distro, arch: Arch, *,
                 port: int | None = None, reporter: Reporter = NULL_REPORTER,
                 log: Path | None = None, engine: Engine | None = None) -> None:
        self.settings = settings
        self.base = base
        self.arch = arch
        self.port = port or free_port()
        self.reporter = reporter
        self.log = log
        self.image = f"giftbox-verify/mariadb-{distro.name}:{base.rsplit(':', 1)[-1]}"
        self.name = f"giftbox-verify-mariadb-{secrets.token_hex(4)}"
        self.password = secrets.token_hex(16)
        self.seconds_to_start = 0.0
        self._given_engine = engine
        self._engine: Engine | None = None

    def _labels(self) -> dict[str, str]:
        return {LABEL: "1", OWNER_LABEL: str(os.getpid()), "giftbox": "1"}

    def _running(self) -> Engine:
        if self._engine is None:
            raise VerifyError("the MariaDB server is not running: use `with MariaDB(...) as db:`")
        return self._engine

    def _image(self) -> None:
        engine = self._running()
        if engine.exists(self.image):
            return
        self.reporter.detail(f"making {self.image}: mariadb-server from Debian's archive")
        installer = self.name + "-install"
        engine.start(self.base, ["sh", "-c", "apt-get update -q && DEBIAN_FRONTEND="
                                 "noninteractive apt-get install -y -q --no-install-recommends "
                                 "mariadb-server"],
                     name=installer, platform=self.arch.platform, labels=self._labels(),
                     init=False)
        try:
            code = engine.wait(installer, timeout=APT_TIMEOUT)
            if code != 0:
                tail = engine.logs(installer, tail=LOG_TAIL)
                raise VerifyError(f"could not install mariadb-server into {self.base} "
                                  f"(exit {code}):\n{tail}",
                                  hint="check the route to Debian's archive")
            engine.commit(installer, self.image)
        except EngineError as exc:  # no answer within APT_TIMEOUT, or the engine refused
            raise VerifyError(f"could not install mariadb-server into {self.base}: {exc.reason}",
                              hint="check the route to Debian's archive") from None
        finally:
            engine.remove_container(installer)

    def __enter__(self) -> MariaDB:
        self._engine = self._given_engine or Engine(self.settings)
        try:
            self._image()
            start = time.monotonic()
            # Our own fixed command; only the port (an int we chose) is interpolated.
            self._engine.start(
                self.image, ["sh", "-c", "mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld "
                             f"&& exec mariadbd --user=mysql --port={int(self.port)} "
                             "--bind-address=127.0.0.1 --skip-name-resolve"],
                name=self.name, platform=self.arch.platform, labels=self._labels(), init=False)
            self._wait(start)
            self.seconds_to_start = round(time.monotonic() - start, 3)
        except BaseException:
            self._remove()
            raise
        return self

    def _wait(self, start: float) -> None:
        engine = self._running()
        while True:
            state = engine.state(self.name)
            if state.status != "running":
                tail = engine.logs(self.name, tail=LOG_TAIL).strip()
                raise VerifyError(
                    f"the MariaDB server (container {self.name}, port {self.port}) did not "
                    f"start: it exited ({state.exit_code}):\n{tail}",
                    hint="is the port taken, or the data directory broken? Nothing was "
                         "recorded and no channel changed; fix it and run verify again")
            try:
                code, _ = engine.exec_output(self.name, ["mariadb-admin", "--protocol=socket",
                                                         "ping"])
            except EngineError:  # it exited between the two questions: the status says how
                code = None
            if code == 0:
                return
            if time.monotonic() - start > DB_START_TIMEOUT:
                tail = engine.logs(self.name, tail=LOG_TAIL).strip()
                raise VerifyError(f"the MariaDB server did not answer within "
                                  f"{DB_START_TIMEOUT:g}s:\n{tail}")
            time.sleep(0.5)

    def create(self, names: Sequence[str]) -> None:
        sql = "".join(f"CREATE DATABASE IF NOT EXISTS `{n}`;" for n in names)  # spec-checked
        sql += (f"CREATE USER IF NOT EXISTS '{DB_USER}'@'%' IDENTIFIED BY '{self.password}';"
                f"GRANT ALL PRIVILEGES ON *.* TO '{DB_USER}'@'%';FLUSH PRIVILEGES;")
        code, out = self._running().exec_output(
            self.name, ["mariadb", "--protocol=socket", "-e", sql], secrets=[self.password])
        if code != 0:
            raise VerifyError("could not create the databases on MariaDB: " + out.strip())

    def url(self, database: str) -> str:
        return (f"mysql+pymysql://{DB_USER}:{self.password}@127.0.0.1:{self.port}/"
                f"{database}?charset=utf8")

    def _remove(self) -> None:
        if self._engine is None:
            return
        with contextlib.suppress(Exception):
            self._engine.remove_container(self.name)
        if self._engine is not self._given_engine:
            self._engine.close()
        self._engine = None

    def __exit__(self, *exc: object) -> None:
        self._remove()


def _write_db_config(s: _Session, spec: Any, db: MariaDB, tmp: Path) -> None:
    by_file: dict[str, dict[str, dict[str, str]]] = {}
    for d in spec.verify.databases:
        if d.file:  # else created only: the project derives its URL (nova_cell0)
            by_file.setdefault(d.file, {}).setdefault(d.section, {})[d.option] = db.url(d.name)
    for i, (path, sections) in enumerate(sorted(by_file.items())):
        text = "".join(f"[{sec}]\n" + "".join(f"{k} = {v}\n" for k, v in opts.items()) + "\n"
                       for sec, opts in sections.items())
        local = tmp / f"db-{i}.conf"
        local.write_text(text)
        s.c.copy_into(local, path)


def _check_migrate(s: _Session, spec: Any, cand: Candidate, ctx: dict[str, Any]) -> str:
    e = cand.entry
    if not spec.verify.migrate:
        raise _Failed(f"specs/{cand.project}.yaml declares no verify.migrate.commands")
    old = _against_entry(ctx, cand)
    channels = sorted({ctx["channel"], ctx["against"]}) if old is not None else [ctx["channel"]]
    with MariaDB(ctx["settings"], ctx["base"], cand.distro, cand.arch, port=ctx.get("db_port"),
                 reporter=ctx["reporter"], log=s.log, engine=ctx["engine"]) as db:
        s.timings["mariadb start"] = db.seconds_to_start
        db.create([d.name for d in spec.verify.databases])
        _apt_setup(s, ctx["settings"], ctx["url"], cand.distro.codename, channels, ctx["tmp"])
        if old is not None and old.digest != e.digest:
            _install(s, e.name, old.version, f"install {old.version}")
            _write_db_config(s, spec, db, ctx["tmp"])
            for argv in spec.verify.migrate:
                s.run(list(argv), f"old {old.version}: {' '.join(argv)}", MIGRATE_TIMEOUT)
            _install(s, e.name, e.version, f"upgrade to {e.version}")
            start = f"schema of {old.version} ({ctx['against']})"
        else:
            _install(s, e.name, e.version, f"install {e.version}")
            _write_db_config(s, spec, db, ctx["tmp"])
            start = "an empty database (the target holds no earlier version)"
        steps = []
        for argv in spec.verify.migrate:
            step = " ".join(argv)
            s.run(list(argv), step, MIGRATE_TIMEOUT)
            steps.append(f"{step} {s.timings[step]:.1f}s")
    return f"migrated from {start} to {e.version}: " + ", ".join(steps)


# --- vulns --------------------------------------------------------------------------------


def audit_requirements(requirements: Sequence[tuple[str, str]], allowances: Sequence[Allowance],
                       log: Path, timings: dict[str, float]) -> str:
    """pip-audit over pinned (name, version) pairs; _Failed unless every finding is allowed."""
    with tempfile.TemporaryDirectory(prefix="giftbox-audit-") as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text("".join(f"{n}=={v}\n" for n, v in requirements))
        out = Path(tmp) / "audit.json"
        start = time.monotonic()
        argv = [sys.executable, "-m", "pip_audit", "-r", str(req), "--no-deps", "--disable-pip",
                "--progress-spinner", "off", "--vulnerability-service", "pypi", "--format",
                "json", "--output", str(out)]
        try:
            proc = host.run(argv, error=VerifyError, needed_for="to audit dependencies",
                            timeout=900)
        except host.TimedOut:
            raise _Failed("pip-audit did not finish within 900s") from None
        timings["pip-audit"] = round(time.monotonic() - start, 3)
        with log.open("a") as f:
            f.write(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}exit {proc.returncode}\n")
        if not out.is_file():
            raise _Failed(f"pip-audit failed (exit {proc.returncode}): "
                          + (proc.stderr.strip().splitlines() or ["no output"])[-1])
        report = json.loads(out.read_text())
    cause: tuple[str, str] | None = None
    skipped = [d["name"] for d in report.get("dependencies", []) if d.get("skip_reason")]
    if skipped:  # pip-audit says only "not found": ask PyPI ourselves what it answers
        versions = {_canonical(n): v for n, v in requirements}
        cause = pypi_cause(skipped[0], versions.get(_canonical(skipped[0]), ""))
        with log.open("a") as f:
            f.write(f"why not audited: {cause[0]}\n")
    return judge_audit(report, allowances, log, len(requirements), cause=cause)


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


PYPI_JSON = "https://pypi.org/pypi"  # where pip-audit's PyPI service reads advisories


def _http_status(url: str) -> str:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (https only)
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"no answer ({getattr(exc, 'reason', exc)})"


def pypi_cause(name: str, version: str) -> tuple[str, str]:
    """Why pip-audit had no data for ``name==version``: (cause, what to do), from what PyPI's
    per-release JSON (the document pip-audit reads a release's advisories from) and the
    project's JSON answer from this machine, over the same route (proxy variables included).
    The project JSON cannot stand in: its ``vulnerabilities`` are the latest release's only."""
    release = f"{PYPI_JSON}/{name}/{version}/json"
    project = f"{PYPI_JSON}/{name}/json"
    got_release = _http_status(release)
    if got_release == "HTTP 200":
        return (f"{release} answers now ({got_release}), so pip-audit's lookup failed in "
                "passing", "run the check again")
    got_project = _http_status(project)
    route = ("let https://pypi.org/pypi/NAME/VERSION/json through (the proxy or mirror between "
             "this machine and pypi.org), or run the vulns check on a machine that reaches it")
    if got_release == "HTTP 404" and got_project == "HTTP 200":
        return (f"{release} (PyPI's per-release JSON, where pip-audit reads a release's "
                f"advisories) answered {got_release} from this machine while {project} "
                f"answered {got_project}: the route to PyPI does not serve per-release "
                "documents, so no vulnerability data reached pip-audit", route)
    if got_release == "HTTP 404" and got_project == "HTTP 404":
        return (f"{name} is not on PyPI ({project} answered HTTP 404), so pip-audit's PyPI "
                "service knows no advisory for it",
                f"take {name} from PyPI, or drop it from the lock")
    return (f"{release} answered {got_release} and {project} {got_project} from this machine",
            "check the route to pypi.org (proxy settings, HTTPS_PROXY), then run the check again")


def _unaudited_summary(reasons: Sequence[str]) -> str:
    """pip-audit's skip reasons, grouped: "<reason>: a (1.0), b (2.0), … (N in all)"."""
    groups: dict[str, list[str]] = {}
    for r in reasons:
        why, sep, what = r.rpartition(": ")
        groups.setdefault(why if sep else "", []).append(what if sep else r)
    parts = []
    for why, whats in groups.items():
        shown = ", ".join(whats[:5]) + (f", … ({len(whats)} in all)" if len(whats) > 5 else "")
        parts.append(f"{why}: {shown}" if why else shown)
    return "; ".join(parts)


def judge_audit(report: dict[str, Any], allowances: Sequence[Allowance], log: Path,
                count: int, *, cause: tuple[str, str] | None = None) -> str:
    """pip-audit's JSON report judged against the channel's allowances: _Failed for any
    finding no allowance names, and for any dependency pip-audit could not look up (an
    unaudited dependency is no evidence of safety). ``cause`` is (why, what to do) for the
    unaudited ones, from pypi_cause."""
    found, allowed, unaudited = [], [], []
    for dep in report.get("dependencies", []):
        if dep.get("skip_reason"):
            unaudited.append(str(dep["skip_reason"]))  # names the dependency and version
            continue
        for v in dep.get("vulns", []):
            ids = [v.get("id", ""), *v.get("aliases", [])]
            what = f"{dep['name']} {dep.get('version', '')}: {v.get('id')}"
            fix = v.get("fix_versions") or []
            allowance = next((a for a in allowances if a.covers(ids, dep["name"])), None)
            if allowance is not None:
                allowed.append(f"{what} (allowed: {allowance.reason})")
            else:
                found.append(what + (f" (fixed in {', '.join(fix)})" if fix else ""))
    with log.open("a") as f:
        f.write("".join(f"vulnerable: {x}\n" for x in found)
                + "".join(f"allowed: {x}\n" for x in allowed)
                + "".join(f"not audited: {x}\n" for x in unaudited))
    if found:
        raise _Failed(f"{len(found)} known vulnerabilit{'y' if len(found) == 1 else 'ies'} "
                      f"in the locked dependencies: " + "; ".join(found[:10])
                      + ("; …" if len(found) > 10 else ""),
                      advice="add an allow: entry (advisory, reason) to the channel if one does not "
                      "apply, or update the lock")
    if unaudited:
        why, advice = cause or ("pip-audit had no vulnerability data for them from PyPI",
                                "PyPI's per-release JSON (https://pypi.org/pypi/NAME/VERSION/"
                                "json) must answer for pip-audit; check the route to it")
        raise _Failed(f"{len(unaudited)} of {count} locked dependencies could not be audited, "
                      f"and no data is not evidence of safety. Cause: {why}. pip-audit said: "
                      f"{_unaudited_summary(unaudited)}",
                      advice=f"what to do: {advice}; until vulns passes the gate refuses, and "
                      "promote --force --reason overrides it on the record")
    return (f"{count} locked dependencies audited, none known vulnerable"
            + (f"; allowed: {'; '.join(allowed)}" if allowed else ""))


def _check_vulns(settings: Settings, cand: Candidate, ctx: dict[str, Any], log: Path,
                 timings: dict[str, float]) -> str:
    from giftbox import sbom as sbom_mod

    start = time.monotonic()
    doc = sbom_mod.for_entry(settings, ctx["channel"], cand.entry)
    timings["sbom"] = round(time.monotonic() - start, 3)
    requirements = sbom_mod.python_requirements(doc)
    if not requirements:
        raise _Failed("the SBOM lists no locked Python dependency to audit")
    allowances = ctx["allowances"]
    return audit_requirements(requirements, allowances, log, timings)


# --- running ------------------------------------------------------------------------------


def _candidates(settings: Settings, project: str, channel: str, distro: str | None,
                arch: str | None) -> list[Candidate]:
    from giftbox.repo.channels import get_channel
    from giftbox.repo.promote import project_of, select
    from giftbox.repo.publish import channel_state

    ch = get_channel(settings, channel)
    state = channel_state(settings, ch.name)
    try:
        entries = select(settings, ch, state, project, distro=distro, arch=arch)
    except RepoError as exc:
        raise VerifyError(exc.message, hint=exc.hint) from None
    out = []
    for e in entries:
        if e.arch in ("all", "noarch"):
            a = Arch.parse(arch) if arch else Arch("x86_64")
        else:
            a = Arch.parse(e.arch)
        out.append(Candidate(project_of(settings, project), e, ch.distro(e.distro), a))
    return out


def _against(settings: Settings, channel: str, against: str | None,
             checks: Sequence[str]) -> str:
    from giftbox.repo.channels import get_channel, load_channels

    if against is not None:
        return get_channel(settings, against).name
    wanting = [n for n, c in load_channels(settings).items()
               if n != channel and any(k in c.requires for k in checks)]
    if len(wanting) == 1:
        return wanting[0]
    if any(k in ("upgrade", "migrate", "vulns") for k in checks):
        raise VerifyError("name the channel the candidate is headed for: --against CHANNEL",
                          hint="upgrade and migrate start from the version it holds; vulns "
                               "applies its allow: list" + (
                                   f" (channels that require these checks: "
                                   f"{', '.join(wanting)})" if wanting else ""))
    return ""


def verify(settings: Settings, project: str, channel: str, *, distro: str | None = None,
           arch: str | None = None, checks: Sequence[str] = (), against: str | None = None,
           reporter: Reporter = NULL_REPORTER, db_port: int | None = None,
           record: bool = True) -> list[CheckResult]:
    """Run ``checks`` (default: all four) on the candidate(s) of ``project`` in ``channel``
    and record a verdict for each. Returns the results; raises VerifyError after recording
    when any check failed."""
    from giftbox.records import open_records
    from giftbox.repo.channels import get_channel
    from giftbox.spec import find_spec

    for c in checks:
        if c not in CHECKS:
            raise VerifyError(f"unknown check '{c}'", hint="known checks: " + ", ".join(CHECKS))
    wanted = list(dict.fromkeys(checks)) or list(CHECKS)
    try:
        spec = find_spec(settings.root, project)
    except GiftboxError as exc:
        raise VerifyError(f"cannot verify {project}: {exc.message}", hint=exc.hint) from None
    candidates = _candidates(settings, project, channel, distro, arch)
    target = _against(settings, channel, against, wanted)
    allowances = get_channel(settings, target).allowances if target else ()
    logs = settings.state_dir / "logs" / "verify"
    logs.mkdir(parents=True, exist_ok=True)
    results: list[CheckResult] = []
    # One engine for the run (connected on first use: vulns alone never asks it).
    with serve_repos(settings) as url, Engine(settings) as engine:
        for cand in candidates:
            if cand.distro.family_obj is not DEB:
                raise VerifyError(f"verify installs with apt only so far; {cand.distro.name} "
                                  "is an rpm distro", hint="dnf support is not written yet")
            base = base_image(settings, cand.distro, cand.arch, reporter, engine=engine) \
                if set(wanted) - {"vulns"} else ""  # vulns reads the SBOM on the host
            for check in wanted:
                results.append(_run_check(settings, spec, cand, check, url=url, base=base,
                                          channel=channel, against=target,
                                          allowances=allowances, logs=logs, reporter=reporter,
                                          db_port=db_port, engine=engine))
    if record:
        with open_records(settings) as db:
            for r in results:
                v = db.record_verdict(
                    digest=r.digest, distro=r.distro, arch=r.arch, check=r.check,
                    passed=r.passed, filename=r.filename, project=r.project,
                    version=r.version, channel=channel, against=r.against,
                    log_path=r.log_path, duration=r.duration, timings=r.timings,
                    detail=r.detail[:2000])
                r.verdict_id = v.id
    failed = [r for r in results if not r.passed]
    if failed:
        raise VerifyFailed(
            "verify failed: " + "; ".join(f"{r.check} on {r.filename} ({r.distro}/{r.arch}): "
                                          f"{r.detail}" for r in failed),
            results, hint="full logs: " + ", ".join(str(r.log_path) for r in failed))
    return results


class VerifyFailed(VerifyError):
    def __init__(self, message: str, results: list[CheckResult], *,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.results = results


def _run_check(settings: Settings, spec: Any, cand: Candidate, check: str, *, url: str,
               base: str, channel: str, against: str, allowances: Sequence[Allowance],
               logs: Path, reporter: Reporter, db_port: int | None,
               engine: Engine) -> CheckResult:
    from giftbox.container import Container

    e = cand.entry
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    log = logs / f"{cand.project}-{e.distro}-{cand.arch.value}-{check}-{stamp}.log"
    log.write_text(f"giftbox verify {check}: {e.filename} sha256:{e.digest} from {channel}"
                   + (f" against {against}" if against else "") + "\n")
    timings: dict[str, float] = {}
    start = time.monotonic()
    result = CheckResult(check, cand.project, e.filename, e.digest, e.version, e.distro,
                         cand.arch.value, False, "", timings, 0.0, str(log),
                         against if check in ("upgrade", "migrate", "vulns") else "")
    with reporter.stage(f"verify {check}: {e.filename} ({e.distro}/{cand.arch.value})"), \
            tempfile.TemporaryDirectory(prefix="giftbox-verify-") as tmp:
        ctx = {"settings": settings, "url": url, "channel": channel, "against": against,
               "tmp": Path(tmp), "base": base, "reporter": reporter, "db_port": db_port,
               "allowances": allowances, "engine": engine}
        try:
            if check == "vulns":
                result.detail = _check_vulns(settings, cand, ctx, log, timings)
            else:
                with Container(base, cand.arch, settings, reporter, workdir="/root",
                               engine=engine) as c:
                    s = _Session(c, log, timings)
                    fn = {"install": _check_install, "upgrade": _check_upgrade,
                          "migrate": _check_migrate}[check]
                    result.detail = fn(s, spec, cand, ctx)
            result.passed = True
        except _Failed as exc:
            result.detail = exc.detail + (f" ({exc.advice})" if exc.advice else "") \
                + (f"\nlog tail:\n{exc.tail}" if exc.tail else "")
        result.duration = round(time.monotonic() - start, 3)
    with log.open("a") as f:
        f.write(f"verdict: {'pass' if result.passed else 'FAIL'}: {result.detail}\n"
                f"timings: {json.dumps(timings)}\n")
    reporter.detail(f"{check}: {'pass' if result.passed else 'FAIL'} in "
                    f"{result.duration:.1f}s: {result.detail.splitlines()[0]}")
    return result


__all__ = ["CheckResult", "MariaDB", "VerifyFailed", "audit_requirements", "base_image",
           "serve_repos", "verify"]
