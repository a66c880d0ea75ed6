"""The Dockerfile, read as Docker would, and its healthcheck run for real.

No engine builds the image here, so these tests check what a build would give: two
stages, the runtime one from a published, pinned tag, a numeric non-root user, no pip at
container start, a healthcheck; that every file the build copies is in the build context
(.dockerignore) and exists; and the HEALTHCHECK command itself, run against a real
``sagawire run``, passes when the sidecar is up and fails when it is not.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.deploy.files import (
    DOCKERFILE,
    DOCKERIGNORE,
    ROOT,
    SAGAWIRE,
    copies,
    dockerignore_rules,
    exec_form,
    healthcheck,
    ignored,
    instructions,
    stages,
)

TEXT = DOCKERFILE.read_text()
STAGES = stages(TEXT)
RUNTIME = STAGES[-1]
PINNED = re.compile(
    r"^[a-z0-9][a-z0-9./-]*:(?!latest$)[A-Za-z0-9][A-Za-z0-9._-]*(@sha256:[0-9a-f]{64})?$"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_stages_the_runtime_from_a_pinned_published_tag() -> None:
    assert len(STAGES) >= 2, "a build stage and a runtime stage"
    assert STAGES[0].name == "build"
    for stage in STAGES:
        assert "$" not in stage.base, f"FROM {stage.base}: a build arg hides the tag"
        assert PINNED.match(stage.base), f"FROM {stage.base}: not a pinned published tag"
    assert RUNTIME.base.startswith("python:3.12-slim")


def test_the_build_stage_makes_the_wheels_the_runtime_installs_offline() -> None:
    build = STAGES[0]
    assert any("pip wheel" in r.value for r in build.all("RUN"))
    installs = [r.value for r in RUNTIME.all("RUN") if "pip install" in r.value]
    assert len(installs) == 1
    assert "--no-index" in installs[0], "the runtime installs the built wheels, nothing else"
    assert "from=build" in installs[0]


def test_a_numeric_non_root_user_and_no_pip_at_start() -> None:
    user = RUNTIME.last("USER")
    assert user is not None
    uid = user.value.split(":")[0]
    # runAsNonRoot in Kubernetes can only verify a numeric user
    assert uid.isdigit() and int(uid) != 0, f"USER {user.value}"
    entrypoint, cmd = RUNTIME.last("ENTRYPOINT"), RUNTIME.last("CMD")
    assert entrypoint is not None and cmd is not None
    assert exec_form(entrypoint.value) == ["sagawire"]
    argv = exec_form(cmd.value)
    assert argv is not None and argv[:3] == ["run", "--sagas", "/sagas"]
    for ins in (entrypoint, cmd):
        assert "pip" not in ins.value and "install" not in ins.value


def test_it_listens_on_all_interfaces_of_the_container_on_the_exposed_port() -> None:
    env = " ".join(e.value for e in RUNTIME.all("ENV"))
    match = re.search(r"SAGAWIRE_HTTP=(\S+)", env)
    assert match is not None, "the sidecar binds 127.0.0.1 by default: unreachable in a container"
    host, _, port = match.group(1).rpartition(":")
    assert host == "0.0.0.0"
    exposed = [e.value for e in RUNTIME.all("EXPOSE")]
    assert exposed == [port]


def test_what_the_build_copies_is_in_the_context_and_exists() -> None:
    rules = dockerignore_rules(DOCKERIGNORE.read_text())
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    sources = [
        src
        for stage in STAGES
        for srcs, _, flags in copies(stage)
        if "from" not in flags
        for src in srcs
    ]
    assert "pyproject.toml" in sources and "orchestrator" in sources
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: no such file in the repository"
        under = [f for f in tracked if f == src or f.startswith(src + "/")]
        assert under, f"COPY {src}: nothing tracked there"
        kept_out = [f for f in under if ignored(f, rules)]
        assert not kept_out, f".dockerignore keeps out what COPY {src} needs: {kept_out[:5]}"
    # and what must never reach a layer stays out
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "sagawire.db",
        "orchestrator/__pycache__/cli.cpython-312.pyc",
        "sagawire.egg-info/PKG-INFO",
    ):
        assert ignored(path, rules), f"{path} would be sent to the build"


def test_the_image_sagas_directory_holds_a_saga() -> None:
    targets = {dest: srcs for srcs, dest, flags in copies(RUNTIME) if "from" not in flags}
    assert "/sagas/order.py" in targets
    assert targets["/sagas/order.py"] == ["sagas/order.py"]


def test_the_parser_refuses_what_docker_would() -> None:
    with pytest.raises(ValueError, match="continued"):
        instructions("FROM python:3.12-slim\nRUN echo \\\n")
    with pytest.raises(ValueError, match="before the first FROM"):
        stages("RUN true\nFROM python:3.12-slim\n")
    assert not PINNED.match("python:latest") and not PINNED.match("python")
    assert PINNED.match("python:3.12-slim-bookworm")


@pytest.mark.slow
def test_the_healthcheck_passes_on_a_live_sidecar_and_fails_without_one(tmp_path) -> None:
    spec = RUNTIME.last("HEALTHCHECK")
    assert spec is not None
    options, argv = healthcheck(spec.value)
    assert {"interval", "timeout", "start-period", "retries"} <= set(options)
    assert argv[0] == "python" and "/healthz" in " ".join(argv), "slim has no curl"
    argv = [sys.executable, *argv[1:]]
    port = _free_port()
    env = {**os.environ, "SAGAWIRE_HTTP": f"127.0.0.1:{port}"}
    log = (tmp_path / "sidecar.log").open("wb")
    proc = subprocess.Popen(
        [
            *SAGAWIRE,
            "run",
            "--sagas",
            str(ROOT / "sagas" / "order.py"),
            "--broker",
            "memory://",
            "--store",
            "memory://",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "sidecar.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the sidecar did not come up"
            time.sleep(0.1)
        up = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
        assert up.returncode == 0, up.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    down = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert down.returncode != 0, "the healthcheck passed with no sidecar listening"
