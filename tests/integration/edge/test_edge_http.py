"""The edge over real HTTP against a real broker: every status row of SPEC section 4."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from processor.edge.intake import ack_control_id
from tests.builders import PASSWORD, SEED_PASSWORD, SEED_USER, basic
from tests.corpus import load, seed_message
from tests.integration.edge.conftest import RunningEdge

pytestmark = pytest.mark.kafka

HL7 = "application/hl7-v2"
SEED_AUTH = basic(SEED_USER, SEED_PASSWORD)


def post(edge: RunningEdge, body: bytes, *, auth: str | None = SEED_AUTH, ctype: str = HL7,
         xff: str | None = None, path: str = "/hl7") -> httpx.Response:
    headers = {"Content-Type": ctype}
    if auth is not None:
        headers["Authorization"] = auth
    if xff is not None:
        headers["X-Forwarded-For"] = xff
    with edge.client() as client:
        return client.post(path, content=body, headers=headers)


def ack_segments(resp: httpx.Response) -> dict[str, list[str]]:
    return {s.split("|")[0]: s.split("|") for s in resp.content.decode().split("\r") if s}


def metric(edge: RunningEdge, name: str, **labels: str) -> float:
    """The value of one series (exact name and label set) on /metrics; 0 when absent."""
    text = httpx.get(edge.url + "/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_seed_message_accepted_and_stored_exactly(edge: RunningEdge) -> None:
    payload = seed_message()
    before = metric(edge, "hl7_edge_requests_total", transport="http", status="200", ack="AA")
    resp = post(edge, payload, xff="192.0.2.44")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith(HL7)
    seg = ack_segments(resp)
    assert seg["MSA"][1:3] == ["AA", "MSG00001"]
    # ACK swaps sender and receiver and copies MSH-11/12
    assert seg["MSH"][2:6] == ["PKB", "PKB", "PAS", "trustalias{trustalias}"]
    assert seg["MSH"][10:12] == ["P", "2.4"]
    record = edge.reader.by_ack_id(seg["MSH"][9])
    assert record.value() == payload
    assert record.key() == b"mailco|trustalias{trustalias}"
    headers = dict(record.headers())
    assert set(headers) == {"hl7.ingest_id", "hl7.principal_id", "hl7.principal_type", "hl7.received_at",
                            "hl7.source_ip", "hl7.transport"}
    assert headers["hl7.principal_id"] == b"mailco"
    assert headers["hl7.principal_type"] == b"partner"
    assert headers["hl7.transport"] == b"http"
    assert headers["hl7.source_ip"] == b"192.0.2.44"  # XFF honoured from the trusted proxy 127.0.0.1
    assert abs(int(headers["hl7.received_at"]) / 1e6 - time.time()) < 600
    assert len(headers["hl7.ingest_id"]) == 36
    assert metric(edge, "hl7_edge_requests_total", transport="http", status="200", ack="AA") == before + 1


def test_rejected_message_stored_and_answered_ar_with_reason(edge: RunningEdge) -> None:
    payload = seed_message(msh4=b"thirdalias{thirdalias}", control_id=b"REJ1")
    resp = post(edge, payload)
    assert resp.status_code == 200
    seg = ack_segments(resp)
    assert seg["MSA"][1] == "AR" and seg["MSA"][2] == "REJ1"
    assert "PARTNER_NOT_AUTHORISED" in seg["MSA"][3]
    assert "PARTNER_NOT_AUTHORISED" in "|".join(seg["ERR"])
    assert edge.reader.by_ack_id(seg["MSH"][9]).value() == payload


def test_enhanced_mode_gives_ca_and_cr(edge: RunningEdge) -> None:
    ok = seed_message(control_id=b"ENH1").replace(b"|P|2.4\r", b"|P|2.4|||AL|NE\r")
    resp = post(edge, ok, ctype="x-application/hl7-v2+er7")
    assert resp.status_code == 200 and ack_segments(resp)["MSA"][1] == "CA"
    bad = ok.replace(b"trustalias{trustalias}", b"nosuch{trustalias}")
    resp = post(edge, bad, ctype="text/plain")
    assert resp.status_code == 200 and ack_segments(resp)["MSA"][1] == "CR"
    assert resp.headers["content-type"] == "text/plain; charset=UTF-8"  # same media type, true charset
    assert "UNKNOWN_CONNECTING_ALIAS" in resp.text


def test_lf_separated_message_stored_as_received(edge: RunningEdge) -> None:
    payload = seed_message(control_id=b"LF1").replace(b"\r", b"\n")
    resp = post(edge, payload)
    assert resp.status_code == 200 and ack_segments(resp)["MSA"][1] == "AA"
    assert edge.reader.by_ack_id(ack_segments(resp)["MSH"][9]).value() == payload


def test_malformed_msh_stored_and_answered_ar(edge: RunningEdge) -> None:
    payload = b"MSH|^~\\&|only-three-fields\r"
    resp = post(edge, payload)
    assert resp.status_code == 200
    seg = ack_segments(resp)
    assert seg["MSA"][1] == "AR" and "MALFORMED_HL7" in resp.text
    assert edge.reader.by_ack_id(seg["MSH"][9]).value() == payload


def test_no_msh_segment_is_400_and_not_stored(edge: RunningEdge) -> None:
    marker = b"NOMSH-" + str(time.time_ns()).encode()
    resp = post(edge, b"PID|1||" + marker + b"\r")
    assert resp.status_code == 400
    assert all(marker not in m.value() for m in edge.reader.all())


@pytest.mark.parametrize("auth", [None, basic(SEED_USER, "wrong"), basic("nobody", "x"), "Bearer abc",
                                  basic("partner_old", PASSWORD)])
def test_missing_bad_or_inactive_credentials_are_401(edge: RunningEdge, auth: str | None) -> None:
    # No Authorization at all is a client's challenge-seeking first request, not a failed login.
    reason, other = ("missing_credentials", "bad_credentials") if auth is None else ("bad_credentials", "missing_credentials")
    before = metric(edge, "hl7_edge_auth_failures_total", reason=reason)
    before_other = metric(edge, "hl7_edge_auth_failures_total", reason=other)
    # distinct source addresses so these failures do not trip the rate limiter
    resp = post(edge, seed_message(), auth=auth, xff=f"198.51.100.{abs(hash(str(auth))) % 200 + 20}")
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == 'Basic realm="HL7 API"'
    assert metric(edge, "hl7_edge_auth_failures_total", reason=reason) == before + 1
    assert metric(edge, "hl7_edge_auth_failures_total", reason=other) == before_other


def test_address_outside_allowed_networks_is_403(edge: RunningEdge) -> None:
    auth = basic("partner_net", PASSWORD)
    resp = post(edge, seed_message(), auth=auth, xff="198.51.100.7")
    assert resp.status_code == 403
    assert resp.text.strip() == "Forbidden"
    assert post(edge, seed_message(), auth=auth, xff="203.0.113.9").status_code == 200


def test_xff_ignored_from_untrusted_peer(edge: RunningEdge) -> None:
    # the peer 127.0.0.1 is trusted, but the hop before it (198.51.100.99) is not: the
    # forged left-most entry 203.0.113.9 must not be believed
    auth = basic("partner_net", PASSWORD)
    resp = post(edge, seed_message(), auth=auth, xff="203.0.113.9, 198.51.100.99")
    assert resp.status_code == 403


def test_unsupported_content_type_is_415(edge: RunningEdge) -> None:
    for ctype in ("application/json", "text/xml", "application/octet-stream"):
        assert post(edge, seed_message(), ctype=ctype).status_code == 415
    assert post(edge, b"<x/>", ctype="application/hl7-v2", path="/soap").status_code == 415


def test_declared_oversize_body_is_413_without_reading(edge: RunningEdge) -> None:
    """A 1 GiB Content-Length is refused from the header alone."""
    with socket.create_connection(("127.0.0.1", int(edge.url.rsplit(":", 1)[1])), timeout=30) as sock:
        sock.sendall(
            b"POST /hl7 HTTP/1.1\r\nHost: x\r\nContent-Type: application/hl7-v2\r\n"
            b"Authorization: " + SEED_AUTH.encode() + b"\r\nContent-Length: 1073741824\r\n\r\n" + b"x" * 65536
        )
        reply = _read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 413")


def test_streamed_oversize_body_is_413_while_reading(edge: RunningEdge) -> None:
    """Chunked upload without a length: refused once the count passes the limit, long
    before the (up to 1 GiB) body has been sent."""
    chunk = b"x" * (1024 * 1024)
    sent = 0
    with socket.create_connection(("127.0.0.1", int(edge.url.rsplit(":", 1)[1])), timeout=30) as sock:
        sock.sendall(
            b"POST /hl7 HTTP/1.1\r\nHost: x\r\nContent-Type: application/hl7-v2\r\n"
            b"Authorization: " + SEED_AUTH.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        reply = b""
        try:
            while sent < 1024 * len(chunk):
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
                sock.setblocking(False)
                try:
                    reply = sock.recv(65536)
                except BlockingIOError:
                    reply = b""
                sock.setblocking(True)
                if reply:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        if not reply:
            reply = _read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 413")
    assert sent < 100 * len(chunk)  # limit is 10 MiB; socket buffers add a little


def _read_reply(sock: socket.socket) -> bytes:
    sock.settimeout(30)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def test_failed_logins_rate_limited_with_retry_after(edge: RunningEdge) -> None:
    xff = "198.51.100.250"
    bad = basic(SEED_USER, "wrong")
    for _ in range(3):  # login_failures_per_minute=3 in the test settings
        assert post(edge, seed_message(), auth=bad, xff=xff).status_code == 401
    before = metric(edge, "hl7_edge_auth_failures_total", reason="rate_limited")
    resp = post(edge, seed_message(), auth=SEED_AUTH, xff=xff)  # even a good password: locked out
    assert resp.status_code == 429
    assert 1 <= int(resp.headers["retry-after"]) <= 30
    assert metric(edge, "hl7_edge_auth_failures_total", reason="rate_limited") == before + 1
    # one client cannot lock the username out for everyone: another address may still try
    assert post(edge, seed_message(), auth=SEED_AUTH, xff="198.51.100.251").status_code == 200
    # other clients are unaffected
    assert post(edge, seed_message(), auth=SEED_AUTH, xff="198.51.100.252").status_code == 200


def test_health_endpoints(edge: RunningEdge) -> None:
    for path in ("/livez", "/healthz", "/readyz"):
        assert httpx.get(edge.url + path).status_code == 200
    body = httpx.get(edge.url + "/readyz").json()
    # SPEC 4: edge readiness is the registry only; Kafka is reported, not required.
    assert body == {"ready": True, "checks": {"registry": True}, "info": {"kafka": True}}


def test_metrics_exposition(edge: RunningEdge) -> None:
    """Read, act, read: one stored message moves exactly its series. (Metric names alone
    prove nothing: an unlabelled histogram exports its buckets from import time on.)"""
    resp = httpx.get(edge.url + "/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    series = {
        "requests": ("hl7_edge_requests_total", {"transport": "http", "status": "200", "ack": "AA"}),
        "duration": ("hl7_edge_request_duration_seconds_count", {"transport": "http"}),
        "publish": ("hl7_edge_publish_duration_seconds_count", {}),
        "soap": ("hl7_edge_request_duration_seconds_count", {"transport": "soap"}),
    }
    before = {k: metric(edge, name, **labels) for k, (name, labels) in series.items()}
    assert post(edge, seed_message(control_id=b"METRICS1")).status_code == 200
    after = {k: metric(edge, name, **labels) for k, (name, labels) in series.items()}
    assert {k: after[k] - before[k] for k in series} == {"requests": 1, "duration": 1, "publish": 1, "soap": 0}


def test_unknown_path_is_404_counted_as_other(edge: RunningEdge) -> None:
    before = metric(edge, "hl7_edge_requests_total", transport="other", status="404", ack="none")
    assert httpx.get(edge.url + "/nope").status_code == 404
    assert metric(edge, "hl7_edge_requests_total", transport="other", status="404", ack="none") == before + 1
    before = metric(edge, "hl7_edge_requests_total", transport="http", status="405", ack="none")
    assert httpx.get(edge.url + "/hl7").status_code == 405
    assert metric(edge, "hl7_edge_requests_total", transport="http", status="405", ack="none") == before + 1


def test_five_megabyte_document_arrives_intact(edge: RunningEdge) -> None:
    import base64
    import os

    document = base64.b64encode(os.urandom(3_750_000))  # 5,000,000 base64 bytes
    payload = (
        seed_message(control_id=b"MDM5MB").split(b"\rEVN")[0].replace(b"ADT^A01^ADT_A01", b"MDM^T02^MDM_T02")
        + b"\rEVN|T02|20240115103000\rPID|1||ZZT0000001^^^TRUST^MR\r"
        + b"TXA|1|CN|AP|20240115103000\rOBX|1|ED|PDF^Letter||^application^pdf^Base64^" + document + b"\r"
    )
    assert len(payload) > 5_000_000
    resp = post(edge, payload)
    assert resp.status_code == 200 and ack_segments(resp)["MSA"][1:3] == ["AA", "MDM5MB"]
    assert edge.reader.by_ack_id(ack_segments(resp)["MSH"][9]).value() == payload


def test_ack_control_id_links_to_ingest_id() -> None:
    assert ack_control_id("0b7c6c53-9d1c-4a8e-b8a5-0d7f3c1e2a4b") == "0b7c6c539d1c4a8eb8a5"


def test_reply_charset_is_the_acks_own_not_the_requests_label(edge: RunningEdge) -> None:
    latin1 = load("adt_a01_v24_latin1")  # MSH-18 8859/1: the ACK is written in Latin-1
    resp = post(edge, latin1, ctype=HL7 + "; charset=utf-8")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == HL7 + "; charset=ISO-8859-1"
    assert "|8859/1" in resp.content.decode("iso-8859-1")


def test_http_charset_applies_when_msh18_is_empty_and_travels_with_the_record(edge: RunningEdge) -> None:
    """An 8859/1 feed that names its charset on the request, not in MSH-18: accepted, and
    the raw record carries ``hl7.charset`` so the processor decides the same way."""
    latin1_no_msh18 = load("adt_a01_v24_latin1").replace(b"||||||8859/1", b"", 1)
    assert b"8859" not in latin1_no_msh18.split(b"\r", 1)[0] and not latin1_no_msh18.isascii()
    labelled = post(edge, latin1_no_msh18, ctype=HL7 + "; charset=ISO-8859-1")
    unlabelled = post(edge, latin1_no_msh18)
    unsupported = post(edge, latin1_no_msh18, ctype=HL7 + "; charset=windows-1252")  # ignored
    assert ack_segments(labelled)["MSA"][1] == "AA"
    assert [ack_segments(r)["MSA"][1] for r in (unlabelled, unsupported)] == ["AR", "AR"]
    assert "MALFORMED_HL7" in ack_segments(unlabelled)["MSA"][3]
    headers = dict(edge.reader.by_ack_id(ack_segments(labelled)["MSH"][9]).headers())
    assert headers["hl7.charset"] == b"8859/1"
    assert "hl7.charset" not in dict(edge.reader.by_ack_id(ack_segments(unlabelled)["MSH"][9]).headers())
