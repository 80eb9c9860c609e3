"""An MSH that read_header refuses but that can be split: the edge's best-effort ACK and raw key.

Real edge over HTTP, real broker: the reply bytes honour what was readable (delimiters,
MSH-3/4 <-> MSH-5/6 swap, MSH-10 -> MSA-2, MSH-11/12/15) and the raw record's key is
``<principal>|<MSH-4 as received>``; the reason stays MALFORMED_HL7.
"""

from __future__ import annotations

import httpx
import pytest

from tests.builders import SEED_PASSWORD, SEED_USER, basic
from tests.integration.edge.conftest import RunningEdge

pytestmark = pytest.mark.kafka

AUTH = basic(SEED_USER, SEED_PASSWORD)
PID = b"PID|1||ZZT0000001||ZZTESTPATIENT^ZZTESTFIRST\r"


def post(edge: RunningEdge, body: bytes) -> httpx.Response:
    with edge.client() as client:
        return client.post("/hl7", content=body,
                           headers={"Content-Type": "application/hl7-v2", "Authorization": AUTH})


def segments(resp: httpx.Response, fs: str = "|") -> list[list[str]]:
    return [s.split(fs) for s in resp.content.decode().rstrip("\r").split("\r")]


def test_empty_version_acked_with_msa2_swap_and_default_version(edge: RunningEdge) -> None:
    payload = (b"MSH|^~\\&|PAS|trustalias{trustalias}|PKB|PKBFAC|20240115103000||ADT^A01^ADT_A01|NOVER|P|\r"
               + PID)
    resp = post(edge, payload)
    assert resp.status_code == 200
    msh, msa, err = segments(resp)
    assert msh[:6] == ["MSH", "^~\\&", "PKB", "PKBFAC", "PAS", "trustalias{trustalias}"]
    assert msh[8] == "ACK^A01^ACK" and msh[10:12] == ["P", "2.5"]
    assert msa == ["MSA", "AR", "NOVER", "MALFORMED_HL7"]
    assert err[3].startswith("101^Required field missing^HL70357^MALFORMED_HL7")
    record = edge.reader.by_ack_id(msh[9])
    assert record.value() == payload
    assert record.key() == b"mailco|trustalias{trustalias}"


def test_custom_delimiters_and_enhanced_mode_honoured(edge: RunningEdge) -> None:
    payload = (b"MSH#$~\\&#PAS#trustalias{trustalias}#PKB#PKBFAC#20240115103000###CUST7#T#2.5###AL\r"
               + PID.replace(b"|", b"#").replace(b"^", b"$"))
    resp = post(edge, payload)
    assert resp.status_code == 200
    text = resp.content.decode()
    assert text.startswith("MSH#$~\\&#PKB#PKBFAC#PAS#trustalias{trustalias}#")
    msh, msa, err = segments(resp, "#")
    assert msh[8] == "ACK$$ACK" and msh[10:12] == ["T", "2.5"]
    assert msa == ["MSA", "CR", "CUST7", "MALFORMED_HL7"]
    assert err[3].startswith("101$Required field missing$HL70357$MALFORMED_HL7")
    assert "|" not in text
    record = edge.reader.by_ack_id(msh[9])
    assert record.value() == payload
    assert record.key() == b"mailco|trustalias{trustalias}"


def test_undecodable_msh4_bytes_become_u_fffd_in_the_utf8_key(edge: RunningEdge) -> None:
    msh4 = b"trustalias{SYST\xc8ME}"  # latin-1 byte, no MSH-18: not UTF-8
    payload = b"MSH|^~\\&|PAS|" + msh4 + b"|PKB|PKBFAC|20240115103000||ADT^A01|BADBYTES|P|2.4\r" + PID
    resp = post(edge, payload)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/hl7-v2; charset=UTF-8"
    msh, msa, err = segments(resp)
    assert msh[2:6] == ["PKB", "PKBFAC", "PAS", "trustalias{SYST?ME}"]  # undecodable byte replaced
    assert msh[11] == "2.4"
    assert msa[:3] == ["MSA", "AR", "BADBYTES"] and "MALFORMED_HL7" in msa[3]
    assert err[0] == "ERR" and "102&Data type error&HL70357&MALFORMED_HL7" in err[1]  # 2.4 ERR shape
    record = edge.reader.by_ack_id(msh[9])
    assert record.value() == payload
    assert record.key().decode("utf-8") == "mailco|trustalias{SYST\ufffdME}"  # SPEC 5: key is UTF-8


def test_unusable_delimiters_keep_the_default_ack(edge: RunningEdge) -> None:
    payload = b"MSH|ab\\&|PAS|trustalias{trustalias}|PKB|PKBFAC|20240115103000||ADT^A01|C1|P|2.5\r" + PID
    resp = post(edge, payload)
    assert resp.status_code == 200
    msh, msa, err = segments(resp)
    assert msh[:6] == ["MSH", "^~\\&", "", "", "", ""] and msh[11] == "2.5"
    assert msa == ["MSA", "AR", "", "MALFORMED_HL7"]
    assert err[3].startswith("102^Data type error^")
    record = edge.reader.by_ack_id(msh[9])
    assert record.value() == payload and record.key() == b"mailco|"
