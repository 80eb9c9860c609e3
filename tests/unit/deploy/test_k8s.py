"""Kubernetes manifests (deploy/k8s, applied with `kubectl apply -k`).

Schemas: kubernetes-validate ships the Kubernetes OpenAPI schemas, so strict validation
(unknown fields rejected) runs offline. Security, probes, wiring between objects and the
settings the app reads are checked structurally, on kustomize's rendering when kubectl is
on PATH (`kubectl kustomize` works offline), else on the files as written. The Prometheus
Operator objects (deploy/k8s/monitoring) are custom resources: no schema ships for them, so
they are checked structurally and against the objects they point at.
"""

from __future__ import annotations

import ipaddress
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30"  # oldest version the manifests promise to work on
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job"}
OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}  # CRDs: not in the core schemas
INGRESS_NAMESPACE = "ingress-nginx"
MONITORING_NAMESPACE = "monitoring"
# Each workload's own Kafka Secret (one principal per role); hl7-kafka-replay is for operators.
KAFKA_SECRET = {
    "hl7-edge": "hl7-kafka-edge",
    "hl7-processor": "hl7-kafka-processor",
    "hl7-topics-create": "hl7-kafka-admin",
}
KAFKA_ROLE_SECRETS = {*KAFKA_SECRET.values(), "hl7-kafka-replay"}


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
    monitoring = yaml.safe_load((K8S / "monitoring" / "kustomization.yaml").read_text())
    for path in (K8S / "monitoring").glob("*.y*ml"):
        assert path.name in set(monitoring["resources"]) | {"kustomization.yaml"}, path.name
    assert not [name for name in listed if "/" in name], "the operator objects stay out of the base"


def test_manifests_pass_strict_kubernetes_schema_validation(k8s_objects: list[dict[str, Any]]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    examples = [doc for path in K8S.glob("*.example.yaml") for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert not [o for o in k8s_objects if o["kind"] in OPERATOR_KINDS], "CRD kinds belong in deploy/k8s/monitoring"
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


needs_kustomize = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not on PATH")


@needs_kustomize
def test_kustomize_renders_every_object_into_the_namespace(
    k8s_objects: list[dict[str, Any]], k8s_files: list[dict[str, Any]], monitoring_objects: list[dict[str, Any]]
) -> None:
    assert sorted(_ids(k8s_objects)) == sorted(_ids(k8s_files))
    for obj in [*k8s_objects, *monitoring_objects]:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "hl7-gateway", obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "hl7-gateway"
    images = {c["image"] for obj in k8s_objects if obj["kind"] in WORKLOAD_KINDS for c in _pod(obj)["containers"]}
    assert len(images) == 1 and images.pop().endswith(":0.1.0")


@needs_kustomize
def test_pod_templates_carry_the_part_of_label_but_selectors_do_not(k8s_objects: list[dict[str, Any]]) -> None:
    # Pods themselves are labelled (PodMonitors, kubectl -l, cost reports select pods), while
    # selectors stay untouched: they are immutable on Deployments and StatefulSets.
    for workload in _workloads(k8s_objects):
        assert _pod_labels(workload)["app.kubernetes.io/part-of"] == "hl7-gateway", workload["metadata"]["name"]
        selector = workload["spec"].get("selector", {}).get("matchLabels", {})
        assert "app.kubernetes.io/part-of" not in selector, workload["metadata"]["name"]
    for obj in k8s_objects:
        if obj["kind"] in {"Service", "PodDisruptionBudget"}:
            selector = obj["spec"]["selector"]
            assert "app.kubernetes.io/part-of" not in selector.get("matchLabels", selector)


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


def test_kafka_secret_example_has_one_placeholder_secret_per_role() -> None:
    text = (K8S / "kafka-secrets.example.yaml").read_text(encoding="utf-8")
    assert "kubectl -n hl7-gateway create secret generic" in text
    secrets = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(text) if doc}
    assert set(secrets) == KAFKA_ROLE_SECRETS
    for name, secret in secrets.items():
        data = secret["stringData"]
        assert set(data) == {"HL7_KAFKA_SASL_USERNAME", "HL7_KAFKA_SASL_PASSWORD"}, name
        assert data["HL7_KAFKA_SASL_USERNAME"] == name.replace("hl7-kafka-", "hl7-"), "principal named after the role"
        assert data["HL7_KAFKA_SASL_PASSWORD"] == "PLACEHOLDER", name


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
    probed = set()
    for workload in k8s_objects:
        if workload["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        (container,) = _pod(workload)["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert container["startupProbe"]["httpGet"]["path"] == "/livez"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            port = container[probe]["httpGet"]["port"]
            assert ports[port] == expected_port[workload["metadata"]["name"]], probe
        probed.add(workload["metadata"]["name"])
    assert probed == {"hl7-edge", "hl7-processor"}


def test_edge_readiness_does_not_wait_for_kafka(k8s_objects: list[dict[str, Any]]) -> None:
    """SPEC section 4: the edge's /readyz is "registry loaded", never Kafka (covered by
    tests/integration/edge/test_edge_kafka_outage.py), so during a broker outage the edges stay
    behind the Service and answer 503 + AE themselves. The processor's /readyz includes Kafka."""
    edge = _one("Deployment", "hl7-edge", k8s_objects)
    (container,) = _pod(edge)["containers"]
    readiness = container["readinessProbe"]
    assert readiness["httpGet"] == {"path": "/readyz", "port": "http"}
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= 30, "an unready edge leaves the Service fast"
    manifest = (K8S / "edge-deployment.yaml").read_text(encoding="utf-8")
    assert "NOT Kafka" in manifest, "the probe's comment says what readiness means"
    processor = _one("StatefulSet", "hl7-processor", k8s_objects)
    assert _pod(processor)["containers"][0]["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


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


def _secret_references(workload: dict[str, Any]) -> set[str]:
    """Every Secret a workload's pods can read: envFrom, env valueFrom, volumes (incl. projected)."""
    pod = _pod(workload)
    names = set()
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        names |= {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
        names |= {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            names.add(volume["secret"]["secretName"])
        for source in volume.get("projected", {}).get("sources", []):
            if "secret" in source:
                names.add(source["secret"]["name"])
    return names


def test_kafka_credentials_come_from_one_secret_per_role(k8s_objects: list[dict[str, Any]]) -> None:
    config = _config(k8s_objects)
    assert config["HL7_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert not {"HL7_KAFKA_SASL_USERNAME", "HL7_KAFKA_SASL_PASSWORD"} & set(config)
    for workload in _workloads(k8s_objects):
        name = workload["metadata"]["name"]
        refs = [e["secretRef"] for e in _pod(workload)["containers"][0]["envFrom"] if "secretRef" in e]
        # Optional, so a cluster without SASL applies the manifests without creating Secrets.
        assert refs == [{"name": KAFKA_SECRET[name], "optional": True}], name
        # Never another role's credentials, by any route.
        assert _secret_references(workload) & KAFKA_ROLE_SECRETS == {KAFKA_SECRET[name]}, name
    edge = _one("Deployment", "hl7-edge", k8s_objects)
    assert _secret_references(edge) == {"hl7-kafka-edge", "hl7-registry", "hl7-mllp-tls", "hl7-mllp-client-ca"}, (
        "the internet-facing pod holds least: its Kafka role, the registry, its own MLLP certificate")


def test_edge_trusts_forwarded_for_from_the_pod_network_only(k8s_objects: list[dict[str, Any]]) -> None:
    config = _config(k8s_objects)
    trusted = [ipaddress.ip_network(p.strip()) for p in config["HL7_TRUSTED_PROXIES"].split(",")]
    assert trusted, "behind the ingress, X-Forwarded-For is the only way to see the client"
    assert all(n.is_private and n.prefixlen >= 8 for n in trusted), "never a public range or 0.0.0.0/0"
    assert config["HL7_EDGE_PUBLIC_URL"].startswith("https://")


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


def _policies_for(app: str, kind: str, k8s_objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """NetworkPolicies of type ``kind`` (Ingress/Egress) whose podSelector selects pods labelled ``app``."""

    def selects(selector: dict[str, Any]) -> bool:
        if not selector:
            return True
        labels = {"app.kubernetes.io/name": app}
        if not _selects(selector.get("matchLabels", {}), labels):
            return False
        for expression in selector.get("matchExpressions", []):
            assert expression["operator"] == "In", "only In is understood here"
            if labels.get(expression["key"]) not in expression["values"]:
                return False
        return True

    return [
        p for p in _objects("NetworkPolicy", k8s_objects)
        if kind in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"])
    ]


def _ingress_rules(app: str, k8s_objects: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(source namespace, port) pairs opened towards ``app``'s pods; every rule names both."""
    opened = []
    for policy in _policies_for(app, "Ingress", k8s_objects):
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from") and rule.get("ports"), f"{policy['metadata']['name']}: open to anyone"
            if policy["metadata"]["name"] == "hl7-edge-mllp-ingress":
                continue  # MLLP from the internet: test_mllp_port_is_open_to_partners_through_tcp_passthrough
            for peer in rule["from"]:
                assert set(peer) == {"namespaceSelector"}, "whole namespaces, matched by their name label"
                namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                opened += [(namespace, port["port"]) for port in rule["ports"]]
    return opened


def _egress_ports(app: str, k8s_objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        port
        for p in _policies_for(app, "Egress", k8s_objects)
        for rule in p["spec"].get("egress", [])
        for port in rule["ports"]
    ]


def _covers(ports: list[dict[str, Any]], number: int, protocol: str = "TCP") -> bool:
    return any(p["protocol"] == protocol and p["port"] <= number <= p.get("endPort", p["port"]) for p in ports)


def test_network_policy_denies_by_default(k8s_objects: list[dict[str, Any]]) -> None:
    policies = _objects("NetworkPolicy", k8s_objects)
    deny_all = [p["spec"] for p in policies if p["spec"]["podSelector"] == {}]
    assert any(set(spec["policyTypes"]) == {"Ingress", "Egress"} for spec in deny_all)
    assert all(not spec.get("ingress") and not spec.get("egress") for spec in deny_all), "namespace-wide: deny only"


def test_edge_is_reachable_from_the_ingress_and_monitoring_namespaces_only(k8s_objects: list[dict[str, Any]]) -> None:
    port = int(_config(k8s_objects)["HL7_EDGE_PORT"])
    assert sorted(_ingress_rules("hl7-edge", k8s_objects)) == sorted(
        [(INGRESS_NAMESPACE, port), (MONITORING_NAMESPACE, port)]
    )


def test_mllp_port_is_open_to_partners_through_tcp_passthrough(k8s_objects: list[dict[str, Any]]) -> None:
    """SPEC 4a: the edge must see the client certificate, so MLLP reaches it as plain TCP (an L4
    LoadBalancer keeping client addresses, no Ingress, no TLS termination in between)."""
    config = _config(k8s_objects)
    port = int(config["HL7_MLLP_PORT"])
    assert not config.get("HL7_MLLP_PLAINTEXT")
    assert {"HL7_MLLP_TLS_CERTFILE", "HL7_MLLP_TLS_KEYFILE", "HL7_MLLP_CLIENT_CA_FILE"} <= set(config)
    service = _one("Service", "hl7-edge-mllp", k8s_objects)["spec"]
    assert service["type"] == "LoadBalancer" and service["externalTrafficPolicy"] == "Local"
    assert [(p["port"], p["protocol"]) for p in service["ports"]] == [(port, "TCP")]
    edge = _pod(_one("Deployment", "hl7-edge", k8s_objects))["containers"][0]
    assert {"name": "mllp", "containerPort": port, "protocol": "TCP"} in edge["ports"]
    [policy] = [p for p in _policies_for("hl7-edge", "Ingress", k8s_objects)
                if p["metadata"]["name"] == "hl7-edge-mllp-ingress"]
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": port}], "the internet reaches the MLLP port only"
    assert {peer["ipBlock"]["cidr"] for peer in rule["from"]} == {"0.0.0.0/0", "::/0"}
    mounted = {m["mountPath"]: m for m in edge["volumeMounts"]}
    for setting in ("HL7_MLLP_TLS_CERTFILE", "HL7_MLLP_TLS_KEYFILE", "HL7_MLLP_CLIENT_CA_FILE"):
        directory = str(Path(config[setting]).parent)
        assert directory in mounted and mounted[directory].get("readOnly"), setting
        assert "subPath" not in mounted[directory], "a subPath mount never sees a renewed certificate"


def test_processor_metrics_are_reachable_from_the_monitoring_namespace_only(k8s_objects: list[dict[str, Any]]) -> None:
    port = int(_config(k8s_objects)["HL7_METRICS_PORT"])
    assert _ingress_rules("hl7-processor", k8s_objects) == [(MONITORING_NAMESPACE, port)]
    assert _ingress_rules("hl7-topics", k8s_objects) == [], "the topics Job serves nothing"


def test_egress_opens_dns_kafka_and_the_schema_registry_where_needed(k8s_objects: list[dict[str, Any]]) -> None:
    config = _config(k8s_objects)
    bootstrap_port = int(config["HL7_KAFKA_BOOTSTRAP_SERVERS"].split(",")[0].rsplit(":", 1)[1])
    for app in ("hl7-edge", "hl7-processor", "hl7-topics", "hl7-replay"):
        ports = _egress_ports(app, k8s_objects)
        assert _covers(ports, 53, "UDP") and _covers(ports, 53, "TCP"), f"{app}: DNS"
        assert _covers(ports, bootstrap_port), f"{app}: the configured Kafka port"
        for kafka_port in range(9092, 9099):  # Apache/Strimzi/Confluent/MSK client listeners
            assert _covers(ports, kafka_port), f"{app}: Kafka {kafka_port}"
    processor = _egress_ports("hl7-processor", k8s_objects)
    assert _covers(processor, 8081) and _covers(processor, 443), "schema registry, in-cluster or over HTTPS"
    for app in ("hl7-edge", "hl7-topics"):
        assert not _covers(_egress_ports(app, k8s_objects), 443), f"{app} talks to Kafka only"


def test_replay_example_job_runs_under_the_replay_principal(kustomization: dict[str, Any]) -> None:
    from processor.cli import build_parser

    (job,) = [d for d in yaml.safe_load_all((K8S / "replay-job.example.yaml").read_text()) if d]
    assert job["metadata"]["generateName"] and "name" not in job["metadata"], "kubectl create: a new Job per run"
    (container,) = _pod(job)["containers"]
    assert build_parser().parse_args(container["args"]).handler == "processor.commands.replay:main"
    assert "--execute" not in container["args"], "the example is a dry run"
    assert _secret_references(job) == {"hl7-kafka-replay", "hl7-registry"}
    (image,) = kustomization["images"]
    assert container["image"] == f"{image['newName']}:{image['newTag']}", "the image the base deploys"
    assert _pod_labels(job)["app.kubernetes.io/name"] == "hl7-replay", "selected by the egress policy"


# ---------------------------------------------------------------- ingress


def test_ingress_routes_only_the_intake_endpoints(k8s_objects: list[dict[str, Any]]) -> None:
    (ingress,) = _objects("Ingress", k8s_objects)
    (rule,) = ingress["spec"]["rules"]
    paths = {p["path"]: p for p in rule["http"]["paths"]}
    assert set(paths) == {"/hl7", "/soap"}, "/metrics, /livez and /readyz are never public"
    for path in paths.values():
        assert path["pathType"] == "Exact"
        assert path["backend"]["service"] == {"name": "hl7-edge", "port": {"name": "http"}}
    edge_service = _one("Service", "hl7-edge", k8s_objects)
    assert "http" in {p["name"] for p in edge_service["spec"]["ports"]}
    assert ingress["spec"]["ingressClassName"] == "nginx"


def test_ingress_host_is_the_public_url_and_serves_tls(k8s_objects: list[dict[str, Any]]) -> None:
    from urllib.parse import urlsplit

    (ingress,) = _objects("Ingress", k8s_objects)
    public = urlsplit(_config(k8s_objects)["HL7_EDGE_PUBLIC_URL"])
    (rule,) = ingress["spec"]["rules"]
    assert public.scheme == "https" and rule["host"] == public.hostname
    assert any(public.hostname in tls["hosts"] for tls in ingress["spec"]["tls"])


def test_ingress_takes_bodies_up_to_the_edge_limit(k8s_objects: list[dict[str, Any]]) -> None:
    # ingress-nginx refuses bodies over 1m by default with its own 413 (no SOAP Fault, no ACK).
    (ingress,) = _objects("Ingress", k8s_objects)
    size = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    limit = int(size[:-1]) * units[size[-1].lower()] if size[-1].isalpha() else int(size)
    assert limit > int(_config(k8s_objects)["HL7_MAX_BODY_BYTES"])


# ---------------------------------------------------------------- topics Job


def test_topics_job_can_be_applied_again(k8s_objects: list[dict[str, Any]]) -> None:
    # kubectl apply cannot create from generateName, and a Job's template is immutable: the
    # fixed-name Job removes itself after finishing so the next apply re-creates it
    # (docs/operations.md, "The topics Job"); `topics create` is idempotent.
    job = _one("Job", "hl7-topics-create", k8s_objects)
    assert "generateName" not in job["metadata"]
    assert 0 < job["spec"]["ttlSecondsAfterFinished"] <= 3600
    assert _pod(job)["containers"][0]["args"] == ["topics", "create"]
    assert "The topics Job" in (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------- Prometheus Operator


def test_service_monitors_scrape_each_role_under_the_job_the_alerts_expect(
    k8s_objects: list[dict[str, Any]], monitoring_objects: list[dict[str, Any]]
) -> None:
    alerts = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text(encoding="utf-8")
    monitors = [o for o in monitoring_objects if o["kind"] == "ServiceMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {"hl7-edge", "hl7-processor"}
    config = _config(k8s_objects)
    expected_port = {"hl7-edge": int(config["HL7_EDGE_PORT"]), "hl7-processor": int(config["HL7_METRICS_PORT"])}
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert "jobLabel" not in monitor["spec"], "job = the Service's name"
        selector = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [s for s in _objects("Service", k8s_objects) if _selects(selector, s["metadata"]["labels"])]
        assert f'job="{service["metadata"]["name"]}"' in alerts
        ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        assert ports[endpoint["port"]] == expected_port[service["metadata"]["name"]]


def test_prometheus_rule_is_applied_with_the_monitoring_objects(monitoring_objects: list[dict[str, Any]]) -> None:
    (rule,) = [o for o in monitoring_objects if o["kind"] == "PrometheusRule"]
    generated = yaml.safe_load((K8S / "monitoring" / "prometheusrule.yaml").read_text(encoding="utf-8"))
    assert rule["spec"] == generated["spec"], "kustomize must not alter the rules"
