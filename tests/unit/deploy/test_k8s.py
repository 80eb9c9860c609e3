"""Kubernetes manifests (deploy/k8s, applied with `kubectl apply -k`).

Schemas: kubernetes-validate ships the Kubernetes OpenAPI schemas, so strict validation
(unknown fields rejected) runs offline. Security, probes, wiring between objects and the
settings the app reads are checked structurally. When kubectl is on PATH the
kustomization is also rendered for real.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30"  # oldest version the manifests promise to work on
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job"}


def _objects(kind: str, k8s_objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [obj for obj in k8s_objects if obj["kind"] == kind]


def _one(kind: str, name: str, k8s_objects: list[dict[str, Any]]) -> dict[str, Any]:
    (obj,) = [o for o in k8s_objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def _workloads(k8s_objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (obj for obj in k8s_objects if obj["kind"] in WORKLOAD_KINDS)


def _pod(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def _config(k8s_objects: list[dict[str, Any]]) -> dict[str, str]:
    return _one("ConfigMap", "hl7-gateway-config", k8s_objects)["data"]


def _ids(k8s_objects: list[dict[str, Any]]) -> list[str]:
    return [f"{o['kind']}/{o['metadata']['name']}" for o in k8s_objects]


# ---------------------------------------------------------------- files and schemas


def test_every_manifest_is_applied_or_is_an_example(kustomization: dict[str, Any]) -> None:
    listed = set(kustomization["resources"])
    assert all((K8S / name).is_file() for name in listed)
    for path in K8S.glob("*.y*ml"):
        assert path.name in listed | {"kustomization.yaml"} or path.name.endswith(".example.yaml"), path.name


def test_manifests_pass_strict_kubernetes_schema_validation(k8s_objects: list[dict[str, Any]]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    examples = [doc for path in K8S.glob("*.example.yaml") for doc in yaml.safe_load_all(path.read_text()) if doc]
    errors = []
    for obj in [*k8s_objects, *examples]:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not errors


def test_schema_validation_catches_a_misspelt_field(k8s_objects: list[dict[str, Any]]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    edge = yaml.safe_load(yaml.safe_dump(_one("Deployment", "hl7-edge", k8s_objects)))
    context = _pod(edge)["containers"][0]["securityContext"]
    context["readOnlyRootFileSystem"] = context.pop("readOnlyRootFilesystem")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(edge, KUBERNETES_VERSION, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not on PATH")
def test_kustomize_renders_every_object_into_the_namespace(k8s_objects: list[dict[str, Any]]) -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    objects = [doc for doc in yaml.safe_load_all(rendered) if doc]
    assert sorted(_ids(objects)) == sorted(_ids(k8s_objects))
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "hl7-gateway", obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "hl7-gateway"
    images = {c["image"] for obj in objects if obj["kind"] in WORKLOAD_KINDS for c in _pod(obj)["containers"]}
    assert len(images) == 1 and images.pop().endswith(":0.1.0")


# ---------------------------------------------------------------- security


def test_namespace_enforces_the_restricted_pod_security_standard(k8s_objects: list[dict[str, Any]]) -> None:
    (namespace,) = _objects("Namespace", k8s_objects)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_service_account_mounts_no_token(k8s_objects: list[dict[str, Any]]) -> None:
    accounts = {sa["metadata"]["name"]: sa for sa in _objects("ServiceAccount", k8s_objects)}
    for workload in _workloads(k8s_objects):
        pod = _pod(workload)
        assert pod["serviceAccountName"] in accounts
        assert accounts[pod["serviceAccountName"]]["automountServiceAccountToken"] is False
        assert pod["automountServiceAccountToken"] is False


def test_pods_and_containers_are_locked_down(k8s_objects: list[dict[str, Any]]) -> None:
    for workload in _workloads(k8s_objects):
        pod = _pod(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert not pod.get("hostNetwork") and not pod.get("hostPID")
        for container in pod["containers"]:
            context = container["securityContext"]
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert context["runAsNonRoot"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert not context["capabilities"].get("add"), where
            assert context["seccompProfile"]["type"] == "RuntimeDefault", where
            assert context.get("privileged", False) is False, where


def test_read_only_root_has_a_writable_tmp(k8s_objects: list[dict[str, Any]]) -> None:
    for workload in _workloads(k8s_objects):
        pod = _pod(workload)
        scratch = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in scratch, workload["metadata"]["name"]


def test_containers_have_requests_and_memory_limits(k8s_objects: list[dict[str, Any]]) -> None:
    for workload in _workloads(k8s_objects):
        for container in _pod(workload)["containers"]:
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), workload["metadata"]["name"]
            assert "memory" in resources["limits"], workload["metadata"]["name"]


def test_no_secret_material_in_applied_manifests(k8s_objects: list[dict[str, Any]]) -> None:
    assert not _objects("Secret", k8s_objects), "Secrets are created out of band, never committed"
    text = "\n".join(yaml.safe_dump(obj) for obj in k8s_objects)
    assert "$argon2" not in text and "password_hash" not in text


def test_secret_example_is_a_placeholder_only() -> None:
    text = (K8S / "registry-secret.example.yaml").read_text(encoding="utf-8")
    assert "$argon2" not in text and "kubectl" in text and "--from-file" in text
    (secret,) = [doc for doc in yaml.safe_load_all(text) if doc]
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "hl7-registry"
    from processor.registry.loader import parse_registry

    parse_registry(secret["stringData"]["registry.yaml"].encode())  # the placeholder is a valid (empty) registry


# ---------------------------------------------------------------- the app's contract


def test_workloads_run_real_cli_commands(k8s_objects: list[dict[str, Any]]) -> None:
    from processor.cli import build_parser

    handlers = {
        workload["metadata"]["name"]: build_parser().parse_args(_pod(workload)["containers"][0]["args"]).handler
        for workload in _workloads(k8s_objects)
    }
    assert handlers == {
        "hl7-edge": "processor.commands.edge:main",
        "hl7-processor": "processor.commands.stream:main",
        "hl7-topics-create": "processor.commands.topics:create",
    }


def test_configmap_holds_only_settings_the_app_reads(
    k8s_objects: list[dict[str, Any]], known_setting: Callable[[str], bool]
) -> None:
    config = _config(k8s_objects)
    assert all(known_setting(name) for name in config)
    assert config["HL7_EDGE_HOST"] == "0.0.0.0"
    for workload in _workloads(k8s_objects):
        for container in _pod(workload)["containers"]:
            for variable in container.get("env", []):
                assert known_setting(variable["name"]) or variable["name"] == "POD_NAME", variable["name"]


def test_long_running_pods_probe_livez_and_readyz_on_a_declared_port(k8s_objects: list[dict[str, Any]]) -> None:
    config = _config(k8s_objects)
    expected_port = {"hl7-edge": int(config["HL7_EDGE_PORT"]), "hl7-processor": int(config["HL7_METRICS_PORT"])}
    for workload in k8s_objects:
        if workload["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        (container,) = _pod(workload)["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            port = container[probe]["httpGet"]["port"]
            assert ports[port] == expected_port[workload["metadata"]["name"]], probe


def test_registry_comes_from_a_secret_mounted_as_a_directory(k8s_objects: list[dict[str, Any]]) -> None:
    registry_file = Path(_config(k8s_objects)["HL7_REGISTRY_FILE"])
    for workload in k8s_objects:
        if workload["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        pod = _pod(workload)
        volumes = {v["name"]: v for v in pod["volumes"]}
        (container,) = pod["containers"]
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(registry_file.parent)]
        assert "subPath" not in mount, "subPath mounts never see Secret updates: hot reload would stop"
        assert mount["readOnly"] is True
        secret = volumes[mount["name"]]["secret"]
        assert secret["secretName"] == "hl7-registry"
        assert not secret.get("items"), "the key registry.yaml lands as the file name"
        assert registry_file.name == "registry.yaml"


def test_kafka_credentials_come_from_a_secret(k8s_objects: list[dict[str, Any]]) -> None:
    config = _config(k8s_objects)
    assert config["HL7_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert "HL7_KAFKA_SASL_PASSWORD" not in config
    for workload in _workloads(k8s_objects):
        refs = [e["secretRef"]["name"] for e in _pod(workload)["containers"][0]["envFrom"] if "secretRef" in e]
        assert refs == ["hl7-kafka-credentials"], workload["metadata"]["name"]


# ---------------------------------------------------------------- processor


def test_processor_is_a_statefulset_with_pod_name_transactional_ids(k8s_objects: list[dict[str, Any]]) -> None:
    processor = _one("StatefulSet", "hl7-processor", k8s_objects)
    (container,) = _pod(processor)["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["HL7_TRANSACTIONAL_ID"]["value"] == "$(POD_NAME)"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    names = list(env)
    assert names.index("POD_NAME") < names.index("HL7_TRANSACTIONAL_ID"), "$(VAR) only expands earlier variables"
    assert "volumeClaimTemplates" not in processor["spec"], "stateless apart from the stable name"


def test_processor_replicas_fit_in_the_raw_partitions(k8s_objects: list[dict[str, Any]]) -> None:
    processor = _one("StatefulSet", "hl7-processor", k8s_objects)
    assert 1 <= processor["spec"]["replicas"] <= int(_config(k8s_objects)["HL7_TOPIC_PARTITIONS"])


def test_processor_has_its_governing_headless_service(k8s_objects: list[dict[str, Any]]) -> None:
    processor = _one("StatefulSet", "hl7-processor", k8s_objects)
    service = _one("Service", processor["spec"]["serviceName"], k8s_objects)
    assert service["spec"]["clusterIP"] == "None"


def test_processor_shutdown_grace_covers_a_transaction(k8s_objects: list[dict[str, Any]]) -> None:
    from processor.config import Settings

    processor = _one("StatefulSet", "hl7-processor", k8s_objects)
    grace = _pod(processor)["terminationGracePeriodSeconds"]
    timeout_ms = int(_config(k8s_objects).get("HL7_TRANSACTION_TIMEOUT_MS", Settings().transaction_timeout_ms))
    assert grace * 1000 >= timeout_ms


# ---------------------------------------------------------------- wiring between objects


def _pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_selectors_match_their_pods(k8s_objects: list[dict[str, Any]]) -> None:
    for workload in k8s_objects:
        if workload["kind"] in {"Deployment", "StatefulSet"}:
            assert _selects(workload["spec"]["selector"]["matchLabels"], _pod_labels(workload))
    pods = {w["metadata"]["name"]: w for w in k8s_objects if w["kind"] in {"Deployment", "StatefulSet"}}
    for service in _objects("Service", k8s_objects):
        (workload,) = [w for w in pods.values() if _selects(service["spec"]["selector"], _pod_labels(w))]
        ports = {p["name"] for p in _pod(workload)["containers"][0]["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports
    for budget in _objects("PodDisruptionBudget", k8s_objects):
        assert any(_selects(budget["spec"]["selector"]["matchLabels"], _pod_labels(w)) for w in pods.values())


def test_edge_autoscales_on_cpu_and_keeps_one_pod_through_disruptions(k8s_objects: list[dict[str, Any]]) -> None:
    edge = _one("Deployment", "hl7-edge", k8s_objects)
    hpa = _one("HorizontalPodAutoscaler", "hl7-edge", k8s_objects)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hl7-edge"}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert "cpu" in _pod(edge)["containers"][0]["resources"]["requests"], "CPU utilisation needs a CPU request"
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (budget,) = [b for b in _objects("PodDisruptionBudget", k8s_objects) if b["metadata"]["name"] == "hl7-edge"]
    assert budget["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a PDB that blocks every drain"


def test_network_policy_denies_by_default_and_opens_only_what_is_needed(k8s_objects: list[dict[str, Any]]) -> None:
    policies = _objects("NetworkPolicy", k8s_objects)
    assert any(p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} for p in policies)
    config = _config(k8s_objects)
    edge_in = [
        port["port"]
        for p in policies
        if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == "hl7-edge"
        for rule in p["spec"].get("ingress", [])
        for port in rule["ports"]
    ]
    assert edge_in == [int(config["HL7_EDGE_PORT"])]
    egress = [port for p in policies for rule in p["spec"].get("egress", []) for port in rule["ports"]]
    assert {"UDP", "TCP"} <= {p["protocol"] for p in egress if p["port"] == 53}, "DNS"
    bootstrap_port = int(config["HL7_KAFKA_BOOTSTRAP_SERVERS"].split(",")[0].rsplit(":", 1)[1])
    assert any(p["port"] <= bootstrap_port <= p.get("endPort", p["port"]) for p in egress), "Kafka"
    covered = {"hl7-edge", "hl7-processor", "hl7-topics"}
    for p in policies:
        for expression in p["spec"]["podSelector"].get("matchExpressions", []):
            covered -= set(expression["values"])
    assert not covered, f"egress not opened for {covered}"
