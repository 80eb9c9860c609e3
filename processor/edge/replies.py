"""HTTP answers of the edge: one value per reply (status, body, media type, the ACK code it is
counted under), plain-text or SOAP Fault for HTTP-level errors."""

from __future__ import annotations

from dataclasses import dataclass, field

from processor.hl7.soap import build_fault

__all__ = ["Reply", "error_reply", "SOAP_CONTENT_TYPE", "TEXT"]

SOAP_CONTENT_TYPE = "text/xml; charset=utf-8"
TEXT = "text/plain; charset=utf-8"


@dataclass(slots=True)
class Reply:
    """An HTTP answer plus the label values it is counted under."""

    status: int
    body: bytes
    media_type: str | None
    ack: str = "none"
    headers: dict[str, str] = field(default_factory=dict)


def error_reply(transport: str, status: int, message: str, **headers: str) -> Reply:
    """An HTTP-level error: a SOAP Fault on ``/soap`` (Server for 5xx, else Client), else text."""
    if transport == "soap":
        code = "soap:Server" if status >= 500 else "soap:Client"
        return Reply(status, build_fault(code, message), SOAP_CONTENT_TYPE, headers=headers)
    return Reply(status, (message + "\n").encode(), TEXT, headers=headers)
