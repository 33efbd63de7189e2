"""The Kubernetes manifests under ``infra/k8s`` render and are valid Kubernetes objects.

Each kustomization (the base and every overlay) is rendered by ``kubectl kustomize`` and every object
is validated with kubernetes-validate (the API's own OpenAPI schemas, strict: an unknown field is an
error) for the oldest and the newest Kubernetes version the manifests aim at. Then what the schemas
cannot say: every workload has probes, resource requests and (a Deployment) a disruption budget, sets
only variables its service reads, takes secrets from the one Secret, and the egress socket directory
is the same path on the node and in the pod. Each check is also shown to reject a broken manifest.
"""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from pydantic_settings import BaseSettings

from corral.credential_proxy.settings import Settings as CredentialProxySettings
from corral.gateway.settings import Settings as GatewaySettings
from corral.harness.settings import Settings as HarnessSettings
from corral.sandbox_manager.settings import Settings as SandboxManagerSettings
from corral.session_store.settings import Settings as SessionStoreSettings
from corral.settings import TelemetrySettings, variables

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"
KUSTOMIZATIONS = [K8S / "base", *sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir())]
PLAIN_MANIFESTS = [K8S / "nats" / "network-policy.yaml"]
#: The oldest Kubernetes the manifests support, and the newest the validator knows.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
SECRET = "corral-secrets"
#: Each container's module, and the settings it reads (besides the telemetry every service reads).
SERVICES: dict[str, type[BaseSettings]] = {
    "corral.gateway": GatewaySettings,
    "corral.session_store": SessionStoreSettings,
    "corral.harness": HarnessSettings,
    "corral.sandbox_manager": SandboxManagerSettings,
    "corral.credential_proxy": CredentialProxySettings,
}
Obj = dict[str, Any]


@functools.cache
def rendered(kustomization: Path) -> tuple[Obj, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: it renders infra/k8s (`kubectl kustomize`); install kubectl")
    result = subprocess.run(
        [kubectl, "kustomize", str(kustomization)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {kustomization} failed:\n{result.stderr}"
    return tuple(obj for obj in yaml.safe_load_all(result.stdout) if obj)


def render(kustomization: Path) -> list[Obj]:
    """The kustomization's objects (a copy: tests break them)."""
    return copy.deepcopy(list(rendered(kustomization)))


def validate(obj: Obj) -> None:
    for version in VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def pod_spec(obj: Obj) -> Obj | None:
    if obj["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
        spec: Obj = obj["spec"]["template"]["spec"]
        return spec
    return None


def problems(objects: list[Obj]) -> Iterator[str]:
    """What the schemas accept but a Corral deployment must not have."""
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        labels = obj["spec"]["template"]["metadata"]["labels"]
        if labels.get("app.kubernetes.io/part-of") != "corral":
            yield f"{name}: its pods lack app.kubernetes.io/part-of=corral, so no NetworkPolicy applies to them"
        if obj["kind"] == "Deployment" and not any(
            set(b["spec"]["selector"]["matchLabels"].items()) <= set(labels.items()) for b in budgets
        ):
            yield f"{name}: no PodDisruptionBudget selects its pods"
        for container in spec["containers"]:
            where = f"{name} container {container['name']}"
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container:
                    yield f"{where}: no {probe}"
            requests = container.get("resources", {}).get("requests", {})
            if not {"cpu", "memory"} <= requests.keys():
                yield f"{where}: no cpu and memory requests"
            yield from environment_problems(where, container)
        yield from host_path_problems(name, spec)


def environment_problems(where: str, container: Obj) -> Iterator[str]:
    module = container["command"][-1]
    if module not in SERVICES:
        yield f"{where}: runs {module}, which is none of {sorted(SERVICES)}"
        return
    read = {v.name for v in variables(SERVICES[module])} | {v.name for v in variables(TelemetrySettings)}
    for entry in container.get("env", []):
        if entry["name"] not in read:
            yield f"{where}: sets {entry['name']}, which {module} does not read"
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None and ref["name"] != SECRET:
            yield f"{where}: {entry['name']} comes from Secret {ref['name']}, not {SECRET}"


def host_path_problems(name: str, spec: Obj) -> Iterator[str]:
    """The egress socket directory must be the same path on the node and in the container: the node's
    Docker engine mounts the path the credential-proxy answers."""
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec.get("volumes", []) if "hostPath" in v}
    for container in spec["containers"]:
        for mount in container.get("volumeMounts", []):
            path = host_paths.get(mount["name"])
            if path is not None and path != mount["mountPath"]:
                yield f"{name}: hostPath {path} is mounted at {mount['mountPath']}, another path"
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        socket_dir = env.get("CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR")
        if socket_dir is not None and socket_dir not in host_paths.values():
            yield f"{name}: the egress socket directory {socket_dir} is not a hostPath of the node"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_every_rendered_object_is_valid_for_kubernetes(kustomization: Path) -> None:
    objects = render(kustomization)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "DaemonSet", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap"} <= kinds
    for obj in objects:
        validate(obj)
    assert list(problems(objects)) == []


def test_the_plain_manifests_are_valid_for_kubernetes() -> None:
    for path in PLAIN_MANIFESTS:
        for obj in yaml.safe_load_all(path.read_text()):
            validate(obj)


def test_the_workloads_are_the_five_services_with_the_sandbox_manager_on_sandbox_nodes() -> None:
    objects = render(K8S / "base")
    workloads = {(o["kind"], o["metadata"]["name"]) for o in objects if pod_spec(o) is not None}
    assert workloads == {
        ("Deployment", "gateway"),
        ("Deployment", "session-store"),
        ("Deployment", "harness"),
        ("DaemonSet", "credential-proxy"),
        ("DaemonSet", "sandbox-manager"),
    }
    by_name = {o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in objects if o["kind"] == "DaemonSet"}
    for spec in by_name.values():
        assert spec["nodeSelector"] == {"corral.dev/sandbox": "true"}
    manager, proxy = by_name["sandbox-manager"], by_name["credential-proxy"]
    assert {"path": "/var/run/docker.sock", "type": "Socket"} in [v.get("hostPath") for v in manager["volumes"]]
    # every sandbox node's manager asks its own node's credential-proxy, whose sockets its engine mounts
    node = {"fieldRef": {"fieldPath": "spec.nodeName"}}
    manager_env = {e["name"]: e.get("valueFrom") for e in manager["containers"][0]["env"]}
    proxy_env = {e["name"]: e.get("valueFrom") for e in proxy["containers"][0]["env"]}
    assert manager_env["CORRAL_SANDBOX_HOST_ID"] == manager_env["CORRAL_SANDBOX_EGRESS_HOST"] == node
    assert proxy_env["CORRAL_CREDENTIAL_PROXY_HOST_ID"] == node
    assert not any(o["kind"] == "Secret" for o in objects), "secrets are never rendered from this repository"


def test_the_validator_rejects_a_broken_manifest() -> None:
    gateway = next(o for o in render(K8S / "base") if o["kind"] == "Deployment" and o["metadata"]["name"] == "gateway")
    validate(gateway)
    misspelt = copy.deepcopy(gateway)
    misspelt["spec"]["replica"] = misspelt["spec"].pop("replicas")
    wrong_type = copy.deepcopy(gateway)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eighty"
    no_image = copy.deepcopy(gateway)
    del no_image["spec"]["template"]["spec"]["containers"][0]["name"]
    for broken in (misspelt, wrong_type, no_image):
        with pytest.raises(kubernetes_validate.ValidationError):
            validate(broken)


def test_the_deployment_checks_reject_what_the_schemas_accept() -> None:
    objects = render(K8S / "base")
    assert list(problems(objects)) == []
    broken = copy.deepcopy(objects)
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in broken}
    harness = by_name[("Deployment", "harness")]["spec"]["template"]["spec"]["containers"][0]
    del harness["livenessProbe"]
    harness["env"].append({"name": "CORRAL_POSTGRES_URL", "value": "postgresql://x"})
    broken.remove(by_name[("PodDisruptionBudget", "gateway")])
    proxy = by_name[("DaemonSet", "credential-proxy")]["spec"]["template"]["spec"]
    proxy["containers"][0]["volumeMounts"][1]["mountPath"] = "/sockets"
    found = "\n".join(problems(broken))
    assert "harness container harness: no livenessProbe" in found
    assert "sets CORRAL_POSTGRES_URL, which corral.harness does not read" in found
    assert "Deployment/gateway: no PodDisruptionBudget" in found
    assert "hostPath /run/corral/egress is mounted at /sockets" in found
