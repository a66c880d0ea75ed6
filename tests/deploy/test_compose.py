"""docker-compose.yml: valid Compose, published or built images, commands that exist,
and the demo's three programs running the order saga on a real NATS JetStream.

Validity comes from ``docker compose config -q`` where the Compose CLI plugin is
installed, and always from the Compose Specification's JSON Schema vendored in
tests/data/compose (see its SOURCE.md): our machines have the docker client but not
its compose plugin. Then what a schema cannot see: each image is built here or a
pinned published tag, each sagawire command and environment variable exists, each
healthcheck fits what the container serves, each bind-mounted file exists.

The end-to-end test starts the sidecar, the simulated services and the shop with the
commands and environment the compose file gives them (the broker and store pointed
at this machine's) and waits for the shop's orders to end.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from tests.deploy.files import (
    COMPOSE,
    DOCKERFILE,
    ROOT,
    SAGAWIRE,
    compose,
    copies,
    stages,
    verb,
)
from tests.support.services import require

SCHEMA = ROOT / "tests" / "data" / "compose" / "compose-spec.json"
SCHEMA_SHA256 = "46b7d35f19dd93a05f8fea530291bf84d881c1791ec167ecf0e6fb94e639d496"
PUBLISHED = re.compile(r"^[a-z0-9][a-z0-9./-]*:(?!latest$)[A-Za-z0-9][A-Za-z0-9._-]*$")
SERVICES: dict[str, dict[str, Any]] = compose()["services"]
BUILT = {name: svc for name, svc in SERVICES.items() if "build" in svc}
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}``, with the variable unset."""
    return INTERPOLATION.sub(lambda m: m.group(2) or "", value)


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping"
    return {k: _interpolate(str(v)) for k, v in env.items()}


def _argv(service: dict[str, Any]) -> list[str]:
    """The container's command line: entrypoint (the image's: sagawire) + command."""
    entrypoint = service.get("entrypoint", ["sagawire"])
    return [*entrypoint, *service.get("command", [])]


def test_the_vendored_schema_is_the_recorded_one() -> None:
    digest = hashlib.sha256(SCHEMA.read_bytes()).hexdigest()
    assert digest == SCHEMA_SHA256, "tests/data/compose/SOURCE.md names another file"
    assert SCHEMA_SHA256 in (SCHEMA.parent / "SOURCE.md").read_text()


def test_the_file_is_valid_compose() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(compose())
    ]
    assert not errors, errors
    # and a misspelt key is caught, so the check above can fail
    broken = compose()
    broken["services"]["nats"]["helthcheck"] = {"test": ["CMD", "true"]}
    assert list(validator.iter_errors(broken))


def test_docker_compose_config_accepts_it() -> None:
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
    ):
        pytest.skip("no docker compose plugin here: the JSON Schema test above validates")
    ran = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr


def test_every_image_is_built_here_or_a_pinned_published_tag() -> None:
    for name, svc in SERVICES.items():
        if "build" in svc:
            context = svc["build"] if isinstance(svc["build"], str) else svc["build"]["context"]
            assert (ROOT / context / "Dockerfile").exists(), name
            continue
        image = svc.get("image", "")
        assert PUBLISHED.match(image), f"{name}: {image!r} is neither built here nor a tag"


def test_the_brokers_and_database_the_issue_names() -> None:
    images = {svc.get("image", "") for svc in SERVICES.values()}
    assert {"nats:2.10-alpine", "rabbitmq:3.13-management", "postgres:16"} <= images
    assert any(i.startswith(("apache/kafka:", "bitnami/kafka:")) for i in images)
    kafka = next(s for s in SERVICES.values() if "kafka:" in s.get("image", ""))
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"], "KRaft, no ZooKeeper"
    assert "-js" in SERVICES["nats"]["command"]
    for name in ("kafka", "nats", "rabbitmq", "postgres"):
        assert SERVICES[name]["healthcheck"]["test"][0] == "CMD", name


def test_the_programs_run_sagawire_verbs_that_exist_with_their_settings() -> None:
    verbs = set()
    for name, svc in BUILT.items():
        argv = _argv(svc)
        if argv[0] != "sagawire":
            continue
        found = verb(argv[1])
        assert found.exists, f"{name}: `sagawire {argv[1]} --help` fails: {found.output[-500:]}"
        verbs.add(found.name)
        unknown = {k for k in _env(svc) if k.startswith("SAGAWIRE_")} - found.settings
        assert not unknown, f"{name}: sagawire {found.name} reads no {sorted(unknown)}"
    assert verbs == {"run", "simulate"}


def test_healthchecks_fit_what_each_program_serves() -> None:
    for name, svc in BUILT.items():
        argv = _argv(svc)
        check = svc.get("healthcheck", {})
        if argv[:2] == ["sagawire", "run"]:
            # the sidecar serves HTTP on 0.0.0.0 inside the container; healthy = ready
            assert _env(svc)["SAGAWIRE_HTTP"].startswith("0.0.0.0:")
            port = _env(svc)["SAGAWIRE_HTTP"].rpartition(":")[2]
            assert f"127.0.0.1:{port}/readyz" in " ".join(check["test"])
            assert any(p.endswith(f":{port}") for p in svc["ports"])
        else:
            # the image's HEALTHCHECK asks /healthz, which only `run` serves
            assert check == {"disable": True}, f"{name} would be unhealthy forever"


def test_the_dependencies_wait_for_health() -> None:
    for name, svc in BUILT.items():
        for dep, how in svc["depends_on"].items():
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            wanted = (
                "service_started"
                if SERVICES[dep].get("healthcheck") == {"disable": True}
                else "service_healthy"
            )
            assert how["condition"] == wanted, f"{name} -> {dep}"


def test_paths_in_the_commands_exist_in_the_image_or_the_repository() -> None:
    in_image = {
        dest
        for srcs, dest, flags in copies(stages(DOCKERFILE.read_text())[-1])
        if "from" not in flags
    }
    mounted = {}
    for svc in BUILT.values():
        for volume in svc.get("volumes", []):
            source, target, *_ = volume.split(":")
            assert (ROOT / source).exists(), f"bind mount of a missing {source}"
            mounted[target] = source
    for name, svc in BUILT.items():
        for arg in _argv(svc):
            if arg.startswith("/"):
                assert arg in in_image or arg in mounted, f"{name}: {arg} is in no image layer"


def test_the_shop_script_answers_help_and_refuses_a_bad_number() -> None:
    shop = str(ROOT / "deploy" / "compose" / "shop.py")
    helped = subprocess.run(
        [sys.executable, shop, "--help"], capture_output=True, text=True, check=False, timeout=60
    )
    assert helped.returncode == 0 and "--every" in helped.stdout
    bad = subprocess.run(
        [sys.executable, shop, "--every", "-1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    unknown = subprocess.run(
        [sys.executable, shop, "--broker", "carrier-pigeon://x"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert unknown.returncode == 2 and unknown.stderr.startswith("shop: error:"), unknown.stderr
    assert "Traceback" not in unknown.stderr


# -- the demo, end to end -----------------------------------------------------------------


def _local(value: str, broker: str, store: str, http: str) -> str:
    """A compose value pointed at this machine's services instead of the containers'."""
    if value.startswith("nats://"):
        return broker
    if value.startswith("postgresql://"):
        return store
    if value.startswith("0.0.0.0:"):
        return http
    return value


def _local_argv(argv: list[str]) -> list[str]:
    sagas = {
        "/sagas/order.py": str(ROOT / "sagas" / "order.py"),
        "/demo/shop.py": str(ROOT / "deploy" / "compose" / "shop.py"),
    }
    out = [sagas.get(a, a) for a in argv]
    if out[0] == "sagawire":
        return [*SAGAWIRE, *out[1:]]
    assert out[0] == "python"
    return [sys.executable, *out[1:]]


async def _start(argv: list[str], env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            *argv, env={**os.environ, **env}, stdout=out, stderr=asyncio.subprocess.STDOUT
        )


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.broker("nats")
async def test_the_demo_runs_the_order_saga_on_nats(
    modern_nats: Any, database_url: str, tmp_path: Path
) -> None:
    require("nats", modern_nats.host, modern_nats.port)
    stream = f"SWDEPLOY_{uuid.uuid4().hex[:10]}"
    broker = (
        f"nats://{modern_nats.host}:{modern_nats.port}"
        f"?stream={stream}&subject_prefix=demo.{stream.lower()}"
    )
    port = _free_port()
    http = f"127.0.0.1:{port}"
    assert _interpolate(SERVICES["sagawire"]["environment"]["SAGAWIRE_BROKER"]).startswith(
        "nats://"
    )

    def env_of(name: str) -> dict[str, str]:
        return {k: _local(v, broker, database_url, http) for k, v in _env(SERVICES[name]).items()}

    procs = []
    try:
        sidecar = await _start(
            _local_argv(_argv(SERVICES["sagawire"])), env_of("sagawire"), tmp_path / "sagawire.log"
        )
        procs.append(sidecar)
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                assert sidecar.returncode is None, (tmp_path / "sagawire.log").read_text()
                try:
                    if (await client.get(f"http://{http}/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError((tmp_path / "sagawire.log").read_text())
        services_argv = [*_local_argv(_argv(SERVICES["services"])), "--fast"]
        procs.append(await _start(services_argv, env_of("services"), tmp_path / "services.log"))
        shop_env = {**env_of("shop"), "SHOP_EVERY": "0.2"}
        shop = await asyncio.create_subprocess_exec(
            *_local_argv(_argv(SERVICES["shop"])),
            "--count",
            "3",
            "--wait",
            "30",
            env={**os.environ, **shop_env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(shop.communicate(), 60)
        text = out.decode()
        assert shop.returncode == 0, text + (tmp_path / "sagawire.log").read_text()[-3000:]
        assert text.count("placed order-") == 3 and text.count(" completed: shipped as ") == 3
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 30)
        await _drop_stream(modern_nats, stream)
    assert procs[0].returncode == 0, "the sidecar did not drain cleanly on SIGTERM"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _drop_stream(server: Any, stream: str) -> None:
    import nats

    nc = await nats.connect(f"nats://{server.host}:{server.port}")
    try:
        await nc.jetstream().delete_stream(stream)
    except nats.js.errors.NotFoundError:
        pass
    finally:
        await nc.close()
