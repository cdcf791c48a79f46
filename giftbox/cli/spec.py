"""``giftbox spec validate``."""

from __future__ import annotations

from typing import Any

import click

from giftbox.cli import App, cli, emit_json, json_option, pass_app
from giftbox.errors import SpecError
from giftbox.family import NAMES
from giftbox.spec import Spec, list_projects, load_spec, spec_path
from giftbox.targets import Catalog


@cli.group()
def spec() -> None:
    """Check spec files (specs/<project>.yaml)."""


@spec.command("validate")
@click.argument("projects", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Validate every spec under specs/.")
@json_option
@pass_app
def validate(app: App, projects: tuple[str, ...], all_: bool, as_json: bool) -> None:
    """Validate specs and report every problem as file:line, field, and a hint.

    \b
      giftbox spec validate nova
      giftbox spec validate --all --json
    """
    root = app.settings.root
    names = list_projects(root) if all_ or not projects else list(projects)
    if not names:
        raise click.UsageError(f"no specs found under {root}/specs")
    known = frozenset(Catalog.load(app.settings).distros)
    results: list[dict[str, Any]] = []
    problems = []
    valid: list[Spec] = []
    for name in names:
        try:
            valid.append(load_spec(spec_path(root, name), root, known))
            results.append({"project": name, "ok": True, "problems": []})
        except SpecError as exc:
            problems.extend(exc.problems)
            results.append({"project": name, "ok": False,
                            "problems": [p.as_dict() for p in exc.problems]})
    conflicts = _conflicts(valid)
    if as_json:
        emit_json({"ok": not problems and not conflicts, "specs": results,
                   "conflicts": conflicts})
    else:
        for r in results:
            if r["ok"]:
                click.echo(f"ok    specs/{r['project']}.yaml")
    if problems:
        raise SpecError(problems, hint=f"{len(problems)} problem(s) in "
                        f"{sum(1 for r in results if not r['ok'])} spec(s)")
    if conflicts:
        from giftbox.errors import PackageError
        raise PackageError("\n".join(conflicts))


def _conflicts(specs: list[Spec]) -> list[str]:
    """Specs whose packages would install the same file (checked per package family)."""
    from giftbox.errors import PackageError
    from giftbox.package.layout import check_conflicts

    if len(specs) < 2:
        return []
    found = []
    for family in NAMES:
        try:
            check_conflicts(specs, family=family)
        except PackageError as exc:
            if exc.render() not in found:
                found.append(exc.render())
    return found
