"""The wheel the Dockerfile builds installs on its own and gives a working ``sagawire``.

The image's build stage runs ``pip wheel .`` and its runtime stage installs that wheel
and nothing of the source tree, so a module or data file the wheel leaves out breaks
the image, not the tests (which import from the checkout). Here the same wheel is
built, installed into a fresh venv, and run from outside the checkout.

The fresh venv gets the wheel alone (``--no-deps``); its dependencies are found in this
venv's site-packages, added *after* its own through a ``.pth`` line, so the test needs
no download and stays bounded, and ``pip check`` still proves that what the wheel
requires is satisfied by the versions the project is tested with. The imported
``orchestrator`` must come from the fresh venv, not from this checkout.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.deploy.files import ROOT, load_check_verb

pytestmark = pytest.mark.slow


def _run(argv: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", ".", "-w", str(out)], ROOT
    )
    assert built.returncode == 0, built.stderr[-3000:]
    wheels = list(out.glob("sagawire-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_the_wheel_holds_every_package_of_the_checkout(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("orchestrator", "adapters", "schemas", "sagas"):
        modules = {
            p.relative_to(ROOT).as_posix()
            for p in (ROOT / package).rglob("*.py")
            if "__pycache__" not in p.parts
        }
        missing = sorted(modules - names)
        assert not missing, f"the wheel leaves out {missing[:5]}"
        assert f"{package}/py.typed" in names or not (ROOT / package / "py.typed").exists()
    assert any(n.endswith("entry_points.txt") for n in names)


def test_the_wheel_ships_the_console_assets(wheel: Path) -> None:
    """The console is served from the installed package: every file of its static
    folder (pages, styles, the vendored Mermaid) is in the wheel."""
    names = set(zipfile.ZipFile(wheel).namelist())
    static = ROOT / "orchestrator" / "sidecar" / "console" / "static"
    files = {p.relative_to(ROOT).as_posix() for p in static.rglob("*") if p.is_file()}
    missing = sorted(files - names)
    assert not missing, f"the wheel leaves out {missing[:5]}"
    assert "orchestrator/sidecar/console/static/vendor/mermaid.min.js" in names


def test_the_wheel_installs_into_a_fresh_venv_and_sagawire_runs(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        tmp_path,
    )
    assert installed.returncode == 0, installed.stderr
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path
        ).stdout.strip()
    )
    (site / "zz_sagawire_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    checked = _run([sys.executable, "-m", "pip", "--python", str(python), "check"], tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    where = _run([str(python), "-c", "import orchestrator; print(orchestrator.__file__)"], tmp_path)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout

    script = venv / "bin" / "sagawire"
    assert script.exists(), "the wheel's console script was not installed"
    for argv in (["--help"], ["run", "--help"], ["simulate", "--help"]):
        ran = _run([str(script), *argv], tmp_path, timeout=60)
        assert ran.returncode == 0, f"sagawire {' '.join(argv)}: {ran.stderr[-2000:]}"
    assert "run" in _run([str(script), "--help"], tmp_path).stdout
    # the image's default command, checked from the installed wheel
    checked_saga = _run(
        [str(script), load_check_verb(), str(ROOT / "sagas" / "order.py")], tmp_path, timeout=60
    )
    assert checked_saga.returncode == 0, checked_saga.stderr
