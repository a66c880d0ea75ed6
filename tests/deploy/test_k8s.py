"""deploy/k8s: valid Kubernetes objects, and a pod that would start and stay healthy.

Each object is validated with ``kubernetes-validate`` (the Kubernetes OpenAPI schemas,
strict: an unknown or misspelt field fails) for the oldest and the newest Kubernetes
version we claim. Then what a schema cannot see: every Secret and ConfigMap a container
reads exists with that key, the probes hit the sidecar's real endpoints on a declared
port, the pod runs as the image's numeric non-root user, each container has requests
and limits, its ``sagawire`` verb and ``SAGAWIRE_*`` settings exist, and the saga module
in the ConfigMap loads and keeps the order saga's contract.
"""

from __future__ import annotations

import copy
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.files import (
    DOCKERFILE,
    ROOT,
    SAGAWIRE,
    load_check_verb,
    manifests,
    stages,
    verb,
)

VERSIONS = ("1.29", kubernetes_validate.latest_version())
"""Kubernetes 1.29 (the oldest release still commonly run) to the newest we can check."""

OBJECTS = manifests()
BY_KIND: dict[tuple[str, str], dict[str, Any]] = {
    (doc["kind"], doc["metadata"]["name"]): doc for _, doc in OBJECTS
}
DEPLOYMENT = BY_KIND[("Deployment", "orders")]
POD = DEPLOYMENT["spec"]["template"]["spec"]
CONTAINERS = {c["name"]: c for c in POD["containers"]}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_is_valid_for_kubernetes(version: str) -> None:
    assert {kind for kind, _ in BY_KIND} >= {"Deployment", "Secret", "ConfigMap", "Service"}
    for path, doc in OBJECTS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{path.name}: {doc['kind']} {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{path.name}: {exc.message}")


def test_the_validation_catches_a_misspelt_field() -> None:
    broken = copy.deepcopy(DEPLOYMENT)
    broken["spec"]["template"]["spec"]["containers"][1]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_every_reference_names_an_object_and_key_defined_here() -> None:
    def data_keys(kind: str, name: str) -> set[str]:
        doc = BY_KIND.get((kind, name))
        assert doc is not None, f"the pod reads {kind} {name!r}, which deploy/k8s does not define"
        return set(doc.get("data", {})) | set(doc.get("stringData", {}))

    seen = 0
    for container in CONTAINERS.values():
        for env in container.get("env", []):
            ref = env.get("valueFrom", {})
            for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                if field in ref:
                    assert ref[field]["key"] in data_keys(kind, ref[field]["name"]), env
                    seen += 1
        for source in container.get("envFrom", []):
            data_keys("ConfigMap", source["configMapRef"]["name"])
    for volume in POD["volumes"]:
        if "configMap" in volume:
            data_keys("ConfigMap", volume["configMap"]["name"])
    service = BY_KIND[("Service", "orders-sagawire")]
    labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert DEPLOYMENT["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert seen >= 3


def test_the_admin_token_comes_from_the_secret() -> None:
    env = {e["name"]: e for e in CONTAINERS["sagawire"]["env"]}
    token = env["SAGAWIRE_ADMIN_TOKEN"]
    assert "value" not in token and token["valueFrom"]["secretKeyRef"]["name"]
    for _, doc in OBJECTS:
        if doc["kind"] == "ConfigMap":
            assert not any(
                "TOKEN" in k or "postgresql://" in str(v)
                for k, v in doc["data"].items()
                if k.startswith("SAGAWIRE_")
            ), doc["metadata"]


def test_the_probes_ask_the_sidecars_endpoints_on_a_declared_port() -> None:
    sidecar = CONTAINERS["sagawire"]
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert sidecar[probe]["httpGet"]["port"] in ports, probe
    # the probes come from the kubelet, on the pod's IP: the sidecar must not bind loopback
    config = BY_KIND[("ConfigMap", "orders-sagawire")]["data"]
    host, _, port = config["SAGAWIRE_HTTP"].rpartition(":")
    assert host == "0.0.0.0" and int(port) == ports["http"]


def test_the_pod_runs_as_the_images_non_root_user_read_only() -> None:
    user = stages(DOCKERFILE.read_text())[-1].last("USER")
    assert user is not None
    uid = int(user.value.split(":")[0])
    assert POD["securityContext"]["runAsNonRoot"] is True
    assert POD["securityContext"]["runAsUser"] == uid != 0
    assert POD["automountServiceAccountToken"] is False
    for name, container in CONTAINERS.items():
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        resources = container["resources"]
        for what in ("cpu", "memory"):
            assert what in resources["requests"] and what in resources["limits"], (name, what)


def test_the_image_is_this_versions() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, container in CONTAINERS.items():
        assert container["image"].endswith(f"sagawire:{version}"), name


def test_the_containers_run_sagawire_verbs_with_settings_they_read() -> None:
    config = {
        doc["metadata"]["name"]: doc["data"]
        for (kind, _), doc in BY_KIND.items()
        if kind == "ConfigMap"
    }
    for name, container in CONTAINERS.items():
        found = verb(container["args"][0])
        assert found.exists, f"{name}: `sagawire {found.name} --help` fails: {found.output[-500:]}"
        names = {e["name"] for e in container.get("env", [])}
        for source in container.get("envFrom", []):
            names |= set(config[source["configMapRef"]["name"]])
        unknown = {n for n in names if n.startswith("SAGAWIRE_")} - found.settings
        assert not unknown, f"{name}: sagawire {found.name} reads no {sorted(unknown)}"
    assert CONTAINERS["sagawire"]["args"][0] == "run"


def test_the_mounted_saga_module_loads_and_keeps_the_order_contract(tmp_path: Path) -> None:
    sidecar = CONTAINERS["sagawire"]
    sagas_dir = sidecar["args"][sidecar["args"].index("--sagas") + 1]
    mount = next(m for m in sidecar["volumeMounts"] if m["mountPath"] == sagas_dir)
    assert mount["readOnly"] is True
    volume = next(v for v in POD["volumes"] if v["name"] == mount["name"])
    module = BY_KIND[("ConfigMap", volume["configMap"]["name"])]["data"]
    assert set(module) == {"order.py"}
    (tmp_path / "order.py").write_text(module["order.py"])
    checked = subprocess.run(
        [*SAGAWIRE, load_check_verb(), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr

    from orchestrator.language.loader import load_sagas

    (mounted,) = load_sagas(str(tmp_path / "order.py"))
    (shipped,) = load_sagas(str(ROOT / "sagas" / "order.py"))
    assert mounted.name == shipped.name
    assert mounted.consumes() == shipped.consumes(), "the services beside it answer sagas/order.py"
    assert mounted.produces() == shipped.produces()
