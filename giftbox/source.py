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

import difflib
import hashlib
import html.parser
import json
import shutil
import ssl
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import git

from giftbox.errors import SourceError
from giftbox.gitutil import GitFailed, git_env, locked, run_git
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
        problem = check_git_url(url)
        if problem:
            raise SourceError(f"git URL '{url}' {problem}")
        self.url = url
        self.path = settings.cache_dir / "git" / f"{_slug(url)}.git"
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
                     "(redirects are not followed: use the final URL)") from None

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
    parts = urlsplit(url)
    if parts.password or parts.username:
        return url.replace(parts.netloc, f"***@{parts.hostname}", 1)
    return url


def _http_get(url: str, settings: Settings, accept: str | None = None,
              attempts: int = 3) -> urllib.request._UrlopenRet:  # type: ignore[name-defined]
    headers = {"User-Agent": "giftbox"}
    if accept:
        headers["Accept"] = accept
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http(s) only
            return urllib.request.urlopen(request, context=_ssl_context(settings), timeout=60)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise
            last = exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            last = exc
        time.sleep(1 + 2 * attempt)
    raise SourceError(f"cannot download {_redact(url)} after {attempts} attempts: {last}",
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
        page = f"{index}/{canonicalize_name(pypi.name)}/"
        try:
            with _http_get(page, settings,
                           accept="application/vnd.pypi.simple.v1+json, text/html;q=0.1") as r:
                body = r.read().decode()
                content_type = r.headers.get("Content-Type", "")
        except urllib.error.HTTPError:
            continue
        if "json" in content_type:
            for entry in json.loads(body).get("files", []):
                if _sdist_matches(entry["filename"], pypi.name, pypi.version):
                    return urljoin(page, entry["url"]), entry.get("hashes", {}).get("sha256")
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
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{name}.part"
    digest = hashlib.sha256()
    reporter.detail(f"downloading {_redact(url)}")
    with _http_get(url, settings) as response, open(partial, "wb") as out:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != pypi.sha256:
        partial.unlink()
        folder.rmdir()
        raise SourceError(
            f"{name} from {_redact(url)} has sha256 {digest.hexdigest()}, but the spec pins "
            f"upstream.pypi.sha256 {pypi.sha256}",
            hint="if the index is right, the pin is wrong (copy the sha256 the index lists); "
                 "if the pin is right, the index served other bytes: do not build from it")
    final = folder / name
    partial.rename(final)
    return final


def _safe_members(tar: tarfile.TarFile) -> tuple[str, list[tarfile.TarInfo]]:
    members = tar.getmembers()
    tops = {m.name.split("/", 1)[0] for m in members}
    if len(tops) != 1:
        raise SourceError(f"{Path(str(tar.name)).name} does not unpack into one top-level directory")
    return tops.pop(), members


def import_sdist(tarball: Path, pypi: PyPIUpstream, settings: Settings) -> tuple[Path, str, int]:
    """The tarball's content as one commit in a cache repository: (repo, commit, epoch)."""
    repo = settings.cache_dir / "pypi-git" / f"{pypi.sha256}.git"
    with locked(repo):
        if (repo / "HEAD").exists():
            proc = run_git(["rev-parse", "--verify", "refs/tags/upstream"], cwd=repo)
            commit = proc.stdout.strip()
            epoch = int(git.Repo(repo).commit(commit).committed_date)
            return repo, commit, epoch
        with tempfile.TemporaryDirectory(prefix="giftbox-sdist-") as tmp:
            work = Path(tmp) / "tree"
            with tarfile.open(tarball) as tar:
                top, members = _safe_members(tar)
                # The "data" filter refuses absolute paths, links out of the tree and devices.
                tar.extractall(Path(tmp) / "x", members=members, filter="data")
                epoch = int(max((m.mtime for m in members), default=0))
            (Path(tmp) / "x" / top).rename(work)
            env = git_env()
            stamp = f"@{epoch} +0000"
            env.update({"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp})
            run_git(["init", "--quiet", "-b", "upstream"], cwd=work, env=env)
            run_git(["add", "--all", "--force", "."], cwd=work, env=env)
            run_git(["commit", "--quiet", "--no-verify", "-m",
                     f"{pypi.name} {pypi.version} from its PyPI release tarball\n\n"
                     f"sha256: {pypi.sha256}"], cwd=work, env=env)
            commit = run_git(["rev-parse", "HEAD"], cwd=work, env=env).stdout.strip()
            run_git(["tag", "upstream", commit], cwd=work, env=env)
            tmp_repo = repo.parent / f".{repo.name}.new"
            shutil.rmtree(tmp_repo, ignore_errors=True)
            run_git(["clone", "--quiet", "--bare", str(work), str(tmp_repo)], env=env)
            tmp_repo.rename(repo)
    return repo, commit, epoch


def resolve_pypi(pypi: PyPIUpstream, settings: Settings,
                 reporter: Reporter = NULL_REPORTER) -> Upstream:
    tarball = download_sdist(pypi, settings, reporter)
    repo, commit, epoch = import_sdist(tarball, pypi, settings)
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


def checkout(spec: Spec, upstream: Upstream, into: Path, settings: Settings,
             reporter: Reporter = NULL_REPORTER) -> SourceTree:
    """A fresh work tree at ``into``: the upstream commit plus the patch series.

    The tree is assembled beside ``into`` and renamed into place only when every patch
    applied, so ``into`` never holds a half-patched tree. A failed attempt is moved under
    the cache's ``failed/`` directory and named in the error for inspection.
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
        run_git(["clone", "--quiet", "--no-checkout", "--", str(upstream.repo), str(staging)],
                env=env)
        branch = f"giftbox/{spec.name}"
        run_git(["checkout", "--quiet", "-B", branch, upstream.commit], cwd=staging, env=env)
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
