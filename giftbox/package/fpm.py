"""The fpm packager: the same staged tree and scripts, handed to fpm (Ruby) when it is on PATH.

fpm cannot be installed on giftbox's own machines, so it is tested on the command line it
builds (``fpm_command``), not by running it. Differences from the native packagers, stated so
nobody is surprised: dependencies are computed by giftbox (dpkg-shlibdeps for deb, as for the
native packager; rpm's ELF generator through ``--rpm-autoreq`` with the same exclusions passed
as rpmbuild defines), rpm payloads are xz (released fpm has no zstd for rpm), and byte-identical
output is not promised (fpm adds its own files and timestamps; ``--source-date-epoch-default``
narrows but does not close that).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from giftbox import host
from giftbox.errors import PackageError
from giftbox.package.common import (
    Compression,
    declared_depends,
    long_description,
    synopsis,
)
from giftbox.package.deb import deb_filename, shlib_depends
from giftbox.package.layout import Staged
from giftbox.package.rpm import _ere, macro_regex, rpm_filename
from giftbox.package.runner import Runner
from giftbox.package.scripts import deb_scripts, rpm_scriptlets

_DEB_SCRIPT_FLAGS = {"preinst": "--before-install", "postinst": "--after-install",
                     "prerm": "--before-remove", "postrm": "--after-remove"}
_RPM_SCRIPT_FLAGS = {"pre": "--before-install", "post": "--after-install",
                     "preun": "--before-remove", "postun": "--after-remove"}
_DEB_COMPRESSION = {"zstd": "zst", "xz": "xz", "gzip": "gz"}


def fpm_available() -> bool:
    return host.which("fpm") is not None


def fpm_command(staged: Staged, out: Path, scripts_dir: Path, depends: list[str], *,
                compression: Compression, maintainer: str) -> list[str]:
    """The fpm argv (without the leading ``fpm``) for a staged tree; writes the scripts."""
    fam = staged.family_obj
    half = _HALVES[fam.name]
    v = staged.version
    m = staged.manifest
    upstream, iteration = fam.upstream_and_revision(v)
    argv = ["-s", "dir", "-t", fam.name, "-n", staged.name, "-v", upstream,
            "--iteration", iteration, "-a", fam.arch(staged.arch),
            "--maintainer", maintainer, "--vendor", "giftbox", "--category", "net",
            "--description", "\n".join([synopsis(staged), *long_description(staged)]),
            "--license", staged.license or "Apache-2.0",
            "--source-date-epoch-default", str(m.source_date_epoch)]
    if v.rpm_epoch:
        argv += ["--epoch", str(v.rpm_epoch)]
    if m.upstream_url.startswith(("https://", "http://")):
        argv += ["--url", m.upstream_url]
    for dep in depends:
        argv += ["--depends", dep]
    scripts_dir.mkdir(parents=True, exist_ok=True)
    for name, body in sorted(half.scripts(staged).items()):
        path = scripts_dir / name
        path.write_text(body if body.startswith("#!") else "#!/bin/sh\n" + body)
        os.chmod(path, 0o755)
        argv += [half.script_flags[name], str(path)]
    for conf in staged.conffiles:
        argv += ["--config-files", conf.path]
    argv += half.options(staged, compression)
    argv += ["-C", str(staged.root), "--package", str(out)]
    argv += sorted(p.name for p in staged.root.iterdir() if p.name != "DEBIAN")
    return argv


def _deb_options(staged: Staged, compression: Compression) -> list[str]:
    return ["--deb-no-default-config-files", "--deb-user", "root", "--deb-group", "root",
            "--deb-compression", _DEB_COMPRESSION[compression.kind],
            "--deb-compression-level", str(compression.level)]


def _rpm_options(staged: Staged, compression: Compression) -> list[str]:
    package = staged.spec.package
    prefix_re = _ere(package.prefix)
    argv = ["--rpm-os", "linux", "--rpm-user", "root", "--rpm-group", "root",
            "--rpm-compression", "gzip" if compression.kind == "gzip" else "xz",
            "--rpm-autoreq",
            "--rpm-rpmbuild-define", "_buildhost giftbox",
            "--rpm-rpmbuild-define", "use_source_date_epoch_as_buildtime 1",
            "--rpm-rpmbuild-define", "clamp_mtime_to_source_date_epoch 1",
            "--rpm-rpmbuild-define", "__os_install_post %{nil}",
            "--rpm-rpmbuild-define", "__brp_mangle_shebangs %{nil}",
            "--rpm-rpmbuild-define", "_build_id_links none",
            "--rpm-rpmbuild-define", "__python_requires %{nil}",
            "--rpm-rpmbuild-define", "__pythondist_requires %{nil}",
            "--rpm-rpmbuild-define", "__script_requires %{nil}",
            "--rpm-rpmbuild-define",
            "__provides_exclude_from " + macro_regex(f"^{prefix_re}/.*$")]
    if staged.bundled_libs:
        names = "|".join(_ere(n) for n in sorted(set(staged.bundled_libs)))
        argv += ["--rpm-rpmbuild-define",
                 "__requires_exclude " + macro_regex(f"^({names})" + r"(\(|$)")]
    for conf in staged.conffiles:
        owner = f"root,{conf.group}" if conf.group else "root,root"
        argv += ["--rpm-attr", f"{conf.mode:04o},{owner}:{conf.path}"]
    if package.user:
        u = package.user
        argv += ["--directories", u.home, "--rpm-attr", f"0750,{u.name},{u.group}:{u.home}"]
    return argv


def _deb_prepare(staged: Staged, out_dir: Path, work: Path, runner: Runner,
                 depends: list[str]) -> tuple[Path, list[str]]:
    depends = list(dict.fromkeys(depends + shlib_depends(staged, runner, work)))
    return out_dir / deb_filename(staged.name, staged.version.deb, staged.arch.deb), depends


def _rpm_prepare(staged: Staged, out_dir: Path, work: Path, runner: Runner,
                 depends: list[str]) -> tuple[Path, list[str]]:
    if staged.spec.package.user:
        staged.path(staged.spec.package.user.home).mkdir(parents=True, exist_ok=True)
    return out_dir / rpm_filename(staged), depends


@dataclass(frozen=True)
class _Half:
    """What fpm is told for one family: its scripts and their flags, its own options, and
    the file name and extra dependencies (``prepare``) before fpm runs."""

    scripts: Callable[[Staged], dict[str, str]]
    script_flags: dict[str, str]
    options: Callable[[Staged, Compression], list[str]]
    prepare: Callable[[Staged, Path, Path, Runner, list[str]], tuple[Path, list[str]]]


_HALVES = {"deb": _Half(deb_scripts, _DEB_SCRIPT_FLAGS, _deb_options, _deb_prepare),
           "rpm": _Half(rpm_scriptlets, _RPM_SCRIPT_FLAGS, _rpm_options, _rpm_prepare)}


_FPM_NEEDS = "for --packager fpm"
_FPM_OTHERWISE = "use --packager native"


def build_fpm(staged: Staged, out_dir: Path, work: Path, *, compression: Compression,
              runner: Runner, maintainer: str, check_deps: bool) -> tuple[Path, list[str]]:
    host.find("fpm", PackageError, _FPM_NEEDS, otherwise=_FPM_OTHERWISE)
    depends = declared_depends(staged, runner, check_deps)
    out, depends = _HALVES[staged.family].prepare(staged, out_dir, work, runner, depends)
    argv = fpm_command(staged, out, work / "scripts", depends, compression=compression,
                       maintainer=maintainer)
    proc = host.run(["fpm", *argv], error=PackageError, needed_for=_FPM_NEEDS,
                    otherwise=_FPM_OTHERWISE,
                    extra_env={"SOURCE_DATE_EPOCH": str(staged.manifest.source_date_epoch)})
    code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    if code != 0 or not out.is_file():
        raise PackageError(f"fpm failed for {staged.name}:\n" + (stderr or stdout)[-3000:])
    return out, depends
