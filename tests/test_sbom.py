"""Every package carries a CycloneDX SBOM: upstream, patches, locked dependencies with hashes,
distro dependencies; valid against the CycloneDX 1.6 schema (cyclonedx-python-lib's strict
validator); printed by ``giftbox sbom``."""

# ruff: noqa: F811

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from giftbox.errors import PackageError
from giftbox.repo import publish
from giftbox.sbom import build_sbom, for_entry, python_requirements, sbom_path, validate
from tests.repo_fixtures import Tree, giftbox_cli, keyring_template, make_deb, tree  # noqa: F401
from tests.verify_fixtures import make_giftbox_deb


def test_an_sbom_lists_what_the_package_holds_and_is_valid_cyclonedx(tmp_path: Path) -> None:
    deb = make_giftbox_deb(tmp_path)
    text = build_sbom(deb)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    validate(text)
    doc = json.loads(text)
    subject = doc["metadata"]["component"]
    assert subject["name"] == "giftbox-hello" and subject["version"] == "1.0-1~deb12"
    assert subject["hashes"] == [{"alg": "SHA-256",
                                  "content": hashlib.sha256(deb.read_bytes()).hexdigest()}]
    by_ref = {c["bom-ref"]: c for c in doc["components"]}
    upstream = by_ref["upstream:hello"]
    assert upstream["hashes"][0]["content"] == "cd" * 32
    props = {p["name"]: p["value"] for p in upstream["properties"]}
    assert props["giftbox:upstream_commit"] == "ab" * 20
    [patch] = [c for c in doc["components"] if c["type"] == "file"]
    assert patch["name"] == "0001-Say-hello.patch" and patch["hashes"][0]["content"] == "ef" * 32
    assert python_requirements(doc) == [("idna", "3.7"), ("requests", "2.32.3")]
    assert len(by_ref["pypi:idna@3.7"]["hashes"]) == 2
    deps = {c["name"]: c for c in doc["components"] if c.get("purl", "").startswith("pkg:deb/")}
    assert set(deps) == {"sudo", "python3"}
    assert {"name": "giftbox:relation", "value": "python3 (>= 3.11)"} in \
        deps["python3"]["properties"]
    assert build_sbom(deb) == text  # deterministic: same bytes, same SBOM


def test_a_broken_sbom_is_refused_and_a_foreign_deb_has_none(tmp_path: Path) -> None:
    doc = json.loads(build_sbom(make_giftbox_deb(tmp_path)))
    doc["components"][0]["hashes"] = [{"alg": "SHA-256", "content": "not hex"}]
    with pytest.raises(PackageError, match="not valid CycloneDX"):
        validate(json.dumps(doc))
    with pytest.raises(PackageError, match="no giftbox-manifest.json"):
        build_sbom(make_deb(tmp_path / "plain"))


def test_the_sbom_is_published_beside_the_package_and_printed(tree: Tree,
                                                             tmp_path: Path) -> None:
    deb = make_giftbox_deb(tmp_path)
    [entry] = publish("nightly", [deb], tree.settings).added
    doc = for_entry(tree.settings, "nightly", entry)
    path = sbom_path(tree.settings, "nightly", entry.filename)
    assert path.is_file() and json.loads(path.read_text()) == doc
    printed = giftbox_cli(tree, "sbom", entry.filename, "--channel", "nightly")()
    assert json.loads(printed)["metadata"]["component"]["hashes"][0]["content"] == entry.digest
    assert json.loads(giftbox_cli(tree, "sbom", str(deb))()) == doc
    code, _, err = giftbox_cli(tree, "sbom", "nope.deb", "--channel", "nightly") \
        .run(retcode=None)
    assert code == 7 and "holds no nope.deb" in err
