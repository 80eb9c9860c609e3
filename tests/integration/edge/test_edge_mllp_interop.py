"""Interoperability: python-hl7's own MLLP client (``hl7.mllp``, unmodified) sends through
TLS with a client certificate and reads the ACKs; its ``mllp_send`` console script talks
to the plaintext development listener that ``hl7-processor run`` prints a command for."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import hl7
import pytest
from hl7.mllp import open_hl7_connection

from tests.builders import hl7_message
from tests.integration.edge.mllp_kit import Pki, mllp_address, start_mllp_edge

pytestmark = pytest.mark.kafka


def test_python_hl7_asyncio_client_over_tls(kafka_bootstrap: str, tmp_path: Path) -> None:
    pki = Pki.make(tmp_path)
    edge = start_mllp_edge(kafka_bootstrap, tmp_path, pki)
    ids = [f"INTEROP{i}" for i in range(20)]

    async def exchange() -> list[hl7.Message]:
        host, port = mllp_address(edge)
        # extra keyword arguments go to asyncio's open_connection: TLS with our client certificate
        reader, writer = await open_hl7_connection(host, port, ssl=pki.client_context(pki.known))
        acks = []
        try:
            for control_id in ids:
                writer.writemessage(hl7.parse(hl7_message(control_id=control_id.encode()).decode()))
                await writer.drain()
                acks.append(await asyncio.wait_for(reader.readmessage(), 60))
        finally:
            writer.close()
        return acks

    try:
        acks = asyncio.run(exchange())
        assert [(str(a.segment("MSA")[1]), str(a.segment("MSA")[2])) for a in acks] == [("AA", i) for i in ids]
        stored = [m.value().split(b"|")[9].decode() for m in edge.reader.all()]
        assert [s for s in stored if s.startswith("INTEROP")] == ids
    finally:
        edge.stop()


def test_mllp_send_console_script_plaintext(kafka_bootstrap: str, tmp_path: Path) -> None:
    mllp_send = shutil.which("mllp_send", path=str(Path(sys.executable).parent))
    assert mllp_send, "python-hl7's mllp_send is not installed next to this interpreter"
    pki = Pki.make(tmp_path)
    edge = start_mllp_edge(kafka_bootstrap, tmp_path, pki, mllp_plaintext=True, mllp_plaintext_principal="mailco")
    try:
        host, port = mllp_address(edge)
        # --loose -f: a file of plain messages (its stdin mode is broken on Python 3)
        message = tmp_path / "message.hl7"
        message.write_bytes(hl7_message(control_id=b"SENDCLI"))
        out = subprocess.run([mllp_send, "--loose", "-f", str(message), "-p", str(port), host],
                             capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert b"\rMSA|AA|SENDCLI" in out.stdout
    finally:
        edge.stop()


@pytest.mark.parametrize("use_mllp_send", [True, False], ids=["mllp_send", "python fallback"])
def test_the_command_run_prints_works_as_pasted(kafka_bootstrap: str, tmp_path: Path, use_mllp_send: bool) -> None:
    from processor.commands.run import mllp_command

    pki = Pki.make(tmp_path)
    edge = start_mllp_edge(kafka_bootstrap, tmp_path, pki, mllp_plaintext=True, mllp_plaintext_principal="mailco")
    try:
        host, port = mllp_address(edge)
        line = mllp_command(host, port, use_mllp_send=use_mllp_send)
        out = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=60,
                             env={"PATH": "/usr/bin:/bin"})
        assert "\nMSA|AA|DEMO0001" in out.stdout, (out.stdout, out.stderr)
    finally:
        edge.stop()
