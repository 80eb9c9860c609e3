"""MLLP over TLS for the tests: certificates made on the spot with ``cryptography``, a
blocking MLLP client, and an edge with the MLLP listener on a real broker."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from processor.registry.loader import registry_version
from tests.builders import registry_yaml
from tests.integration.edge.conftest import RunningEdge, start_edge

SB, EB = b"\x0b", b"\x1c\x0d"


@dataclass(frozen=True)
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        cert.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        key.write_bytes(self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return cert, key


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(cn: str, *, issuer: Issued | None = None, ca: bool = False, server: bool = False) -> Issued:
    """A P-256 certificate: a CA, or a leaf signed by ``issuer`` (self-signed without one)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.cert.subject if issuer else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                         x509.DNSName("localhost")]), critical=False)
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    return Issued(key, cert)


@dataclass
class Pki:
    """Server CA + server certificate; the partners' CA with a known and an unknown client;
    another CA's client; a self-signed client listed in the bundle."""

    directory: Path
    server_ca: Issued
    server: Issued
    partner_ca: Issued
    known: Issued
    unknown: Issued
    customer: Issued
    foreign: Issued
    self_signed: Issued

    @classmethod
    def make(cls, directory: Path) -> Pki:
        server_ca = make_cert("test server CA", ca=True)
        partner_ca = make_cert("test partners CA", ca=True)
        other_ca = make_cert("some other CA", ca=True)
        pki = cls(
            directory,
            server_ca,
            make_cert("127.0.0.1", issuer=server_ca, server=True),
            partner_ca,
            make_cert("mailco engine", issuer=partner_ca),
            make_cert("not in the registry", issuer=partner_ca),
            make_cert("trust-1 engine", issuer=partner_ca),
            make_cert("foreign engine", issuer=other_ca),
            make_cert("self-signed engine"),
        )
        pki.write_server(pki.server)
        bundle = directory / "client-ca.pem"
        bundle.write_bytes(b"".join(i.cert.public_bytes(serialization.Encoding.PEM)
                                    for i in (partner_ca, pki.self_signed)))
        return pki

    def write_server(self, server: Issued) -> None:
        server.write(self.directory, "server")

    @property
    def settings(self) -> dict[str, object]:
        return {
            "mllp_port": 0,
            "mllp_tls_certfile": str(self.directory / "server.crt"),
            "mllp_tls_keyfile": str(self.directory / "server.key"),
            "mllp_client_ca_file": str(self.directory / "client-ca.pem"),
        }

    def client_context(self, client: Issued | None) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cadata=self.server_ca.cert.public_bytes(serialization.Encoding.PEM).decode())
        if client is not None:
            cert, key = client.write(self.directory, f"client-{client.fingerprint[:12]}")
            context.load_cert_chain(str(cert), str(key))
        return context


def registry_with_certificates(partner: Sequence[str], customer: Sequence[str] = ()) -> str:
    """The edge tests' registry with ``client_certificates`` for mailco and trust-1's login."""
    text = registry_yaml()
    text = text.replace(
        "    authorised_by: [trust-1, trust-off]\n",
        f"    authorised_by: [trust-1, trust-off]\n    client_certificates: {list(partner)!r}\n", 1)
    text = text.replace(
        "      username: trust_user\n",
        f"      username: trust_user\n      client_certificates: {list(customer)!r}\n", 1)
    return text


def install_registry(edge: RunningEdge, text: str) -> None:
    """Write a registry and wait until the edge's watcher has loaded it."""
    edge.registry_path.write_text(text)
    want = registry_version(text.encode())
    deadline = time.monotonic() + 30
    while edge.watcher.current.version != want:
        assert time.monotonic() < deadline, "registry not reloaded"
        time.sleep(0.1)


def start_mllp_edge(bootstrap: str, directory: Path, pki: Pki, **overrides: object) -> RunningEdge:
    edge = start_edge(bootstrap, directory, **{**pki.settings, **overrides})
    install_registry(edge, registry_with_certificates([pki.known.fingerprint], [pki.customer.fingerprint]))
    return edge


def mllp_address(edge: RunningEdge) -> tuple[str, int]:
    address = edge.server.mllp_address
    assert address is not None
    return address


class MllpClient:
    """A blocking MLLP client (TLS when given a context)."""

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext | None, timeout: float = 60.0) -> None:
        raw = socket.create_connection(address, timeout=timeout)
        self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1") if context else raw
        self.buffer = b""

    def send(self, message: bytes) -> None:
        self.sock.sendall(SB + message + EB)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def ack(self) -> bytes:
        """The next ACK's bytes (without framing); raises ``ConnectionError`` at EOF."""
        while EB not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the edge")
            self.buffer += chunk
        framed, self.buffer = self.buffer.split(EB, 1)
        assert framed.startswith(SB), framed[:20]
        return framed[1:]

    def request(self, message: bytes) -> bytes:
        self.send(message)
        return self.ack()

    def closed_without_ack(self) -> bool:
        """True when the edge closes the connection without sending anything (a TLS alert or
        reset counts as closed)."""
        try:
            data = self.sock.recv(65536)
        except (ssl.SSLError, ConnectionError, OSError):
            return True
        return data == b"" and self.buffer == b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> MllpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def segments(ack: bytes) -> dict[str, list[str]]:
    return {s.split("|")[0]: s.split("|") for s in ack.decode().split("\r") if s}
