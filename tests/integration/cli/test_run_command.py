"""``hl7-processor run``: the printed curl line sends the seed message and gets AA;
the message is routed to hl7.accepted; Ctrl-C stops everything with status 0."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from processor.avro.codec import AvroCodec
from processor.config import load_settings
from processor.kafka.local_broker import free_port
from tests import contract
from tests.integration.stream.stream_kit import read_outputs

pytestmark = pytest.mark.kafka


def test_run_prints_a_working_curl_and_routes_the_seed_message(kafka_bootstrap: str, unique_name) -> None:
    topics = {
        "HL7_TOPIC_RAW": unique_name("raw"),
        "HL7_TOPIC_ACCEPTED": unique_name("accepted"),
        "HL7_TOPIC_DEADLETTER": unique_name("deadletter"),
    }
    env = {
        **os.environ, **topics, "PYTHONUNBUFFERED": "1",
        "HL7_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "HL7_CONSUMER_GROUP": unique_name("group"),
        "HL7_TRANSACTIONAL_ID": unique_name("txn"),
        "HL7_EDGE_PORT": str(free_port()),
        "HL7_METRICS_PORT": str(free_port()),
        "HL7_TOPIC_PARTITIONS": "2",
    }
    env.pop("HL7_REGISTRY_FILE", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "processor", "run"], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    try:
        curl = None
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        while time.monotonic() < deadline and curl is None:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            if line.strip().startswith("printf 'MSH"):
                curl = line.strip()
        assert curl, f"no curl line printed (exit {proc.poll()})"

        ack = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60).stdout
        assert re.search(r"^MSA\|AA\|DEMO0001", ack, re.MULTILINE), ack

        settings = load_settings(
            kafka_bootstrap_servers=kafka_bootstrap,
            topic_raw=topics["HL7_TOPIC_RAW"],
            topic_accepted=topics["HL7_TOPIC_ACCEPTED"],
            topic_deadletter=topics["HL7_TOPIC_DEADLETTER"],
        )
        [routed] = read_outputs(settings, expect=1, timeout=60)
        record = AvroCodec.from_settings(settings, register=False).decode(routed.value)
        assert routed.topic == settings.topic_accepted
        assert record["message_control_id"] == "DEMO0001"
        assert record["principal_id"] == "mailco"
        assert record["data_controller_alias"] == "trustalias"

        # The printed "read what was routed" command works as pasted (no venv on PATH needed).
        read_cmd = mllp_cmd = None
        while read_cmd is None:
            line = proc.stdout.readline()
            assert line, "no 'Read what was routed' line printed"
            if line.startswith("Read what was routed:"):
                read_cmd = line.split(":", 1)[1].strip()
            if "mllp_send" in line and line.startswith("  "):
                mllp_cmd = line.strip()
        decoded = subprocess.run(["bash", "-c", read_cmd + " --max 1 --timeout 30"], capture_output=True,
                                 text=True, timeout=90, env={"PATH": "/usr/bin:/bin"})
        assert json.loads(decoded.stdout.splitlines()[0])["message_control_id"] == "DEMO0001", decoded.stderr

        # The printed MLLP line (plaintext on localhost, python-hl7's mllp_send) works as pasted too.
        assert mllp_cmd, "no MLLP command printed"
        mllp_ack = subprocess.run(["bash", "-c", mllp_cmd], capture_output=True, text=True, timeout=60,
                                  env={"PATH": "/usr/bin:/bin"}).stdout
        assert re.search(r"^MSA\|AA\|DEMO0001", mllp_ack, re.MULTILINE), mllp_ack

        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def _jvm_pids_for(data_dir: str) -> list[str]:
    out = subprocess.run(["ps", "-ewwo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if "kafka.Kafka" in line and data_dir in line]


def test_run_without_kafka_starts_its_own_broker_and_demo_registry(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SPEC 7: "if no Kafka is configured it starts a local single-node Kafka itself and uses
    ... a demo registry whose partner is the seed's partner_mailco / testing for trustalias";
    Ctrl-C stops the broker too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HL7_") or k.startswith(("HL7_LOCAL_", "HL7_MAVEN"))}
    env.update({"PYTHONUNBUFFERED": "1", "HL7_EDGE_PORT": str(free_port()), "HL7_METRICS_PORT": str(free_port()),
                "HL7_TOPIC_PARTITIONS": "1"})
    data_dir = str(tmp_path / "kafka-data")
    proc = subprocess.Popen(
        [sys.executable, "-m", "processor", "run", "--data-dir", data_dir], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        bootstrap = curl = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and curl is None:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            found = re.match(r"^\s+Kafka\s+(\S+) \(local, started here\)", line)
            if found:
                bootstrap = found.group(1)
            if line.strip().startswith("printf 'MSH"):
                curl = line.strip()
        assert bootstrap, f"no local Kafka reported (exit {proc.poll()})"
        assert curl, f"no curl line printed (exit {proc.poll()})"
        user, password = contract.DEMO_LOGIN
        assert f"-u {user}:{password} " in curl and f"{contract.DEMO_ALIAS}{{{contract.DEMO_ALIAS}}}" in curl
        assert _jvm_pids_for(data_dir), "the broker is not a process of its own data directory"

        ack = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60).stdout
        assert re.search(r"^MSA\|AA\|DEMO0001", ack, re.MULTILINE), ack
        settings = load_settings(kafka_bootstrap_servers=bootstrap)  # the SPEC's default topic names
        assert (settings.topic_raw, settings.topic_accepted) == (contract.TOPIC_RAW, contract.TOPIC_ACCEPTED)
        [routed] = read_outputs(settings, expect=1, timeout=60)
        assert routed.topic == contract.TOPIC_ACCEPTED

        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 0
        assert _jvm_pids_for(data_dir) == []
    finally:
        if proc.poll() is None:
            proc.kill()
