"""Least-privilege ACLs per role: the exact bindings, from Settings, and the ``acls`` command."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from processor.cli import main
from processor.config import Settings
from processor.errors import ConfigError
from processor.kafka import acls as acls_mod
from processor.kafka.acls import (
    Principals,
    kafka_acls_commands,
    ledger_topic,
    notes,
    replay_transactional_id,
    role_acls,
    role_bindings,
)
from processor.kafka.broker_config import broker_properties
from processor.kafka.local_broker import LocalKafka

T, G, X, C = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID, ResourceType.BROKER
LIT, PRE = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
R, W, D, CR = AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE, AclOperation.CREATE
AC, DC, AL = AclOperation.ALTER_CONFIGS, AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER


def _settings(**overrides: object) -> Settings:
    base: dict[str, object] = {"transactional_id": "hl7-processor-host1"}
    base.update(overrides)
    return Settings(_env_file=None, **base)  # type: ignore[arg-type]


def _set(bindings: list[AclBinding]) -> set[tuple[object, ...]]:
    return {(b.restype, b.name, b.resource_pattern_type, b.operation) for b in bindings}


def _by_role(settings: Settings, principals: object = None, prefix: str | None = None) -> dict[str, list[AclBinding]]:
    out: dict[str, list[AclBinding]] = {}
    for row in role_bindings(settings, principals, transactional_id_prefix=prefix):  # type: ignore[arg-type]
        out.setdefault(row.role, []).append(row.binding)
    return out


def test_exact_bindings_per_role_with_default_names() -> None:
    roles = _by_role(_settings())
    assert _set(roles["edge"]) == {(T, "hl7.raw", LIT, W), (T, "hl7.raw", LIT, D)}
    assert _set(roles["processor"]) == {
        (T, "hl7.raw", LIT, R), (T, "hl7.raw", LIT, D),
        (G, "hl7-processor", LIT, R),
        (T, "hl7.accepted", LIT, W), (T, "hl7.accepted", LIT, D),
        (T, "hl7.deadletter", LIT, W), (T, "hl7.deadletter", LIT, D),
        (T, "hl7.raw.dedupe", LIT, R), (T, "hl7.raw.dedupe", LIT, W), (T, "hl7.raw.dedupe", LIT, D),
        (X, "hl7-processor-", PRE, W), (X, "hl7-processor-", PRE, D),
    }
    assert _set(roles["replay"]) == {
        (T, "hl7.deadletter", LIT, R), (T, "hl7.deadletter", LIT, D),
        (T, "hl7.deadletter.replayed", LIT, R), (T, "hl7.deadletter.replayed", LIT, W),
        (T, "hl7.deadletter.replayed", LIT, D), (T, "hl7.deadletter.replayed", LIT, CR),
        (T, "hl7.raw", LIT, W), (T, "hl7.raw", LIT, D),
        (X, "hl7-processor-deadletter-replay", LIT, W), (X, "hl7-processor-deadletter-replay", LIT, D),
        (G, "hl7-reader-", PRE, D),
    }
    topics = ("hl7.raw", "hl7.accepted", "hl7.deadletter", "hl7.deadletter.replayed", "hl7.raw.dedupe")
    assert _set(roles["admin"]) == {
        (T, name, LIT, op) for name in topics for op in (CR, D, AC, DC)
    } | {(C, "kafka-cluster", LIT, AL), (C, "kafka-cluster", LIT, D)}
    assert list(roles) == ["edge", "processor", "replay", "admin"]


def test_default_principals_one_per_role() -> None:
    roles = _by_role(_settings())
    assert {b.principal for b in roles["edge"]} == {"User:hl7-edge"}
    assert {b.principal for b in roles["processor"]} == {"User:hl7-processor"}
    assert {b.principal for b in roles["replay"]} == {"User:hl7-replay"}
    assert {b.principal for b in roles["admin"]} == {"User:hl7-admin"}


def test_allow_only_any_host_no_duplicates() -> None:
    bindings = role_acls(_settings())
    assert all(b.permission_type == AclPermissionType.ALLOW for b in bindings)
    assert all(b.host == "*" for b in bindings)
    keys = [(b.restype, b.name, b.resource_pattern_type, b.principal, b.operation) for b in bindings]
    assert len(keys) == len(set(keys))
    assert not any(b.operation == AclOperation.ALL for b in bindings)


def test_edge_has_nothing_on_outputs_and_never_reads() -> None:
    edge = _by_role(_settings())["edge"]
    assert not [b for b in edge if b.name in ("hl7.accepted", "hl7.deadletter")]
    assert not [b for b in edge if b.operation == AclOperation.READ]
    assert not [b for b in edge if b.restype != ResourceType.TOPIC]  # no group, txn id or cluster


def test_only_admin_touches_the_cluster_and_nobody_has_idempotent_write() -> None:
    by_role = _by_role(_settings())
    for role, bindings in by_role.items():
        on_cluster = [b for b in bindings if b.restype == ResourceType.BROKER]
        assert bool(on_cluster) == (role == "admin"), role
        assert not [b for b in bindings if b.operation == AclOperation.IDEMPOTENT_WRITE]


def test_renamed_topics_group_and_custom_principals_follow_settings() -> None:
    settings = _settings(topic_raw="in", topic_accepted="ok", topic_deadletter="bad",
                         consumer_group="proc", transactional_id="proc-7")
    by_role = _by_role(settings, {"edge": "User:gw-edge", "processor": None}, prefix="proc-")
    names = {b.name for bindings in by_role.values() for b in bindings}
    assert not [n for n in names if n.startswith("hl7.")]
    assert {b.principal for b in by_role["edge"]} == {"User:gw-edge"}
    assert {b.principal for b in by_role["processor"]} == {"User:hl7-processor"}
    assert (G, "proc", LIT, R) in _set(by_role["processor"])
    assert (T, "bad.replayed", LIT, CR) in _set(by_role["replay"])
    assert (X, "proc-deadletter-replay", LIT, W) in _set(by_role["replay"])
    assert (X, "proc-", PRE, W) in _set(by_role["processor"])
    # HL7_TRANSACTIONAL_ID=proc-7 is not under the default prefix: say so, unless given one.
    with pytest.raises(ConfigError, match="--transactional-id-prefix"):
        role_acls(settings)


def test_empty_prefix_and_malformed_principal_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        role_acls(_settings(), transactional_id_prefix="")
    with pytest.raises(ConfigError, match="edge principal"):
        Principals(edge="hl7-edge")
    with pytest.raises(ConfigError, match="unknown role"):
        Principals.of({"auditor": "User:x"})


def test_note_when_the_replay_id_falls_under_the_processor_prefix() -> None:
    assert "hl7-processor-deadletter-replay" in notes(_settings())[0]
    assert notes(_settings(transactional_id="p-1"), transactional_id_prefix="p-") == []


# ------------------------------------------------------------ names shared with other code
def test_ledger_topic_is_the_replay_ledger() -> None:
    from processor.deadletter_replay import ledger_topic as replay_ledger

    settings = _settings(topic_deadletter="dl")
    assert ledger_topic(settings) == replay_ledger(settings) == "dl.replayed"


def test_replay_transactional_id_is_the_one_publish_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    import confluent_kafka

    from processor.deadletter_replay import DeadLetterReplayer

    seen: dict[str, object] = {}

    class Stop(Exception):
        pass

    class FakeProducer:
        def __init__(self, conf: dict[str, object]) -> None:
            seen.update(conf)

        def init_transactions(self, _timeout: float) -> None:
            raise Stop

    monkeypatch.setattr(confluent_kafka, "Producer", FakeProducer)
    settings = _settings(kafka_bootstrap_servers="127.0.0.1:1", consumer_group="grp")
    replayer = DeadLetterReplayer.__new__(DeadLetterReplayer)
    replayer._settings = settings  # type: ignore[attr-defined]
    with pytest.raises(Stop):
        replayer.publish([])
    assert seen["transactional.id"] == replay_transactional_id(settings) == "grp-deadletter-replay"


def test_reader_group_prefix_is_the_one_read_to_end_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    from processor.kafka import topic_reader

    seen: dict[str, object] = {}

    class Stop(Exception):
        pass

    class FakeConsumer:
        def __init__(self, conf: dict[str, object]) -> None:
            seen.update(conf)

        def list_topics(self, *_a: object, **_k: object) -> None:
            raise Stop

        def close(self) -> None:
            pass

    monkeypatch.setattr(topic_reader, "Consumer", FakeConsumer)
    with pytest.raises(Stop):
        next(topic_reader.read_to_end({"bootstrap.servers": "x", "group.id": "ignored"}, "t"))
    assert str(seen["group.id"]).startswith(acls_mod.READER_GROUP_PREFIX)


# ------------------------------------------------------------ rendering
def test_kafka_acls_lines_one_per_principal_and_resource() -> None:
    lines = kafka_acls_commands(role_bindings(_settings()))
    assert len(lines) == 18  # +2: the dedupe changelog (processor, admin)
    assert lines[0] == (
        "kafka-acls.sh --bootstrap-server $BOOTSTRAP --command-config admin.properties --add "
        "--allow-principal User:hl7-edge --allow-host '*' --operation Write --operation Describe "
        "--topic hl7.raw"
    )
    prefixed = [line for line in lines if "--transactional-id hl7-processor- " in line + " "]
    assert prefixed and prefixed[0].endswith("--resource-pattern-type prefixed")
    assert any(line.endswith("--operation Alter --operation Describe --cluster") for line in lines)


# ------------------------------------------------------------ the command
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.chdir(str(tmp_path))  # no .env file
    for name in ("HL7_KAFKA_BOOTSTRAP_SERVERS", "HL7_TRANSACTIONAL_ID", "HL7_TOPIC_RAW",
                 "HL7_TOPIC_ACCEPTED", "HL7_TOPIC_DEADLETTER", "HL7_CONSUMER_GROUP"):
        monkeypatch.delenv(name, raising=False)


def test_command_prints_a_table_without_contacting_kafka(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    _clean_env(monkeypatch, tmp_path)
    monkeypatch.setenv("HL7_TOPIC_RAW", "partner.raw")
    assert main(["acls", "--edge-principal", "User:edge-a"]) == 0
    out = capsys.readouterr().out
    assert "User:edge-a" in out and "TOPIC:partner.raw" in out and "hl7.raw" not in out
    assert "TRANSACTIONAL_ID:hl7-processor-*" in out
    assert "dry run" in out


def test_command_prints_kafka_acls_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    _clean_env(monkeypatch, tmp_path)
    assert main(["acls", "--format", "kafka-acls"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("kafka-acls.sh")]
    assert len(lines) == 18


@pytest.mark.parametrize("argv, expected", [
    (["acls", "--apply"], "hl7-processor: HL7_KAFKA_BOOTSTRAP_SERVERS is not set"),
    (["acls", "--admin-principal", "bob"], "hl7-processor: admin principal must look like 'User:name'"),
    (["acls", "--transactional-id-prefix", "other-"], "hl7-processor: HL7_TRANSACTIONAL_ID does not start"),
])
def test_command_config_errors_are_one_line_exit_2(
    argv: list[str], expected: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object,
) -> None:
    _clean_env(monkeypatch, tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(expected)


def test_command_runtime_error_is_one_line_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    from processor.commands import acls as command

    _clean_env(monkeypatch, tmp_path)
    monkeypatch.setenv("HL7_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")

    def refused(*_a: object, **_k: object) -> None:
        raise KafkaException(KafkaError(KafkaError.CLUSTER_AUTHORIZATION_FAILED))

    monkeypatch.setattr(command, "apply_acls", refused)
    assert main(["acls", "--apply"]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("hl7-processor: acls: cannot create the ACLs on Kafka at 127.0.0.1:1: ")
    assert "CLUSTER_AUTHORIZATION_FAILED" in err[0]
    assert captured.out == ""


# ------------------------------------------------------------ the SASL broker's settings
def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_plaintext_broker_properties_unchanged(tmp_path: object) -> None:
    from pathlib import Path

    props = _props(broker_properties(Path(str(tmp_path)), 9092, 9093))
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert not [k for k in props if "sasl" in k or "authorizer" in k or k == "super.users"]


def test_sasl_broker_properties(tmp_path: object) -> None:
    from pathlib import Path

    props = _props(broker_properties(Path(str(tmp_path)), 9092, 9093, admin_password="s3cret"))
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "SASL_PLAINTEXT://127.0.0.1:9092"
    assert props["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["super.users"] == "User:admin"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    jaas = props["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"]
    assert jaas == ('org.apache.kafka.common.security.scram.ScramLoginModule required '
                    'username="admin" password="s3cret";')


@pytest.mark.parametrize("users", [{"bad name": "pw"}, {"ok": "has,comma"}, {"ok": 'quo"te'}, {"ok": ""}])
def test_sasl_users_that_would_break_format_or_jaas_are_refused(users: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        LocalKafka(sasl_users=users)


def test_client_config_per_user() -> None:
    broker = LocalKafka(sasl_users={"hl7-edge": "pw-1"})
    try:
        conf = broker.client_config("hl7-edge")
        assert conf["security.protocol"] == "SASL_PLAINTEXT" and conf["sasl.mechanism"] == "SCRAM-SHA-512"
        assert (conf["sasl.username"], conf["sasl.password"]) == ("hl7-edge", "pw-1")
        assert broker.client_config()["sasl.username"] == "admin"
        assert set(broker.sasl_users) == {"admin", "hl7-edge"}
        with pytest.raises(ConfigError):
            broker.client_config("nobody")
    finally:
        broker.close()
    plain = LocalKafka()
    try:
        assert plain.client_config() == {"bootstrap.servers": plain.bootstrap}
    finally:
        plain.close()
