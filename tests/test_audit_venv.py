"""The builder's audit script (giftbox/data/audit_venv.py) run as the builder runs it, with a
real venv's own interpreter and pip, here on the host: pip check runs beside the project's
imports and console scripts, and a requirement the venv does not meet fails the audit."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from giftbox.audit import failures

pytestmark = pytest.mark.slow  # a venv with pip: a few seconds


def _venv(tmp_path: Path) -> tuple[Path, Path]:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    return venv, site


def _dist(site: Path, requires: str) -> None:
    (site / "brokendemo").mkdir(exist_ok=True)
    (site / "brokendemo" / "__init__.py").write_text("VALUE = 1\n")
    info = site / "brokendemo-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokendemo\nVersion: 1.0\n"
                                   + requires)
    (info / "top_level.txt").write_text("brokendemo\n")
    (info / "RECORD").write_text("")
    (info / "INSTALLER").write_text("pip\n")


def _audit(venv: Path, tmp_path: Path) -> dict:  # type: ignore[type-arg]
    script = tmp_path / "audit_venv.py"
    script.write_bytes((resources.files("giftbox") / "data" / "audit_venv.py").read_bytes())
    out = tmp_path / "audit.json"
    subprocess.run([str(venv / "bin" / "python"), str(script), "project", "brokendemo",
                    str(out)], check=True, cwd=tmp_path)
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def test_pip_check_runs_with_the_project_audit_and_an_unmet_requirement_fails_it(
        tmp_path: Path) -> None:
    venv, site = _venv(tmp_path)
    _dist(site, "Requires-Dist: no-such-dist-giftbox>=2\n")
    report = _audit(venv, tmp_path)
    assert report["imports"] == {"brokendemo": None}
    assert "brokendemo 1.0 requires no-such-dist-giftbox" in report["pip_check"]
    problems = failures(report)
    assert len(problems) == 1 and problems[0].startswith("pip check found broken requirements")

    _dist(site, "")  # the requirement dropped: pip check is clean, so is the audit
    report = _audit(venv, tmp_path)
    assert report["pip_check"] is None and failures(report) == []
