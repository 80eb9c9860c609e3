"""``hl7-processor edge`` as a real process: config errors, serving, SIGTERM shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from processor.config import load_settings
from processor.kafka.local_broker import free_port
from tests.builders import SEED_PASSWORD, SEED_USER, basic, write_registry
from tests.corpus import seed_message
from tests.integration.edge.conftest import RawReader, create_raw_topic, wait_ready

REPO = Path(__file__).resolve().parents[3]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HL7_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def test_edge_without_registry_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "processor", "edge"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "HL7_REGISTRY_FILE" in proc.stderr


@pytest.mark.kafka
def test_edge_command_serves_and_stops_on_sigterm(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"edge-test.cmd.{uuid.uuid4().hex[:12]}"
    create_raw_topic(kafka_bootstrap, topic, load_settings())
    port = free_port()
    registry = write_registry(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "processor", "edge", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=_env(HL7_REGISTRY_FILE=str(registry), HL7_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, HL7_TOPIC_RAW=topic),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        resp = httpx.post(url + "/hl7", content=seed_message(control_id=b"CMD1"), timeout=60,
                          headers={"Content-Type": "application/hl7-v2", "Authorization": basic(SEED_USER, SEED_PASSWORD)})
        assert resp.status_code == 200 and b"MSA|AA|CMD1" in resp.content
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader = RawReader(kafka_bootstrap, topic)
    try:
        assert [m.value() for m in reader.all()] == [seed_message(control_id=b"CMD1")]
    finally:
        reader.close()


def test_edge_mllp_tls_without_client_ca_is_a_configuration_error(tmp_path: Path) -> None:
    registry = write_registry(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "processor", "edge", "--port", "0"], cwd=tmp_path,
                          env=_env(HL7_REGISTRY_FILE=str(registry), HL7_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
                                   HL7_MLLP_PORT="0", HL7_MLLP_TLS_CERTFILE="/x.pem", HL7_MLLP_TLS_KEYFILE="/x.key"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "HL7_MLLP_CLIENT_CA_FILE" in proc.stderr


@pytest.mark.kafka
def test_edge_command_serves_mllp_over_tls_and_stops_on_sigterm(kafka_bootstrap: str, tmp_path: Path) -> None:
    from tests.integration.edge.mllp_kit import MllpClient, Pki, registry_with_certificates, segments

    pki = Pki.make(tmp_path)
    topic = f"edge-test.cmd.{uuid.uuid4().hex[:12]}"
    create_raw_topic(kafka_bootstrap, topic, load_settings())
    port, mllp_port = free_port(), free_port()
    registry = tmp_path / "registry.yaml"
    registry.write_text(registry_with_certificates([pki.known.fingerprint]))
    settings = {f"HL7_{k.upper()}": str(v) for k, v in pki.settings.items()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "processor", "edge", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=_env(HL7_REGISTRY_FILE=str(registry), HL7_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, HL7_TOPIC_RAW=topic,
                 **{**settings, "HL7_MLLP_PORT": str(mllp_port)}),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        with MllpClient(("127.0.0.1", mllp_port), pki.client_context(pki.known)) as client:
            assert segments(client.request(seed_message(control_id=b"CMDMLLP")))["MSA"][1:3] == ["AA", "CMDMLLP"]
            proc.send_signal(signal.SIGTERM)  # an idle MLLP connection does not hold the shutdown up
            out, _ = proc.communicate(timeout=60)
            assert client.closed_without_ack()
        assert proc.returncode == 0, out
        assert "MLLP over TLS listening on 127.0.0.1" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader = RawReader(kafka_bootstrap, topic)
    try:
        [record] = reader.all()
        assert record.value() == seed_message(control_id=b"CMDMLLP")
        assert dict(record.headers())["hl7.transport"] == b"mllp"
    finally:
        reader.close()
