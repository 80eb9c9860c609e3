"""docker-compose.yml: the local stack is wired to things that exist and settings the app reads.

No Docker engine here, so nothing is started: these checks cover what `docker compose
config` and a first `up` would otherwise reveal (missing mount sources, wrong ports,
typos in setting names, commands the CLI does not have, broken start order).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
MIB = 1024 * 1024
EXPECTED_SERVICES = {"kafka", "topics", "edge", "processor-1", "processor-2", "replay", "prometheus", "grafana"}
ONE_SHOT = {"topics", "replay"}  # run to completion: no healthcheck, no restart loop
APP_UID = "10001"
# The Kafka principal (and so the env file) of each gateway service: one per role.
KAFKA_ROLE = {
    "edge": "edge",
    "processor-1": "processor",
    "processor-2": "processor",
    "topics": "admin",
    "replay": "replay",
}


def _handler(command: list[str]) -> str:
    from processor.cli import build_parser

    return build_parser().parse_args(command).handler


def test_stack_has_the_expected_services(services: dict[str, Any]) -> None:
    assert set(services) == EXPECTED_SERVICES


def test_gateway_services_run_real_cli_commands(gateway: Mapping[str, Mapping[str, Any]]) -> None:
    handlers = {name: _handler(list(svc["command"])) for name, svc in gateway.items()}
    assert handlers == {
        "topics": "processor.commands.topics:create",
        "edge": "processor.commands.edge:main",
        "processor-1": "processor.commands.stream:main",
        "processor-2": "processor.commands.stream:main",
        "replay": "processor.commands.replay:main",
    }


def test_gateway_image_is_built_from_the_repo_dockerfile(gateway: Mapping[str, Mapping[str, Any]]) -> None:
    for name, svc in gateway.items():
        build = svc["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name


def test_every_gateway_setting_is_one_the_app_reads(
    gateway: Mapping[str, Mapping[str, Any]],
    env_of: Callable[[Mapping[str, Any]], dict[str, str]],
    known_setting: Callable[[str], bool],
) -> None:
    unknown = {
        f"{name}: {var}" for name, svc in gateway.items() for var in env_of(svc) if not known_setting(var)
    }
    assert not unknown


def test_processors_have_distinct_fixed_transactional_ids(
    gateway: Mapping[str, Mapping[str, Any]], env_of: Callable[[Mapping[str, Any]], dict[str, str]]
) -> None:
    ids = [env_of(svc).get("HL7_TRANSACTIONAL_ID", "") for svc in gateway.values() if svc["command"] == ["stream"]]
    assert len(ids) == 2
    assert all(ids) and "$" not in "".join(ids)
    assert len(set(ids)) == len(ids)


def test_processors_fit_in_the_raw_partitions(
    gateway: Mapping[str, Mapping[str, Any]], env_of: Callable[[Mapping[str, Any]], dict[str, str]]
) -> None:
    processors = [svc for svc in gateway.values() if svc["command"] == ["stream"]]
    partitions = int(env_of(gateway["topics"])["HL7_TOPIC_PARTITIONS"])
    assert len(processors) <= partitions


def test_gateway_reaches_kafka_on_an_advertised_listener(
    services: dict[str, Any],
    gateway: Mapping[str, Mapping[str, Any]],
    env_of: Callable[[Mapping[str, Any]], dict[str, str]],
) -> None:
    kafka = env_of(services["kafka"])
    advertised = {entry.split("://", 1)[1] for entry in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for name, svc in gateway.items():
        bootstrap = env_of(svc)["HL7_KAFKA_BOOTSTRAP_SERVERS"]
        assert bootstrap in advertised, name
        assert bootstrap.split(":")[0] in {"kafka", services["kafka"].get("hostname")}


def test_kafka_is_a_single_kraft_node_sized_for_transactions_and_big_documents(
    services: dict[str, Any], env_of: Callable[[Mapping[str, Any]], dict[str, str]]
) -> None:
    from processor.config import Settings
    from processor.kafka.client_config import message_max_bytes

    kafka = services["kafka"]
    env = env_of(kafka)
    assert kafka["image"] == "apache/kafka:4.1.1"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
    ):
        assert env[key] == "1", key
    # The broker must take the biggest record the app produces (body limit + overhead).
    body_limit = int(env_of(services["edge"]).get("HL7_MAX_BODY_BYTES", Settings().max_body_bytes))
    assert int(env["KAFKA_MESSAGE_MAX_BYTES"]) >= max(16 * MIB, message_max_bytes(Settings(max_body_bytes=body_limit)))
    assert int(env["KAFKA_REPLICA_FETCH_MAX_BYTES"]) >= int(env["KAFKA_MESSAGE_MAX_BYTES"])
    # Voter and listeners agree: node 1 at the controller listener's port.
    voter_id, voter_address = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")
    assert voter_id == env["KAFKA_NODE_ID"]
    listeners = dict(entry.split("://", 1) for entry in env["KAFKA_LISTENERS"].split(","))
    assert voter_address.split(":")[1] == listeners[env["KAFKA_CONTROLLER_LISTENER_NAMES"]].split(":")[1]
    protocol_map = dict(entry.split(":") for entry in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) == set(protocol_map)


def test_kafka_cluster_id_is_a_valid_kraft_uuid(
    services: dict[str, Any], env_of: Callable[[Mapping[str, Any]], dict[str, str]]
) -> None:
    cluster_id = env_of(services["kafka"])["CLUSTER_ID"]
    try:
        raw = base64.urlsafe_b64decode(cluster_id + "==")
    except (binascii.Error, ValueError):
        pytest.fail(f"CLUSTER_ID {cluster_id!r} is not base64url")
    assert len(cluster_id) == 22 and len(raw) == 16


def test_bind_mount_sources_exist(
    services: dict[str, Any], binds_of: Callable[[Mapping[str, Any]], list[tuple[str, str, bool]]]
) -> None:
    missing = [
        f"{name}: {source}"
        for name, svc in services.items()
        for source, _target, _ro in binds_of(svc)
        if not (ROOT / source).exists()
    ]
    assert not missing


def test_config_mounts_are_read_only(
    services: dict[str, Any], binds_of: Callable[[Mapping[str, Any]], list[tuple[str, str, bool]]]
) -> None:
    writable = [f"{name}: {target}" for name, svc in services.items() for _s, target, ro in binds_of(svc) if not ro]
    assert not writable


def test_registry_is_mounted_where_the_app_looks(
    gateway: Mapping[str, Mapping[str, Any]],
    env_of: Callable[[Mapping[str, Any]], dict[str, str]],
    binds_of: Callable[[Mapping[str, Any]], list[tuple[str, str, bool]]],
) -> None:
    for name, svc in gateway.items():
        if name == "topics":
            continue  # creates topics only; never reads the registry
        targets = {target: source for source, target, _ro in binds_of(svc)}
        registry_file = PurePosixPath(env_of(svc)["HL7_REGISTRY_FILE"])
        # The directory is mounted (so a rename-replaced file is seen), holding the file.
        assert targets.get(str(registry_file.parent)) == "./deploy/registry", name
        assert (ROOT / "deploy" / "registry" / registry_file.name).is_file()


def test_demo_registry_is_valid_and_matches_the_apps_demo_registry() -> None:
    from processor.registry.loader import parse_registry

    data = (ROOT / "deploy" / "registry" / "registry.yaml").read_bytes()
    registry = parse_registry(data)
    partner = registry.principal_by_username("partner_mailco")
    assert partner is not None and partner.active
    assert registry.customer_by_alias("trustalias") is not None
    demo = ROOT / "processor" / "demo_registry.yaml"
    assert yaml.safe_load(data) == yaml.safe_load(demo.read_bytes())


def test_edge_listens_on_all_container_interfaces_and_is_published_on_loopback(
    services: dict[str, Any], env_of: Callable[[Mapping[str, Any]], dict[str, str]], port_of: Callable[..., int]
) -> None:
    edge = services["edge"]
    assert env_of(edge)["HL7_EDGE_HOST"] == "0.0.0.0"
    assert f"127.0.0.1:{port_of(edge)}:{port_of(edge)}" in edge["ports"]


def test_published_ports_listen_on_loopback_only(services: dict[str, Any]) -> None:
    exposed = [
        f"{name}: {port}"
        for name, svc in services.items()
        for port in svc.get("ports") or []
        if not str(port).startswith("127.0.0.1:")
    ]
    assert not exposed


def test_start_order_waits_for_kafka_then_topics(services: dict[str, Any]) -> None:
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("edge", "processor-1", "processor-2"):
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    for name, svc in services.items():
        for dependency, spec in (svc.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if spec.get("condition") == "service_healthy":
                assert "test" in services[dependency].get("healthcheck", {}), dependency


def test_long_running_services_have_healthchecks(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        check = svc.get("healthcheck") or {}
        if name in ONE_SHOT:
            assert check.get("disable") is True
            continue
        assert check.get("test"), name
        assert svc.get("restart") == "unless-stopped", name


def test_gateway_healthchecks_ask_for_readiness_via_the_image_probe(gateway: Mapping[str, Mapping[str, Any]]) -> None:
    for name, svc in gateway.items():
        if name not in ONE_SHOT:
            assert svc["healthcheck"]["test"] == ["CMD", "hl7-healthcheck", "/readyz"], name


def test_gateway_containers_are_non_root_and_hardened(gateway: Mapping[str, Mapping[str, Any]]) -> None:
    for name, svc in gateway.items():
        assert str(svc["user"]).split(":")[0] == APP_UID, name
        assert svc["read_only"] is True, name
        assert svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name
        assert "/tmp" in svc["tmpfs"], name


def test_third_party_containers_do_not_run_as_root(services: dict[str, Any]) -> None:
    # apache/kafka runs as appuser, prom/prometheus as nobody, grafana as 472 (image USER);
    # nothing here may override that with root.
    for name in ("kafka", "prometheus", "grafana"):
        assert str(services[name].get("user", "")).split(":")[0] not in {"0", "root"}, name
    for name in ("prometheus", "grafana"):
        assert services[name]["cap_drop"] == ["ALL"], name


def test_processors_get_time_to_finish_their_transaction(gateway: Mapping[str, Mapping[str, Any]]) -> None:
    from processor.config import Settings

    for svc in gateway.values():
        if svc["command"] == ["stream"]:
            grace = int(str(svc["stop_grace_period"]).rstrip("s"))
            assert grace * 1000 >= Settings().transaction_timeout_ms


def test_grafana_home_dashboard_is_a_mounted_file(
    services: dict[str, Any],
    env_of: Callable[[Mapping[str, Any]], dict[str, str]],
    binds_of: Callable[[Mapping[str, Any]], list[tuple[str, str, bool]]],
) -> None:
    grafana = services["grafana"]
    home = env_of(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    for source, target, _ro in binds_of(grafana):
        if home.startswith(target.rstrip("/") + "/"):
            assert (ROOT / source / home[len(target):].lstrip("/")).is_file()
            return
    pytest.fail(f"{home} is not inside a bind mount")


def test_no_secret_values_in_compose(services: dict[str, Any], env_of: Callable[[Mapping[str, Any]], dict[str, str]]) -> None:
    for name, svc in services.items():
        for var, value in env_of(svc).items():
            if any(word in var for word in ("PASSWORD", "SECRET", "TOKEN")):
                # only references to the operator's environment, never literal secrets
                assert value.startswith("${"), f"{name}: {var}"


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    # Strict validator (PyPI `compose-spec`, in the test extra; bindings of the Rust
    # compose_spec crate): rejects unknown keys, bad durations and unknown depends_on
    # conditions. It does not resolve YAML merge keys itself, so it gets the merged
    # document; x- extensions dropped.
    import compose_spec
    merged = {key: value for key, value in compose.items() if not key.startswith("x-")}
    parsed = compose_spec.PyCompose.from_yaml(yaml.safe_dump(merged, sort_keys=False))
    assert set(parsed.service_names()) == EXPECTED_SERVICES


# ---------------------------------------------------------------- least privilege and proxies


def _env_files(service: Mapping[str, Any]) -> list[dict[str, Any]]:
    files = service.get("env_file") or []
    return [{"path": f, "required": True} if isinstance(f, str) else f for f in files]


def test_each_gateway_service_loads_only_its_own_roles_kafka_credentials(
    gateway: Mapping[str, Mapping[str, Any]],
) -> None:
    assert set(gateway) == set(KAFKA_ROLE)
    for name, svc in gateway.items():
        files = _env_files(svc)
        assert [f["path"] for f in files] == [f"./deploy/secrets/kafka-{KAFKA_ROLE[name]}.env"], name
        # Optional: the demo broker is PLAINTEXT, and a fresh clone has no credentials.
        assert all(f["required"] is False for f in files), name


def test_kafka_credential_files_are_examples_only_and_ignored() -> None:
    secrets = ROOT / "deploy" / "secrets"
    assert "*.env" in (secrets / ".gitignore").read_text(encoding="utf-8").split()
    for role in set(KAFKA_ROLE.values()):
        example = (secrets / f"kafka-{role}.env.example").read_text(encoding="utf-8")
        settings = dict(
            line.split("=", 1) for line in example.splitlines() if line.strip() and not line.startswith("#")
        )
        assert settings == {"HL7_KAFKA_SASL_USERNAME": f"hl7-{role}", "HL7_KAFKA_SASL_PASSWORD": ""}, role
    dockerignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert "**/*.env" in dockerignore, "credentials never reach the image build context"


def test_replay_is_a_tool_not_started_by_up(services: dict[str, Any]) -> None:
    replay = services["replay"]
    assert replay["profiles"] == ["tools"]
    assert replay["command"][:2] == ["deadletter", "replay"] and "--execute" not in replay["command"]
    assert replay["restart"] == "no"


def test_edge_trusts_forwarded_for_only_from_the_proxy_network(
    compose: dict[str, Any], services: dict[str, Any], env_of: Callable[[Mapping[str, Any]], dict[str, str]]
) -> None:
    import ipaddress

    edge = services["edge"]
    assert {"default", "proxy"} <= set(edge["networks"]), "Kafka and Prometheus are on the default network"
    (pool,) = compose["networks"]["proxy"]["ipam"]["config"]
    subnet = ipaddress.ip_network(pool["subnet"])
    containers = ipaddress.ip_network(pool["ip_range"])
    gateway = ipaddress.ip_address(pool["gateway"])
    trusted = [ipaddress.ip_network(p.strip()) for p in env_of(edge)["HL7_TRUSTED_PROXIES"].split(",")]
    assert trusted == [containers] and containers.subnet_of(subnet)
    # Published ports reach the container from a bridge gateway: never a trusted address.
    assert gateway in subnet and gateway not in containers
    others = [name for name, svc in services.items() if name != "edge" and "proxy" in (svc.get("networks") or [])]
    assert not others, "only the edge (and a reverse proxy you add) may join the proxy network"


def test_wsdl_address_is_configured(
    services: dict[str, Any], env_of: Callable[[Mapping[str, Any]], dict[str, str]]
) -> None:
    public = env_of(services["edge"])["HL7_EDGE_PUBLIC_URL"]
    assert public.startswith(("http://", "https://")) and not public.endswith("/")
