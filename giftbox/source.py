"""The source stage: a spec's upstream, resolved to a commit, checked out, patched.

Both kinds of upstream end up as a git commit, so patches apply the same way:

* ``git``: a bare mirror per URL under the cache, fetched incrementally (heads and tags; a
  Gerrit ``refs/changes/..`` ref or a bare commit is fetched on demand), the ref resolved to a
  commit that is recorded;
* ``pypi``: the release tarball downloaded once from the configured index, verified against
  the pinned sha256, unpacked and committed to a cache repository with a fixed identity and
  the tarball's own timestamps, so the same tarball always gives the same commit.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import html.parser
import json
import lzma
import netrc
import os
import re
import shutil
import ssl
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import SplitResult, unquote, urljoin, urlsplit, urlunsplit

import git

from giftbox import host
from giftbox.errors import SourceError
from giftbox.gitutil import (
    IDENTITY,
    GitFailed,
    git_env,
    locked,
    redact_url,
    run_git,
    url_credential_problem,
)
from giftbox.patches import AppliedPatch, apply_series, series_digest
from giftbox.settings import Settings
from giftbox.spec import GitUpstream, PyPIUpstream, Spec, check_git_url, check_ref
from giftbox.ui import NULL_REPORTER, Reporter
from giftbox.versions import dev_version, parse_upstream, tag_version

_HEADS_AND_TAGS = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]


@dataclass(frozen=True)
class Upstream:
    """An upstream resolved to one commit in a local repository."""

    kind: str  # git | pypi
    url: str  # the git URL, or the tarball's URL
    ref: str  # what the spec pinned (tag, branch, sha, change ref, or the PyPI version)
    commit: str
    repo: Path  # the local repository holding ``commit``
    version: str  # PEP 440 upstream version
    source_date_epoch: int  # committer date of the upstream commit
    sha256: str | None = None  # the tarball's, for pypi


@dataclass(frozen=True)
class SourceTree:
    """A patched work tree: the upstream commit plus one commit per patch."""

    project: str
    path: Path
    upstream: Upstream
    head: str
    patches: tuple[AppliedPatch, ...] = field(default_factory=tuple)

    @property
    def patch_digest(self) -> str:
        return series_digest(self.patches)

    def as_dict(self) -> dict[str, object]:
        up = self.upstream
        return {
            "project": self.project, "path": str(self.path), "kind": up.kind, "url": up.url,
            "ref": up.ref, "commit": up.commit, "head": self.head,
            "upstream_version": up.version, "source_date_epoch": up.source_date_epoch,
            "patches": [p.as_dict() for p in self.patches],
            "patch_digest": self.patch_digest,
        }


# --- git upstreams ------------------------------------------------------------------------


def _slug(url: str) -> str:
    parts = urlsplit(url)
    base = Path(parts.path.rstrip("/")).name.removesuffix(".git") or "repo"
    return f"{base}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


class GitMirror:
    """A bare mirror of one upstream URL in the cache, updated incrementally."""

    def __init__(self, url: str, settings: Settings) -> None:
        # Credentials never go into the mirror's config (nor any output): git gets them
        # from ssh keys, GIT_ASKPASS or a credential helper.
        path = settings.cache_dir / "git" / f"{_slug(url)}.git"
        problem = url_credential_problem(url) or check_git_url(url)
        if problem:
            hint = "fix upstream.git.url in the spec"
            if url_credential_problem(url) and path.exists():
                # An older giftbox stored the URL, credential included, in this mirror's
                # config: a cache, so it goes.
                shutil.rmtree(path, ignore_errors=True)
                hint += " (the cached mirror that had stored the URL was removed)"
            raise SourceError(f"git URL '{redact_url(url)}' {problem}", hint=hint)
        self.url = url
        self.path = path
        self.env = git_env(url, settings.ca_bundle)

    def _git(self, *args: str, check: bool = True) -> str:
        return run_git(list(args), cwd=self.path, env=self.env, check=check).stdout

    def ensure(self, reporter: Reporter = NULL_REPORTER) -> None:
        if not (self.path / "HEAD").exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=self.path.parent))
            run_git(["init", "--bare", "--quiet", str(tmp)], env=self.env)
            run_git(["remote", "add", "origin", "--", self.url], cwd=tmp, env=self.env)
            tmp.rename(self.path)
        self.fetch(reporter)

    def fetch(self, reporter: Reporter = NULL_REPORTER, *refspecs: str) -> None:
        specs = list(refspecs) or _HEADS_AND_TAGS
        reporter.detail(f"fetching {self.url} ({' '.join(specs)})")
        try:
            self._git("fetch", "--quiet", "--prune", "--no-auto-gc", "origin", "--", *specs)
        except GitFailed as exc:
            raise SourceError(
                f"cannot fetch {self.url}:\n" + "\n".join(exc.stderr.strip().splitlines()[-6:]),
                hint="check the URL in the spec and that this machine can reach it "
                     "(redirects are not followed: use the final URL); a private repository "
                     "needs an ssh key, GIT_ASKPASS or GIFTBOX_GIT_CREDENTIAL_HELPER") from None

    def rev(self, name: str) -> str | None:
        proc = run_git(["rev-parse", "--verify", "--quiet", "--end-of-options",
                        f"{name}^{{commit}}"], cwd=self.path, env=self.env, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def tags(self) -> list[str]:
        return [t for t in self._git("tag", "--list").split() if t]

    def branches(self) -> list[str]:
        out = self._git("for-each-ref", "--format=%(refname:short)", "refs/heads/")
        return [b for b in out.split() if b]

    def resolve(self, ref: str, reporter: Reporter = NULL_REPORTER) -> str:
        """The commit ``ref`` names, fetching a change ref or a bare commit on demand."""
        problem = check_ref(ref)
        if problem:
            raise SourceError(f"ref '{ref}' {problem}")
        with locked(self.path):
            self.ensure(reporter)
            candidates = [f"refs/tags/{ref}", f"refs/heads/{ref}"]
            if ref.startswith("refs/"):
                local = "refs/giftbox/" + ref.removeprefix("refs/")
                self._fetch_optional(f"+{ref}:{local}", reporter)
                candidates = [local, ref]
            elif all(c in "0123456789abcdef" for c in ref):
                candidates.append(ref)
                if self.rev(ref) is None and len(ref) == 40:
                    self._fetch_optional(ref, reporter)
            for candidate in candidates:
                commit = self.rev(candidate)
                if commit:
                    return commit
        raise SourceError(f"ref '{ref}' does not exist in {self.url}",
                          hint=self._nearest_hint(ref))

    def _fetch_optional(self, refspec: str, reporter: Reporter) -> None:
        reporter.detail(f"fetching {refspec} from {self.url}")
        run_git(["fetch", "--quiet", "--no-auto-gc", "origin", "--", refspec],
                cwd=self.path, env=self.env, check=False)

    def _nearest_hint(self, ref: str) -> str:
        tags = self.tags()
        close = difflib.get_close_matches(ref, tags + self.branches(), n=5, cutoff=0.5)
        versioned = sorted((t for t in tags if tag_version(t)),
                           key=lambda t: parse_upstream(tag_version(t) or "0"))
        parts = []
        if close:
            parts.append("nearest refs: " + ", ".join(close))
        if versioned:
            parts.append("latest tags: " + ", ".join(versioned[-5:]))
        return "; ".join(parts) or "the repository has no tags; use a branch or commit"

    def version_of(self, commit: str, ref: str) -> str:
        """The upstream version of ``commit``: its tag's, or pbr's ``X.Y.Z.devN``."""
        from_ref = tag_version(ref)
        if from_ref and self.rev(f"refs/tags/{ref}") == commit:
            return from_ref
        for tag in self._git("tag", "--points-at", commit).split():
            if tag_version(tag):
                return tag_version(tag) or ""
        best: tuple[int, str] | None = None
        for tag in self._git("tag", "--merged", commit).split():
            version = tag_version(tag)
            if not version:
                continue
            count = int(self._git("rev-list", "--count", f"refs/tags/{tag}..{commit}"))
            if best is None or count < best[0] or (
                    count == best[0] and parse_upstream(version) > parse_upstream(best[1])):
                best = (count, version)
        if best is None:
            total = int(self._git("rev-list", "--count", commit))
            return dev_version(None, total)
        return dev_version(best[1], best[0])

    def commit_time(self, commit: str) -> int:
        return int(git.Repo(self.path).commit(commit).committed_date)


def resolve_git(upstream: GitUpstream, settings: Settings,
                reporter: Reporter = NULL_REPORTER, ref: str | None = None) -> Upstream:
    mirror = GitMirror(upstream.url, settings)
    ref = ref or upstream.ref
    commit = mirror.resolve(ref, reporter)
    return Upstream(kind="git", url=upstream.url, ref=ref, commit=commit, repo=mirror.path,
                    version=mirror.version_of(commit, ref),
                    source_date_epoch=mirror.commit_time(commit))


# --- PyPI upstreams -----------------------------------------------------------------------


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.links.append(href)


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if settings.ca_bundle:
        context.load_verify_locations(cafile=str(settings.ca_bundle))
    return context


def _redact(url: str) -> str:
    """``url`` with its user name and password replaced: what may be printed or stored."""
    return redact_url(url)


def _origin(parts: SplitResult) -> tuple[str, str, int | None]:
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def _authorize(url: str, settings: Settings,
               credentials_from: str | None = None) -> tuple[str, str | None]:
    """(``url`` without user info, the ``Authorization`` header value or None).

    Credentials come from the URL itself, else from ``credentials_from`` (the index a file
    link was listed by) when it is the same origin, else from netrc. The user info never
    stays in the URL: urllib would take ``user:password@host`` for the host name and look
    the password up in DNS.
    """
    try:
        parts = urlsplit(url)
        origin = _origin(parts)
    except ValueError as exc:  # a port that is not a number, a malformed IPv6 host
        raise SourceError(f"the URL {_redact(url)} is malformed: {exc}",
                          hint="check the index URL (pip's index-url) or the link it "
                               "served") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SourceError(f"the URL {_redact(url)} is not an http(s) URL with a host",
                          hint="giftbox downloads from http:// and https:// indexes only")
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if user is None and credentials_from is None:
        credentials_from = _listed_by(url, settings)
    if user is None and credentials_from is not None:
        source = urlsplit(credentials_from)
        if _origin(source) == origin and source.username is not None:
            user = unquote(source.username)
            password = unquote(source.password) if source.password is not None else None
    if user is None and settings.netrc_file is not None:
        try:
            found = netrc.netrc(str(settings.netrc_file)).authenticators(origin[1])
        except (OSError, netrc.NetrcParseError):
            found = None
        if found:
            user, password = found[0], found[2]
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    if user is None:
        return clean, None
    token = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
    return clean, f"Basic {token}"


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Redirects within http(s) only; credentials follow one to the same origin only, and
    user info in a redirect's URL is dropped (never looked up as part of a host name)."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int,
                         msg: str, headers: Any, newurl: str) -> urllib.request.Request | None:
        try:
            parts = urlsplit(newurl)
            origin = _origin(parts)
        except ValueError:
            raise SourceError(f"{_redact(req.full_url)} redirects to a malformed URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceError(f"{_redact(req.full_url)} redirects to {_redact(newurl)}, which "
                              "is not an http(s) URL; giftbox does not follow it")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        netloc = host + (f":{parts.port}" if parts.port is not None else "")
        clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        new = super().redirect_request(req, fp, code, msg, headers, clean)
        authorization = req.unredirected_hdrs.get("Authorization")
        if new is not None and authorization and origin == _origin(urlsplit(req.full_url)):
            new.add_unredirected_header("Authorization", authorization)
        return new


def _http_get(url: str, settings: Settings, accept: str | None = None,
              attempts: int = 3, credentials_from: str | None = None,
              ) -> urllib.request._UrlopenRet:  # type: ignore[name-defined]
    clean, authorization = _authorize(url, settings, credentials_from)
    headers = {"User-Agent": "giftbox"}
    if accept:
        headers["Accept"] = accept
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            request = urllib.request.Request(clean, headers=headers)  # noqa: S310 - http(s)
            if authorization:
                # Unredirected: a redirect (possibly to another host) never carries it.
                request.add_unredirected_header("Authorization", authorization)
            opener = urllib.request.build_opener(
                urllib.request.HTTPSHandler(context=_ssl_context(settings)), _Redirects())
            return opener.open(request, timeout=60)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise
            if exc.code in (401, 403):
                how = ("with the credentials given" if authorization
                       else "without credentials")
                raise SourceError(
                    f"{_redact(url)} refused the download {how} (HTTP {exc.code})",
                    hint="put the index's user and password in PIP_INDEX_URL "
                         "(https://USER:PASSWORD@host/simple) or in ~/.netrc (machine HOST "
                         "login USER password PASSWORD); giftbox never prints them") from None
            last = exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            last = exc
        if attempt + 1 < attempts:
            time.sleep(1 + 2 * attempt)
    reason = getattr(last, "reason", None) or last
    raise SourceError(f"cannot download {_redact(url)} after {attempts} attempts: {reason}",
                      hint="check the network and the index URL (pip's index-url)")


def _sdist_matches(filename: str, name: str, version: str) -> bool:
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version
    if not filename.endswith(".tar.gz"):
        return False
    stem = filename[: -len(".tar.gz")]
    project, _, file_version = stem.rpartition("-")
    try:
        return (canonicalize_name(project) == canonicalize_name(name)
                and Version(file_version) == Version(version))
    except InvalidVersion:
        return False


def find_sdist(pypi: PyPIUpstream, settings: Settings) -> tuple[str, str | None]:
    """The sdist's URL (and the index's sha256 for it) from a PEP 691/503 simple index."""
    from packaging.utils import canonicalize_name
    indexes = (settings.index_url, *settings.extra_index_urls)
    for index in indexes:
        # Links are joined to the page without its user info: the URLs returned, printed
        # and recorded never carry the index's credentials (they are added per request).
        page = _authorize(f"{index}/{canonicalize_name(pypi.name)}/", settings)[0]
        try:
            with _http_get(page, settings, credentials_from=index,
                           accept="application/vnd.pypi.simple.v1+json, text/html;q=0.1") as r:
                body = r.read().decode()
                content_type = r.headers.get("Content-Type", "")
        except urllib.error.HTTPError:
            continue
        except (UnicodeDecodeError, OSError) as exc:
            raise SourceError(f"cannot read the index page {page}: {exc}") from None
        if "json" in content_type:
            try:
                for entry in json.loads(body).get("files", []):
                    if _sdist_matches(str(entry["filename"]), pypi.name, pypi.version):
                        return (urljoin(page, str(entry["url"])),
                                (entry.get("hashes") or {}).get("sha256"))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise SourceError(f"the index page {page} is not a PEP 691 project page "
                                  f"({type(exc).__name__}: {exc})",
                                  hint="check the index URL (pip's index-url)") from None
        else:
            parser = _Links()
            parser.feed(body)
            for href in parser.links:
                url, _, fragment = href.partition("#")
                if _sdist_matches(Path(urlsplit(url).path).name, pypi.name, pypi.version):
                    sha = fragment.removeprefix("sha256=") if fragment.startswith("sha256=") \
                        else None
                    return urljoin(page, url), sha
    raise SourceError(
        f"no source tarball {pypi.name}-{pypi.version}.tar.gz on "
        + ", ".join(_redact(i) for i in indexes),
        hint="check upstream.pypi.name and upstream.pypi.version in the spec")


def download_sdist(pypi: PyPIUpstream, settings: Settings,
                   reporter: Reporter = NULL_REPORTER) -> Path:
    """The verified tarball in the cache, downloaded once."""
    folder = settings.cache_dir / "pypi" / pypi.sha256
    existing = [p for p in folder.glob("*.tar.gz")] if folder.is_dir() else []
    if existing:
        return existing[0]
    url, _index_sha = find_sdist(pypi, settings)
    name = Path(urlsplit(url).path).name
    reporter.detail(f"downloading {_redact(url)}")
    digest = hashlib.sha256()
    partial = folder / f".{name}.part"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _http_get(url, settings) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except OSError as exc:
        try:
            partial.unlink(missing_ok=True)
        except OSError:
            pass  # it could not be created either (a name too long)
        _remove_empty(folder)
        raise SourceError(f"cannot store {name} in {folder}: {exc.strerror or exc}",
                          hint="check upstream.pypi.version (a file name has at most 255 "
                               "bytes) and that the cache directory is writable") from None
    if digest.hexdigest() != pypi.sha256:
        partial.unlink()
        _remove_empty(folder)
        raise SourceError(
            f"{name} from {_redact(url)} has sha256 {digest.hexdigest()}, but the spec pins "
            f"upstream.pypi.sha256 {pypi.sha256}",
            hint="if the index is right, the pin is wrong (copy the sha256 the index lists); "
                 "if the pin is right, the index served other bytes: do not build from it")
    final = folder / name
    partial.rename(final)
    return final


def _listed_by(url: str, settings: Settings) -> str | None:
    """The configured index on ``url``'s origin (whose credentials the file link gets)."""
    for index in (settings.index_url, *settings.extra_index_urls):
        try:
            if _origin(urlsplit(index)) == _origin(urlsplit(url)):
                return index
        except ValueError:
            continue
    return None


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


# --- a tarball, read as data --------------------------------------------------------------
#
# A release tarball is data. It is never unpacked on the host and git never runs in it: its
# members are checked, then streamed into ``git fast-import`` in a repository giftbox
# created, so nothing the tarball carries (a .git directory or file, .gitattributes naming a
# filter, hooks) is ever read as git configuration, and what is committed is the tarball's
# bytes, unconverted.


@dataclass(frozen=True)
class _Blob:
    path: str  # inside the top-level directory
    mode: str  # 100644, 100755 or 120000
    member: tarfile.TarInfo
    link: str | None = None  # a symlink's target


def _is_git_dir_name(component: str) -> bool:
    """``.git`` as git itself recognises it on any file system (``.GIT``, ``.git.``,
    ``git~1``)."""
    folded = component.lower().rstrip(". ")
    return folded == ".git" or folded == "git~1"


def _link_escapes(link: str, target: str, symlinks: dict[str, str]) -> bool:
    """Whether symlink ``link`` -> ``target`` resolves (through the archive's other
    symlinks) outside the top-level directory or into a ``.git``."""
    stack = link.split("/")[:-1]
    pending = target.split("/")
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if len(stack) <= 1:
                return True
            stack.pop()
            continue
        if _is_git_dir_name(part):
            return True
        stack.append(part)
        inner = symlinks.get("/".join(stack))
        if inner is not None:
            hops += 1
            if hops > 40 or inner.startswith("/"):
                return True
            stack.pop()
            pending = inner.split("/") + pending
    return False


def _shown(name: str) -> str:
    """A member name as it may be printed: control characters escaped, not interpreted."""
    return name if name.isprintable() else repr(name)


def _bad_tarball(tarball: Path, problem: str) -> SourceError:
    return SourceError(
        f"the release tarball {tarball.name} {problem}; giftbox did not import it",
        hint="a release tarball holds one top-level directory of regular files, "
             "directories and symlinks that stay inside it; check upstream.pypi (name, version, "
             "sha256) in the spec, or build from upstream.git instead")


def _plan_sdist(tarball: Path, tar: tarfile.TarFile,
                reporter: Reporter) -> tuple[list[_Blob], int]:
    """The tarball's files as blobs to commit (paths inside its top-level directory), and
    the newest member's mtime; refuses whatever could not be a plain source tree."""
    members = tar.getmembers()
    if not members:
        raise _bad_tarball(tarball, "is empty")
    tops: set[str] = set()
    kept: list[tuple[list[str], tarfile.TarInfo]] = []
    dropped: list[str] = []
    for m in members:
        shown = _shown(m.name)
        if m.name.startswith("/"):
            raise _bad_tarball(tarball, f"has a member with an absolute path, {shown}")
        parts = [p for p in m.name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise _bad_tarball(tarball, f"has a member outside its directory, {shown}")
        if not parts:
            continue
        tops.add(parts[0])
        if any(_is_git_dir_name(p) for p in parts):
            dropped.append(m.name)
            continue
        if m.ischr() or m.isblk():
            raise _bad_tarball(tarball, f"has a device file, {shown}")
        if m.isfifo():
            raise _bad_tarball(tarball, f"has a FIFO, {shown}")
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            raise _bad_tarball(tarball, f"has {shown} of unsupported type {m.type!r}")
        if len(parts) == 1 and not m.isdir():
            raise _bad_tarball(tarball, f"holds the file {shown} at its top level (a release "
                                        "tarball unpacks into one directory)")
        kept.append((parts, m))
    if len(tops) != 1:
        names = ", ".join(_shown(t) for t in sorted(tops)[:5]) + (", …" if len(tops) > 5
                                                                    else "")
        raise _bad_tarball(tarball, f"does not unpack into one top-level directory (it holds "
                                    f"{names})")
    # The last member of a path wins, as when tar unpacks it.
    final: dict[str, tuple[list[str], tarfile.TarInfo]] = {}
    for parts, m in kept:
        if len(parts) > 1:
            final["/".join(parts)] = (parts, m)
    symlinks = {path: m.linkname for path, (_p, m) in final.items() if m.issym()}
    files = {path for path, (_p, m) in final.items() if not m.isdir()}
    blobs: list[_Blob] = []
    for path, (parts, m) in final.items():
        for depth in range(2, len(parts)):
            above = "/".join(parts[:depth])
            if above in files:
                what = "symlink" if above in symlinks else "file"
                raise _bad_tarball(tarball, f"has {_shown(m.name)} under the {what} "
                                            f"{_shown(above)}")
        if m.isdir():
            continue
        inner = "/".join(parts[1:])
        if m.issym():
            if not m.linkname or m.linkname.startswith("/"):
                raise _bad_tarball(tarball, f"has an absolute symlink, {_shown(m.name)} -> "
                                            f"{_shown(m.linkname) or '(empty)'}")
            if _link_escapes(path, m.linkname, symlinks):
                raise _bad_tarball(tarball, f"has a symlink that leads outside its directory, "
                                            f"{_shown(m.name)} -> {_shown(m.linkname)}")
            blobs.append(_Blob(inner, "120000", m, link=m.linkname))
        elif m.islnk():
            target = "/".join(p for p in m.linkname.split("/") if p not in ("", "."))
            linked = final.get(target)
            if (m.linkname.startswith("/") or ".." in target.split("/") or linked is None
                    or not linked[1].isreg()):
                raise _bad_tarball(tarball, f"has a hard link to something that is not a file "
                                            f"of the tarball, {_shown(m.name)} -> "
                                            f"{_shown(m.linkname)}")
            blobs.append(_Blob(inner, "100755" if linked[1].mode & 0o100 else "100644",
                               linked[1]))
        else:
            blobs.append(_Blob(inner, "100755" if m.mode & 0o100 else "100644", m))
    if not blobs:
        raise _bad_tarball(tarball, "holds no files")
    if dropped:
        reporter.detail(f"{tarball.name}: left out {len(dropped)} member(s) inside a .git "
                        f"({_shown(dropped[0])}{', …' if len(dropped) > 1 else ''})")
    epoch = int(max((m.mtime for m in members), default=0))
    return blobs, max(epoch, 0)


def _quote_path(path: str) -> bytes:
    """A path as fast-import reads it: C-style quoted, so any byte is literal."""
    out = bytearray(b'"')
    for byte in path.encode("utf-8", "surrogateescape"):
        if byte in (0x22, 0x5C):
            out += b"\\" + bytes([byte])
        elif byte < 0x20 or byte >= 0x7F:
            out += b"\\%03o" % byte
        else:
            out.append(byte)
    return bytes(out + b'"')


def _fast_import_stream(tar: tarfile.TarFile, blobs: list[_Blob], out: IO[bytes],
                        message: str, epoch: int) -> None:
    marks: dict[str, int] = {}  # a member's name -> the mark of its blob (hard links share)
    lines: list[bytes] = []
    for blob in blobs:
        key = blob.member.name if blob.link is None else "\0" + blob.path
        if key not in marks:
            if blob.link is not None:
                data = blob.link.encode("utf-8", "surrogateescape")
            else:
                handle = tar.extractfile(blob.member)
                data = handle.read() if handle is not None else b""
            marks[key] = len(marks) + 1
            out.write(b"blob\nmark :%d\ndata %d\n" % (marks[key], len(data)) + data + b"\n")
        lines.append(b"M %s :%d %s\n" % (blob.mode.encode(), marks[key],
                                          _quote_path(blob.path)))
    who = f"{IDENTITY['GIT_COMMITTER_NAME']} <{IDENTITY['GIT_COMMITTER_EMAIL']}> {epoch} +0000"
    text = message.encode()
    out.write(b"commit refs/heads/upstream\nmark :%d\n" % (len(marks) + 1))
    out.write(f"author {who}\ncommitter {who}\n".encode())
    out.write(b"data %d\n" % len(text) + text + b"\n")
    out.writelines(lines)
    out.write(b"\nreset refs/tags/upstream\nfrom :%d\n\ndone\n" % (len(marks) + 1))


def import_sdist(tarball: Path, pypi: PyPIUpstream, settings: Settings,
                 reporter: Reporter = NULL_REPORTER) -> tuple[Path, str, int]:
    """The tarball's content as one commit in a cache repository: (repo, commit, epoch)."""
    repo = settings.cache_dir / "pypi-git" / f"{pypi.sha256}.git"
    with locked(repo):
        if (repo / "HEAD").exists():
            proc = run_git(["--git-dir", str(repo), "rev-parse", "--verify",
                            "refs/tags/upstream^{commit}"])
            commit = proc.stdout.strip()
            epoch = int(git.Repo(repo).commit(commit).committed_date)
            return repo, commit, epoch
        digest = hashlib.sha256()
        try:
            with open(tarball, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
        except OSError as exc:
            raise SourceError(f"cannot read {tarball}: {exc.strerror or exc}") from None
        if digest.hexdigest() != pypi.sha256:
            raise SourceError(
                f"the cached {tarball} has sha256 {digest.hexdigest()}, not the pinned "
                f"upstream.pypi.sha256 {pypi.sha256}",
                hint=f"remove {tarball.parent} so that giftbox downloads it again")
        message = (f"{pypi.name} {pypi.version} from its PyPI release tarball\n\n"
                   f"sha256: {pypi.sha256}\n")
        repo.parent.mkdir(parents=True, exist_ok=True)
        tmp_repo = Path(tempfile.mkdtemp(prefix=f".{pypi.sha256[:12]}.", dir=repo.parent))
        try:
            stream = tmp_repo.parent / f"{tmp_repo.name}.stream"
            try:
                with tarfile.open(tarball, "r:*") as tar, open(stream, "wb") as out:
                    blobs, epoch = _plan_sdist(tarball, tar, reporter)
                    _fast_import_stream(tar, blobs, out, message, epoch)
            except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
                raise _bad_tarball(tarball, f"cannot be read as a tar archive ({exc})") \
                    from None
            except OSError as exc:  # gzip.BadGzipFile, or the stream could not be written
                raise _bad_tarball(tarball, f"cannot be read ({exc.strerror or exc})") \
                    from None
            env = git_env()
            run_git(["init", "--bare", "--quiet", "-b", "upstream", str(tmp_repo)],
                    cwd=tmp_repo.parent, env=env)
            with open(stream, "rb") as feed:
                run_git(["--git-dir", str(tmp_repo), "fast-import", "--quiet", "--done"],
                        cwd=tmp_repo.parent, env=env, stdin=feed)
            commit = run_git(["--git-dir", str(tmp_repo), "rev-parse", "--verify",
                              "refs/tags/upstream^{commit}"], cwd=tmp_repo.parent,
                             env=env).stdout.strip()
            tmp_repo.rename(repo)
        finally:
            stream.unlink(missing_ok=True)
            shutil.rmtree(tmp_repo, ignore_errors=True)
    return repo, commit, epoch


def resolve_pypi(pypi: PyPIUpstream, settings: Settings,
                 reporter: Reporter = NULL_REPORTER) -> Upstream:
    tarball = download_sdist(pypi, settings, reporter)
    repo, commit, epoch = import_sdist(tarball, pypi, settings, reporter)
    return Upstream(kind="pypi", url=f"pypi:{pypi.name}=={pypi.version}", ref=pypi.version,
                    commit=commit, repo=repo, version=str(parse_upstream(pypi.version)),
                    source_date_epoch=epoch, sha256=pypi.sha256)


# --- the stage ----------------------------------------------------------------------------


def resolve(spec: Spec, settings: Settings, reporter: Reporter = NULL_REPORTER,
            ref: str | None = None) -> Upstream:
    """Resolve the spec's upstream (or ``ref`` instead of the pinned one) to a commit."""
    if spec.upstream_kind == "git":
        assert spec.git is not None
        return resolve_git(spec.git, settings, reporter, ref)
    if ref is not None:
        raise SourceError(f"--ref only applies to git upstreams; {spec.name} builds from its "
                          "PyPI tarball (upstream.use: pypi)",
                          hint="set upstream.use: git in the spec to build from a ref")
    assert spec.pypi is not None
    return resolve_pypi(spec.pypi, settings, reporter)


# A build's tree is the upstream commit's files as hard links to a tree of that commit kept
# under the cache (checked out once per commit): checking out nova's 4,800 files cost a build
# two seconds of the kernel creating files, linking them a fifth of that. The linked files are
# verified on every use against the commit itself (an index read from the commit, with no
# stat data, so git hashes every file; nothing untracked), and git never writes a file in
# place (a patched file is a new one), so the kept tree stays the commit's. A tree that does
# not verify goes, and the build checks out afresh. Only a build's own tree is linked: the
# operator's (``giftbox source --into``) is a checkout of its own, free to edit.
_COMMIT_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
CHECKOUTS_KEPT_DAYS = 7


def _clone(upstream: Upstream, staging: Path, env: dict[str, str]) -> None:
    """``staging`` as a clone of the upstream's repository, nothing checked out."""
    run_git(["clone", "--quiet", "--no-checkout", "--", str(upstream.repo), str(staging)],
            env=env)
    # The tree's own .gitattributes may name a filter, an encoding or line-ending
    # conversions: info/attributes outranks it, so the checkout is the commit's bytes.
    (staging / ".git" / "info").mkdir(exist_ok=True)
    (staging / ".git" / "info" / "attributes").write_text(
        "* -text -filter -ident -working-tree-encoding\n")


def _kept_tree(upstream: Upstream, settings: Settings, env: dict[str, str]) -> Path | None:
    """The commit's files (no .git) under ``<cache>/checkouts``, checked out now if missing;
    None when the commit is not a plain object name."""
    if not _COMMIT_RE.fullmatch(upstream.commit):
        return None
    folder = settings.cache_dir / "checkouts"
    kept = folder / upstream.commit
    with locked(kept):
        if not kept.is_dir():
            tmp = Path(tempfile.mkdtemp(prefix=f".{upstream.commit[:12]}.", dir=folder))
            try:
                _clone(upstream, tmp, env)
                run_git(["checkout", "--quiet", "--detach", upstream.commit], cwd=tmp, env=env)
                shutil.rmtree(tmp / ".git")
                tmp.rename(kept)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            _prune_kept_trees(folder, keep=kept)
        os.utime(kept)  # used: kept CHECKOUTS_KEPT_DAYS from now
    return kept


def _prune_kept_trees(folder: Path, keep: Path) -> None:
    horizon = time.time() - CHECKOUTS_KEPT_DAYS * 86400
    for old in folder.iterdir():
        if old != keep and old.is_dir() and _COMMIT_RE.fullmatch(old.name):
            with locked(old):
                if old.stat().st_mtime < horizon:
                    shutil.rmtree(old, ignore_errors=True)


def _linked_checkout(upstream: Upstream, staging: Path, settings: Settings,
                     env: dict[str, str], reporter: Reporter) -> bool:
    """``staging`` (a clone, nothing checked out) given the commit's files as hard links to
    the kept tree, and its index the commit's; False (``staging`` left as it was given)
    when the linked files are not exactly the commit's."""
    kept = _kept_tree(upstream, settings, env)
    if kept is None:
        return False
    host.run(["cp", "-al", "--", f"{kept}/.", str(staging)], error=SourceError,
             needed_for="to link a build's source tree", check=True)
    run_git(["read-tree", upstream.commit], cwd=staging, env=env)  # no stat data: all hashed
    run_git(["update-index", "-q", "--refresh"], cwd=staging, env=env, check=False)
    differs = run_git(["diff-files", "--quiet"], cwd=staging, env=env, check=False).returncode
    extra = run_git(["ls-files", "-z", "--others", "--directory"], cwd=staging, env=env).stdout
    if differs == 0 and not extra:
        return True
    reporter.info(f"the kept checkout of {upstream.commit[:12]} ({kept}) is not the commit's "
                  "files any more (changed in place?): removed, and this build checks out "
                  "afresh")
    with locked(kept):
        shutil.rmtree(kept, ignore_errors=True)
    for entry in staging.iterdir():
        if entry.name != ".git":
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    (staging / ".git" / "index").unlink(missing_ok=True)
    return False


def checkout(spec: Spec, upstream: Upstream, into: Path, settings: Settings,
             reporter: Reporter = NULL_REPORTER, *, linked: bool = False) -> SourceTree:
    """A fresh work tree at ``into``: the upstream commit plus the patch series.

    The tree is assembled beside ``into`` and renamed into place only when every patch
    applied, so ``into`` never holds a half-patched tree. A failed attempt is moved under
    the cache's ``failed/`` directory and named in the error for inspection. ``linked``
    (a build's own tree): the commit's files are hard links to its kept checkout, verified.
    """
    into = into.resolve()
    if into.exists() and any(into.iterdir()):
        raise SourceError(f"{into} exists and is not empty",
                          hint="choose another --into, or remove it first")
    into.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{into.name}.", dir=into.parent))
    env = git_env()
    stamp = f"@{upstream.source_date_epoch} +0000"
    env["GIT_COMMITTER_DATE"] = stamp
    try:
        _clone(upstream, staging, env)
        branch = f"giftbox/{spec.name}"
        if linked and _linked_checkout(upstream, staging, settings, env, reporter):
            run_git(["update-ref", f"refs/heads/{branch}", upstream.commit], cwd=staging,
                    env=env)
            run_git(["symbolic-ref", "HEAD", f"refs/heads/{branch}"], cwd=staging, env=env)
        else:
            run_git(["checkout", "--quiet", "-B", branch, upstream.commit], cwd=staging,
                    env=env)
        run_git(["tag", "--force", "giftbox-upstream", upstream.commit], cwd=staging, env=env)
        applied = apply_series(spec, staging, env, reporter, failed_dir=settings.cache_dir
                               / "failed")
        head = run_git(["rev-parse", "HEAD"], cwd=staging, env=env).stdout.strip()
    except BaseException:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if into.exists():
        into.rmdir()
    staging.rename(into)
    return SourceTree(project=spec.name, path=into, upstream=upstream, head=head,
                      patches=tuple(applied))


def prepare(spec: Spec, into: Path, settings: Settings, reporter: Reporter = NULL_REPORTER,
            ref: str | None = None) -> SourceTree:
    with reporter.stage(f"source {spec.name}: resolve {ref or spec.pinned_ref}"):
        upstream = resolve(spec, settings, reporter, ref)
        reporter.detail(f"{upstream.ref} -> {upstream.commit[:12]} "
                        f"(upstream version {upstream.version})")
    with reporter.stage(f"source {spec.name}: checkout and apply {len(spec.patches)} patch(es)"):
        return checkout(spec, upstream, into, settings, reporter)
