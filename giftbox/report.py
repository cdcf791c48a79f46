"""Where things stand: ``giftbox status`` per project, and a static HTML report of it all.

Both read the same facts: the spec (pinned ref, tracked branch, patches), the upstream
resolved to commits (from the cached mirror only, with ``offline``), the build records (the
last build of each distro/arch, nightly outcomes, promotions) and each channel's state.

The report is one static page in the spirit of DLRN's status pages: no JavaScript, inline
CSS, the failed builds' logs copied beside it so that its links work offline (from a
file:// URL, an artifact download or any static web server).
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from giftbox import __version__
from giftbox.distros import Arch
from giftbox.errors import GiftboxError
from giftbox.files import temp_beside
from giftbox.gitutil import redact_url
from giftbox.settings import Settings
from giftbox.spec import Spec
from giftbox.targets import Catalog
from giftbox.ui import NULL_REPORTER, Reporter


class ReportError(GiftboxError):
    """The report could not be written where asked."""

    exit_code = 1


# --- refs, without fetching when offline --------------------------------------------------


def _local_commit(mirror: Any, ref: str) -> str | None:
    """What ``ref`` names in the mirror as it is (GitMirror.resolve's order, no fetch)."""
    if ref.startswith("refs/"):
        candidates = ["refs/giftbox/" + ref.removeprefix("refs/"), ref]
    else:
        candidates = [f"refs/tags/{ref}", f"refs/heads/{ref}"]
        if all(c in "0123456789abcdef" for c in ref):
            candidates.append(ref)
    for candidate in candidates:
        commit = mirror.rev(candidate)
        if commit:
            return str(commit)
    return None


def resolve_refs(spec: Spec, settings: Settings, *, offline: bool,
                 reporter: Reporter = NULL_REPORTER) -> dict[str, Any]:
    """{ref, commit, upstream_version, track, track_commit, track_version} for the spec.

    Online, a git mirror is fetched once (not once per ref); offline, only what the cache
    holds is read and a missing mirror is reported as such.
    """
    from giftbox.gitutil import locked
    from giftbox.source import GitMirror, import_sdist

    out: dict[str, Any] = {"ref": spec.pinned_ref, "track": None}
    if spec.upstream_kind == "pypi":
        assert spec.pypi is not None
        if offline:
            folder = settings.cache_dir / "pypi" / spec.pypi.sha256
            tarballs = sorted(folder.glob("*.tar.gz")) if folder.is_dir() else []
            if not tarballs:
                out["note"] = "tarball not cached (offline)"
                return out
            _repo, commit, _epoch = import_sdist(tarballs[0], spec.pypi, settings)
            out.update(commit=commit, upstream_version=spec.pypi.version)
            return out
        from giftbox import source

        up = source.resolve(spec, settings, reporter)
        out.update(commit=up.commit, upstream_version=up.version)
        return out
    assert spec.git is not None
    out["track"] = spec.git.track
    mirror = GitMirror(spec.git.url, settings)
    if not (mirror.path / "HEAD").exists() and offline:
        out["note"] = "git mirror not cached (offline)"
        return out
    if not offline:
        with locked(mirror.path):
            mirror.ensure(reporter)
    refs: list[tuple[str, str]] = [("", spec.git.ref)]
    if spec.git.track:
        refs.append(("track_", spec.git.track))
    for prefix, ref in refs:
        found = _local_commit(mirror, ref)
        if found is None and not offline and ref.startswith("refs/"):
            found = mirror.resolve(ref, reporter)  # a change ref: fetched on demand
        if found is None:
            out[f"{prefix}error"] = f"ref '{ref}' is not in {spec.git.url}" + \
                (" (as cached: offline)" if offline else "")
            continue
        out[f"{prefix}commit"] = found
        out[f"{prefix}upstream_version"] = mirror.version_of(found, ref)
    return out


# --- the facts ----------------------------------------------------------------------------


@dataclass
class ProjectStatus:
    project: str
    upstream: str = ""  # git | pypi
    url: str = ""
    ref: str = ""
    commit: str | None = None
    upstream_version: str | None = None
    track: str | None = None
    track_commit: str | None = None
    track_version: str | None = None
    patches: int = 0
    package: str = ""
    versions: dict[str, str] = field(default_factory=dict)  # distro -> version of the pin
    targets: list[str] = field(default_factory=list)  # "distro/arch" of its matrix
    builds: dict[str, dict[str, Any]] = field(default_factory=dict)  # "distro/arch" -> last
    nightly: dict[str, dict[str, Any]] = field(default_factory=dict)  # "distro/arch" -> last
    channels: dict[str, dict[str, str]] = field(default_factory=dict)  # ch -> target -> ver
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Overview:
    generated: str
    projects: list[ProjectStatus]
    channels: list[str]
    columns: list[str]  # every "distro/arch" of any matrix or build
    promotions: list[dict[str, Any]]
    nightly_runs: list[dict[str, Any]]
    recent_builds: list[dict[str, Any]]
    channel_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"generated": self.generated, "channels": self.channels,
                "projects": [p.as_dict() for p in self.projects],
                "promotions": self.promotions, "nightly_runs": self.nightly_runs,
                "recent_builds": self.recent_builds, "channel_error": self.channel_error}


def _build_summary(b: Any) -> dict[str, Any]:
    return {"id": b.id, "status": b.status, "version": b.version, "commit": b.upstream_commit,
            "started_at": b.started_at, "finished_at": b.finished_at,
            "duration": b.duration, "log_path": b.log_path,
            "error": (b.error or "").strip().splitlines()[0] if b.error else None}


def _channel_versions(settings: Settings) -> tuple[dict[str, dict[str, list[Any]]], str | None]:
    """channel -> package name -> entries, for every configured channel."""
    from giftbox.repo import channel_state, load_channels

    try:
        names = list(load_channels(settings))
    except GiftboxError as exc:
        return {}, exc.render()
    out: dict[str, dict[str, list[Any]]] = {}
    problems: list[str] = []
    for name in names:
        # One channel whose state cannot be read is reported; the others are still shown.
        per_name: dict[str, list[Any]] = {}
        try:
            for entry in channel_state(settings, name).entries.values():
                per_name.setdefault(entry.name, []).append(entry)
        except GiftboxError as exc:
            problems.append(f"{name}: {exc.render()}")
            continue
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            problems.append(f"{name}: its state cannot be read ({type(exc).__name__}: {exc})")
            continue
        out[name] = per_name
    return out, "\n".join(problems) or None


def _highest(entries: list[Any]) -> dict[str, str]:
    """Per "distro/arch", the highest version (by the family's own order)."""
    from giftbox.family import get_family

    best: dict[str, Any] = {}
    for e in entries:
        try:
            arch = Arch.parse(e.arch).value if e.arch not in ("all", "noarch") else e.arch
        except GiftboxError:
            arch = str(e.arch)
        key = f"{e.distro}/{arch}"
        order = get_family(e.kind).sort_key()
        if key not in best or order(e.version) > order(best[key].version):
            best[key] = e
    return {k: v.version for k, v in sorted(best.items())}


def _fill_row(row: ProjectStatus, spec: Spec, settings: Settings, catalog: Catalog,
              last: list[Any], nightly: dict[tuple[str, str, str], Any],
              channel_entries: dict[str, dict[str, list[Any]]], *, offline: bool,
              resolve: bool, reporter: Reporter) -> None:
    name = spec.name
    row.upstream, row.url, row.ref = (spec.upstream_kind, redact_url(spec.upstream_url),
                                      spec.pinned_ref)
    row.patches, row.package = len(spec.patches), spec.package.name
    row.targets += [f"{t.distro.name}/{t.arch.value}"
                    for t in catalog.matrix(spec, runnable_only=False)]
    if resolve:
        try:
            refs = resolve_refs(spec, settings, offline=offline, reporter=reporter)
        except GiftboxError as exc:
            row.notes.append(exc.render())
        else:
            row.commit, row.upstream_version = refs.get("commit"), \
                refs.get("upstream_version")
            row.track, row.track_commit = refs.get("track"), refs.get("track_commit")
            row.track_version = refs.get("track_upstream_version")
            if row.upstream_version:
                from giftbox.patches import spec_series_digest
                from giftbox.versions import for_target

                digest = spec_series_digest(spec)
                for target_distro in (catalog.distros[n] for n in spec.distros):
                    version = for_target(
                        row.upstream_version, spec.package.release, len(spec.patches),
                        digest, target_distro.family, target_distro.version_tag)
                    row.versions[target_distro.name] = target_distro.family_obj.version(version)
            row.notes += [refs[k] for k in ("note", "error", "track_error") if k in refs]
    for b in last:
        if b.project == name:
            key = f"{b.distro}/{b.arch}"
            row.builds[key] = _build_summary(b)
    for (project, distro, arch), t in nightly.items():
        if project == name:
            row.nightly[f"{distro}/{arch}"] = {
                "run": t.run_id, "outcome": t.outcome, "version": t.version,
                "detail": t.detail, "build_id": t.build_id, "at": t.at}
    for channel, per_name in channel_entries.items():
        versions = _highest(per_name.get(spec.package.name, []))
        if versions:
            row.channels[channel] = versions


def collect(settings: Settings, projects: list[str] | tuple[str, ...] = (), *,
            offline: bool = False, resolve: bool = True,
            reporter: Reporter = NULL_REPORTER) -> Overview:
    """Everything ``status`` and ``report`` show. Raises StateError for an unusable
    database (locked, newer schema): without the records there is nothing to report."""
    from giftbox import records

    catalog = Catalog.load(settings)
    with records.open_records(settings) as db:
        last = db.last_builds()
        recent = db.recent_builds(limit=30)
        promotions = db.promotions()[-20:]
        runs = db.nightly_runs(limit=10)
        nightly: dict[tuple[str, str, str], Any] = {}
        if runs:
            for run in reversed(runs):  # oldest first: later runs overwrite
                for t in db.nightly_targets(run.id):
                    nightly[(t.project, t.distro, t.arch)] = t
    channel_entries, channel_error = _channel_versions(settings)
    names = list(projects) or catalog.projects()
    rows = []
    columns: set[str] = set()
    for name in names:
        row = ProjectStatus(project=name)
        rows.append(row)
        try:
            spec = catalog.spec(name)
        except GiftboxError as exc:
            row.error = exc.render()
            continue
        except (OSError, ValueError, RecursionError) as exc:
            row.error = f"{name}: its spec cannot be read ({type(exc).__name__}: {exc})"
            continue
        # One project whose tarball, mirror or records cannot be read is reported as such;
        # every other project is still shown.
        try:
            _fill_row(row, spec, settings, catalog, last, nightly, channel_entries,
                      offline=offline, resolve=resolve, reporter=reporter)
        except GiftboxError as exc:
            row.error = exc.render()
        except (OSError, ValueError) as exc:
            row.error = f"{name}: cannot be shown ({type(exc).__name__}: {exc})"
        columns.update(row.targets)
        columns.update(row.builds)
    return Overview(
        generated=time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()), projects=rows,
        channels=list(channel_entries), columns=sorted(columns),
        promotions=[p.as_dict() for p in reversed(promotions)],
        nightly_runs=[r.as_dict() for r in runs],
        recent_builds=[_build_summary(b) | {"project": b.project, "target":
                                            f"{b.distro}/{b.arch}"} for b in recent],
        channel_error=channel_error)


# --- the HTML report ----------------------------------------------------------------------

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d1d1d; }
h1 { font-size: 1.4em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.meta { color: #666; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .35em .6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.succeeded { background: #c9f2c9; } td.failed { background: #f7c4c4; }
td.running { background: #fbeaa7; } td.none { background: #eee; color: #777; }
td.na { background: #fff; color: #bbb; }
.status { font-weight: 600; text-transform: uppercase; font-size: .85em; }
.small { font-size: .85em; color: #444; } code { font-size: .9em; }
a { color: #0645ad; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in text)


def _copy_log(build: dict[str, Any], project: str, target: str, logs: Path,
              nightly_log: str | None) -> str | None:
    """Copy a failed build's log into the report; returns its link (relative)."""
    name = _safe_name(f"{project}-{target}-build{build['id']}.log")
    sources = [p for p in (build.get("log_path"), nightly_log) if p and Path(p).is_file()]
    dest = logs / name
    if sources:
        with open(dest, "w") as out:
            for src in sources:
                out.write(f"==> {src}\n")
                out.write(Path(src).read_text(errors="replace"))
                out.write("\n")
    elif build.get("error"):
        # The build failed before its builder wrote a log (e.g. a patch that does not
        # apply): the recorded error is all there is, and is what the reader needs.
        dest.write_text(f"build #{build['id']} of {project} for {target} failed before a log "
                        f"was written. The recorded error:\n\n{build['error_full']}\n")
    else:
        return None
    return f"logs/{name}"


def _reproducible_section(verdicts: list[Any], out: Path) -> str:
    """The rebuild --check verdicts; a mismatch links its diffoscope report, copied into
    ``out/diffoscope/`` so the page can be served on its own."""
    rows = ["<h2>Reproducibility checks</h2>"]
    if not verdicts:
        return rows[0] + "<p>None recorded (<code>giftbox rebuild --check</code>).</p>"
    rows.append("<table id=\"reproducible\"><tr><th>artifact</th><th>target</th>"
                "<th>result</th><th>when</th><th>detail</th></tr>")
    for v in reversed(verdicts):
        link = ""
        source = Path(v.log_path) if v.log_path else None
        if not v.passed and source is not None and source.name == "diffoscope.html" \
                and source.is_file():
            folder = out / "diffoscope"
            folder.mkdir(exist_ok=True)
            name = _safe_name(f"{v.digest[:16]}-{v.id}.html")
            shutil.copyfile(source, folder / name)
            link = f" <a class=\"diffoscope\" href=\"diffoscope/{_e(name)}\">diffoscope report</a>"
        result = "reproducible" if v.passed else "NOT reproducible"
        rows.append(f"<tr data-digest=\"{_e(v.digest)}\"><td>{_e(v.filename)}<br><code>"
                    f"{_e(v.digest[:16])}</code></td><td>{_e(v.distro)}/{_e(v.arch)}</td>"
                    f"<td class=\"{'succeeded' if v.passed else 'failed'}\">{result}{link}</td>"
                    f"<td>{_e(v.at)}</td><td class=\"small\">{_e(v.detail)}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _verdicts_section(settings: Settings) -> str:
    """Each channel artifact's latest verdict per check (giftbox verify), by exact sha256."""
    from giftbox.repo.channels import load_channels
    from giftbox.repo.gates import entry_verdicts, verdict_cell
    from giftbox.repo.publish import channel_state

    rows = []
    try:
        for name, ch in load_channels(settings).items():
            entries = sorted(channel_state(settings, name).entries.values(),
                             key=lambda e: e.filename)
            found = entry_verdicts(settings, entries)
            for e in entries:
                rows.append(f"<tr data-channel=\"{_e(name)}\"><td>{_e(name)}</td>"
                            f"<td>{_e(e.filename)}</td><td><code>{_e(e.digest[:16])}</code>"
                            f"</td><td>{_e(verdict_cell(found.get(e.filename, {}), ch.requires))}"
                            "</td></tr>")
    except GiftboxError as exc:
        return f"<h2>Verdicts</h2><p>{_e(exc.message)}</p>"
    if not rows:
        return "<h2>Verdicts</h2><p>No artifact in any channel.</p>"
    return ("<h2>Verdicts</h2><table id=\"verdicts\"><tr><th>channel</th><th>artifact</th>"
            "<th>sha256</th><th>verdicts</th></tr>" + "".join(rows) + "</table>")


def render(overview: Overview, settings: Settings, out: Path) -> Path:
    """Write ``out/index.html`` (and ``out/logs/``); returns the page's path."""
    from giftbox import records

    try:
        out.mkdir(parents=True, exist_ok=True)
        logs = out / "logs"
        logs.mkdir(exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".giftbox-", delete=True)
        probe.close()
    except OSError as exc:
        raise ReportError(f"cannot write the report to {out}: {exc.strerror or exc}",
                          hint="choose a writable --output directory") from None
    with records.open_records(settings) as db:
        nightly_logs = {}
        for run in db.nightly_runs(limit=10):
            for t in db.nightly_targets(run.id):
                if t.build_id is not None and t.log_path:
                    nightly_logs[t.build_id] = t.log_path
        full_errors = {}
        for p in overview.projects:
            for b in p.builds.values():
                if b["status"] == "failed":
                    full_errors[b["id"]] = db.build(b["id"]).error or ""
        # giftbox rebuild --check verdicts (giftbox/rebuild.py), latest last.
        reproducible = [v for v in db.verdicts() if v.check == "reproducible"][-20:]
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>giftbox status</title><style>{CSS}</style></head><body>",
             "<h1>giftbox status</h1>",
             f"<p class=\"meta\">Generated {_e(overview.generated)} by giftbox "
             f"{_e(__version__)}.</p>"]
    # The matrix: project x distro/arch, coloured by the last build.
    parts.append("<h2>Last build per target</h2><table id=\"matrix\"><tr><th>project</th>"
                 "<th>upstream</th>" + "".join(f"<th>{_e(c)}</th>" for c in overview.columns)
                 + "</tr>")
    try:
        for p in overview.projects:
            upstream = (f"{_e(p.upstream)} <code>{_e(p.ref)}</code>"
                        + (f"<br>tracks <code>{_e(p.track)}</code>" if p.track else "")
                        + (f"<br><code>{_e((p.track_commit or p.commit or '')[:12])}</code>"
                           if p.track_commit or p.commit else "")
                        + f"<br>{p.patches} patch(es)"
                        + "".join(f"<div class=\"small note\">{_e(n)}</div>" for n in p.notes))
            if p.error:
                upstream = f"<span class=\"status\">error</span> {_e(p.error)}"
            cells = []
            for col in overview.columns:
                n = p.nightly.get(col)
                if col not in p.builds:
                    css = "none" if col in p.targets else "na"
                    text = "never built" if col in p.targets else ""
                    cells.append(f"<td class=\"{css}\" data-target=\"{_e(col)}\">{text}</td>")
                    continue
                b = p.builds[col]
                body = [f"<span class=\"status\">{_e(b['status'])}</span>",
                        f"<div>{_e(b['version'])}</div>",
                        f"<div class=\"small\">build #{b['id']} · {_e(b['finished_at'] or b['started_at'])}"
                        "</div>"]
                if n is not None:
                    body.append(f"<div class=\"small\">nightly #{n['run']}: {_e(n['outcome'])}"
                                "</div>")
                if b["status"] == "failed":
                    b = dict(b, error_full=full_errors.get(b["id"], b.get("error") or ""))
                    try:
                        link = _copy_log(b, p.project, col, logs, nightly_logs.get(b["id"]))
                    except (OSError, UnicodeError):
                        link = None  # one unreadable log costs its link, not the report
                    if b.get("error"):
                        body.append(f"<div class=\"small\">{_e(b['error'])}</div>")
                    if link:
                        body.append(f"<a class=\"log\" href=\"{_e(link)}\">build log</a>")
                cells.append(f"<td class=\"{_e(b['status'])}\" data-target=\"{_e(col)}\">"
                             + "".join(body) + "</td>")
            parts.append(f"<tr data-project=\"{_e(p.project)}\"><th>{_e(p.project)}</th>"
                         f"<td>{upstream}</td>{''.join(cells)}</tr>")
        parts.append("</table>")
        # Versions per channel.
        parts.append("<h2>Versions per channel</h2>")
        if overview.channel_error:
            parts.append(f"<p>{_e(overview.channel_error)}</p>")
        parts.append("<table id=\"channels\"><tr><th>project</th>"
                     + "".join(f"<th>{_e(c)}</th>" for c in overview.channels) + "</tr>")
        for p in overview.projects:
            cells = []
            for c in overview.channels:
                versions = p.channels.get(c, {})
                cells.append("<td data-channel=\"{}\">{}</td>".format(
                    _e(c), "<br>".join(f"{_e(t)}: <code>{_e(v)}</code>"
                                       for t, v in versions.items()) or "—"))
            parts.append(f"<tr data-project=\"{_e(p.project)}\"><th>{_e(p.project)}</th>"
                         + "".join(cells) + "</tr>")
        parts.append("</table>")
        parts.append(_verdicts_section(settings))  # giftbox verify's evidence (gates.py)
        # Nightly runs.
        parts.append("<h2>Recent nightly runs</h2>")
        if overview.nightly_runs:
            parts.append("<table id=\"nightly\"><tr><th>run</th><th>channel</th>"
                         "<th>status</th><th>started</th><th>targets</th></tr>")
            for r in overview.nightly_runs:
                counts = ", ".join(f"{k} {v}" for k, v in r["summary"].items() if v)
                parts.append(f"<tr><td>#{r['id']}</td><td>{_e(r['channel'])}</td>"
                             f"<td>{_e(r['status'])}</td><td>{_e(r['started_at'])}</td>"
                             f"<td>{_e(counts)}</td></tr>")
            parts.append("</table>")
        else:
            parts.append("<p>None recorded.</p>")
        # Promotions.
        parts.append("<h2>Recent promotions</h2>")
        if overview.promotions:
            parts.append("<table id=\"promotions\"><tr><th>#</th><th>kind</th><th>project"
                         "</th><th>from → to</th><th>version</th><th>who</th><th>when</th>"
                         "<th>reason</th></tr>")
            for pr in overview.promotions:
                rolled = (f" (rolled back by #{pr['rolled_back_by']})"
                          if pr.get("rolled_back_by") else "")
                parts.append(
                    f"<tr><td>{pr['id']}</td><td>{_e(pr['kind'])}{_e(rolled)}</td>"
                    f"<td>{_e(pr['project'])}</td><td>{_e(pr['from_channel'] or '')} → "
                    f"{_e(pr['to_channel'])}</td><td>{_e(pr['version'])}</td>"
                    f"<td>{_e(pr['who'])}</td><td>{_e(pr['at'])}</td>"
                    f"<td>{_e(pr['reason'])}</td></tr>")
            parts.append("</table>")
        else:
            parts.append("<p>None recorded.</p>")
        # Recent builds.
        parts.append("<h2>Recent builds</h2><table id=\"builds\"><tr><th>#</th><th>project"
                     "</th><th>target</th><th>status</th><th>version</th><th>started</th>"
                     "<th>seconds</th></tr>")
        for b in overview.recent_builds:
            parts.append(f"<tr><td>{b['id']}</td><td>{_e(b['project'])}</td>"
                         f"<td>{_e(b['target'])}</td><td class=\"{_e(b['status'])}\">"
                         f"{_e(b['status'])}</td><td>{_e(b['version'])}</td>"
                         f"<td>{_e(b['started_at'])}</td><td>{_e(b['duration'])}</td></tr>")
        parts.append("</table>")
        parts.append(_reproducible_section(reproducible, out))
        parts.append("</body></html>\n")
        page = out / "index.html"
        tmp = temp_beside(page)
        tmp.write_text("\n".join(parts))
        os.replace(tmp, page)  # a reader (a web server) sees the old page or the new one
    except OSError as exc:
        raise ReportError(f"cannot write the report to {out}: {exc.strerror or exc}",
                          hint="choose a writable --output directory") from None
    return page
