"""docs/deployment.md describes the files that are here: its paths exist, every manifest
in deploy/k8s is in its table, and the image tag it tells you to build is this version's."""

from __future__ import annotations

import re
import tomllib

from tests.deploy.files import K8S, ROOT

DOC = (ROOT / "docs" / "deployment.md").read_text()


def test_the_paths_it_names_exist() -> None:
    named = set(re.findall(r"`((?:deploy|docs|tests|sagas)/[\w./-]+)`", DOC))
    assert "deploy/compose/shop.py" in named
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, missing


def test_every_manifest_is_in_its_table() -> None:
    listed = set(re.findall(r"^\| `([\w-]+\.yaml)` \|", DOC, re.MULTILINE))
    assert listed == {p.name for p in K8S.glob("*.yaml")}


def test_the_image_tag_is_this_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    tags = set(re.findall(r"sagawire:(\d[\w.]*)", DOC))
    assert tags == {version}, tags
