"""No patient data in logs: the whole corpus through both transports, logging at DEBUG."""

from __future__ import annotations

import logging
from xml.sax.saxutils import escape

import httpx
import pytest

from tests.builders import PASSWORD, SEED_PASSWORD, SEED_USER, basic
from tests.corpus import PATIENT_MARKERS, load, names
from tests.integration.edge.conftest import RunningEdge

pytestmark = pytest.mark.kafka


def _soap(text: str) -> bytes:
    return (
        '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:w="http://wsssl.hl7api.patientsknowbest.com/"><s:Body><w:acceptMessage><arg0>'
        + escape(text, {"\r": "&#13;"})
        + "</arg0></w:acceptMessage></s:Body></s:Envelope>"
    ).encode("utf-8")


def test_corpus_through_edge_leaves_no_patient_data_in_logs(
    edge: RunningEdge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    auths = [basic(SEED_USER, SEED_PASSWORD), basic("trust_user", PASSWORD), basic(SEED_USER, "wrong")]
    statuses = set()
    with httpx.Client(base_url=edge.url, timeout=60) as client:
        for i, name in enumerate(names()):
            payload = load(name)
            auth = auths[i % 2]
            for body, ctype, path in (
                (payload, "application/hl7-v2", "/hl7"),
                (_soap(payload.decode("latin-1")), "text/xml; charset=utf-8", "/soap"),
                (payload, "application/json", "/hl7"),  # 415
                (payload[payload.find(b"PID"):], "application/hl7-v2", "/hl7"),  # no MSH: 400
            ):
                resp = client.post(path, content=body, headers={"Content-Type": ctype, "Authorization": auth,
                                                                "X-Forwarded-For": f"192.0.2.{i + 1}"})
                statuses.add(resp.status_code)
            resp = client.post("/hl7", content=payload, headers={
                "Content-Type": "application/hl7-v2", "Authorization": auths[2], "X-Forwarded-For": "192.0.2.200"})
            statuses.add(resp.status_code)
        metrics_text = client.get("/metrics").text
    assert {200, 400, 401, 415} <= statuses
    assert any(r.name == "processor.edge.app" for r in caplog.records), "the edge's own lines must be captured"
    logged = "\n".join(
        r.getMessage() + (str(r.exc_info) if r.exc_info else "") for r in caplog.records
    )
    for marker in PATIENT_MARKERS:
        assert marker not in logged, marker
        assert marker not in metrics_text, marker
