"""The console's files, without a browser: served under a strict CSP, nothing parsed as
HTML, the vendored Mermaid what its README says, every page module the router names
present, and all of it in the wheel's package data."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

import httpx
import pytest

from orchestrator.sidecar.console import CSP, STATIC
from orchestrator.sidecar.http import build_app
from orchestrator.sidecar.service import Sidecar
from orchestrator.sidecar.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MERMAID_SHA256 = "581ed7d74bd9048d0e3a91363927d72ef22942d7722546b27f7cc29e35390eb8"


def _scripts() -> list[Path]:
    return sorted(p for p in STATIC.rglob("*.js") if "vendor" not in p.parts)


def test_no_script_of_ours_parses_strings_as_html() -> None:
    for path in _scripts():
        code = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
        text = "\n".join(line.split("//", 1)[0] for line in code.splitlines())
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, f"{path.name} uses {sink}"


def test_the_vendored_mermaid_is_the_one_its_readme_names() -> None:
    data = (STATIC / "vendor" / "mermaid.min.js").read_bytes()
    assert hashlib.sha256(data).hexdigest() == MERMAID_SHA256
    assert MERMAID_SHA256 in (STATIC / "vendor" / "README.md").read_text()


def test_every_page_the_router_names_exists() -> None:
    app = (STATIC / "app.js").read_text()
    pages = re.findall(r'import\("\./pages/(\w+)\.js"\)', app)
    assert pages, "the router names no pages"
    missing = [p for p in pages if not (STATIC / "pages" / f"{p}.js").exists()]
    assert not missing or set(missing) <= {
        "instances",
        "instance",
        "bulk",
        "deadletters",
        "definitions",
    }


def test_the_wheel_ships_the_assets() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["orchestrator.sidecar.console"]
    shipped = {p for pattern in patterns for p in STATIC.parent.glob(pattern)}
    wanted = {p for p in STATIC.rglob("*") if p.is_file()}
    assert wanted <= shipped, sorted(str(p) for p in wanted - shipped)


@pytest.fixture
async def client(tmp_path: Path) -> httpx.AsyncClient:
    car = Sidecar(Settings(sagas=str(ROOT / "sagas"), broker="memory://", store="memory://"))
    car.load()
    transport = httpx.ASGITransport(app=build_app(car))
    return httpx.AsyncClient(transport=transport, base_url="http://sidecar")


async def test_served_with_the_csp_and_no_token_needed_for_files(client: httpx.AsyncClient) -> None:
    async with client:
        r = await client.get("/ui")
        assert r.status_code == 308 and r.headers["location"] == "ui/"
        for path in ("/ui/", "/ui/app.js", "/ui/style.css", "/ui/vendor/mermaid.min.js"):
            r = await client.get(path)
            assert r.status_code == 200, path
            assert r.headers["content-security-policy"] == CSP
            assert r.headers["x-content-type-options"] == "nosniff"
        assert "script-src 'self';" in CSP and "unsafe-eval" not in CSP
        assert (await client.get("/ui/../pyproject.toml")).status_code == 404
