"""The edge serves HTTPS itself when given a certificate (Basic auth must not cross in clear)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from processor.config import load_settings
from processor.edge.server import EdgeServer
from processor.errors import ConfigError
from processor.registry.loader import parse_registry
from tests.builders import SEED_PASSWORD, SEED_USER, basic, registry_yaml
from tests.corpus import seed_message
from tests.integration.edge.conftest import start_edge

pytestmark = pytest.mark.kafka


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_round_trip(kafka_bootstrap: str, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    trust = ssl.create_default_context(cafile=str(cert))
    edge = start_edge(kafka_bootstrap, tmp_path, edge_tls_certfile=str(cert), edge_tls_keyfile=str(key),
                      verify=trust)
    try:
        assert edge.url.startswith("https://")
        resp = httpx.post(edge.url + "/hl7", content=seed_message(control_id=b"TLS1"), verify=trust,
                          headers={"Content-Type": "application/hl7-v2", "Authorization": basic(SEED_USER, SEED_PASSWORD)})
        assert resp.status_code == 200 and b"MSA|AA|TLS1" in resp.content
        wsdl = httpx.get(edge.url + "/soap?wsdl", verify=trust).text
        assert f'location="{edge.url}/soap"' in wsdl
    finally:
        edge.stop()


def test_half_tls_configuration_refused() -> None:
    settings = load_settings(kafka_bootstrap_servers="127.0.0.1:1", edge_tls_certfile="/x.pem", edge_port=0)
    registry = parse_registry(registry_yaml().encode())
    with pytest.raises(ConfigError):
        EdgeServer(settings, lambda: registry)
