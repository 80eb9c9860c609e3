"""What the processor read from ``hl7.raw``: one immutable value per Kafka record.

Header names are the SPEC section 5 contract between the edge (and upstream gateways)
and the processor. Kafka delivers header values as bytes, possibly repeated or
``None``; ``decode_headers`` turns them into the ``dict[str, str]`` every later step
uses, and never raises, because no record, however malformed, may stop its partition.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "HEADER_INGEST_ID",
    "HEADER_PRINCIPAL_ID",
    "HEADER_PRINCIPAL_TYPE",
    "HEADER_RECEIVED_AT",
    "HEADER_SOURCE_IP",
    "HEADER_TRANSPORT",
    "HEADER_CHARSET",
    "REQUIRED_HEADERS",
    "RawRecord",
    "decode_headers",
    "parse_epoch_micros",
]

HEADER_INGEST_ID = "hl7.ingest_id"
HEADER_PRINCIPAL_ID = "hl7.principal_id"
HEADER_PRINCIPAL_TYPE = "hl7.principal_type"
HEADER_RECEIVED_AT = "hl7.received_at"
HEADER_SOURCE_IP = "hl7.source_ip"
HEADER_TRANSPORT = "hl7.transport"
# Optional, not in SPEC 5: the character set the sender declared on the request (HTTP
# ``charset``), as an MSH-18 name; applies when MSH-18 is empty. Absent when none was given.
HEADER_CHARSET = "hl7.charset"

REQUIRED_HEADERS: tuple[str, ...] = (
    HEADER_INGEST_ID,
    HEADER_PRINCIPAL_ID,
    HEADER_PRINCIPAL_TYPE,
    HEADER_RECEIVED_AT,
    HEADER_SOURCE_IP,
    HEADER_TRANSPORT,
)

# Valid receive times: from the epoch to the last microsecond of year 9999. Any long fits
# Avro, but readers that map timestamp-micros to a date type (Python datetime, Java
# Instant in many libraries) fail beyond year 9999, and a time before 1970 would turn the
# end-to-end latency histogram into decades.
_MICROS_MIN = 0
_MICROS_MAX = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
# Longest decimal text of an Avro long (sign + 19 digits); bounds int() on hostile input.
_MAX_MICROS_TEXT = 20


def decode_headers(headers: Iterable[tuple[str, bytes | str | None]] | None) -> dict[str, str]:
    """Kafka headers as ``{name: text}``; never raises.

    Values are decoded as UTF-8 with U+FFFD for invalid bytes; ``None`` becomes ``""``;
    a header sent more than once keeps its last value (what ``dict()`` of the list
    would do, stated here so producers and replay agree).
    """
    out: dict[str, str] = {}
    if not headers:
        return out
    for name, value in headers:
        if value.__class__ is bytes:  # what Kafka delivers: the one case per record that matters
            text = value.decode("utf-8", "replace")  # type: ignore[union-attr]
        elif value is None:
            text = ""
        elif isinstance(value, str):
            text = value
        else:
            text = bytes(value).decode("utf-8", errors="replace")
        out[name if name.__class__ is str else str(name)] = text
    return out


def parse_epoch_micros(text: str | None) -> int | None:
    """A ``hl7.received_at`` value as int, or ``None`` unless it is plain decimal epoch
    microseconds between 1970 and the end of year 9999."""
    if text is None:
        return None
    value = text.strip()
    if not value or len(value) > _MAX_MICROS_TEXT:
        return None
    digits = value[1:] if value[0] in "+-" else value
    if not digits.isascii() or not digits.isdigit():
        return None
    number = int(value)
    if not _MICROS_MIN <= number <= _MICROS_MAX:
        return None
    return number


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record read from ``hl7.raw``: coordinates, key, value bytes and decoded headers."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)
    timestamp_ms: int | None = None

    def header(self, name: str) -> str | None:
        """Header text, or ``None`` when absent or empty."""
        value = self.headers.get(name)
        return value if value else None

    @property
    def ingest_id(self) -> str | None:
        return self.header(HEADER_INGEST_ID)

    @property
    def principal_id(self) -> str | None:
        return self.header(HEADER_PRINCIPAL_ID)

    @property
    def principal_type(self) -> str | None:
        return self.header(HEADER_PRINCIPAL_TYPE)

    @property
    def received_at_us(self) -> int | None:
        """``hl7.received_at`` as epoch micros, ``None`` when missing or not a decimal long."""
        return parse_epoch_micros(self.header(HEADER_RECEIVED_AT))

    @property
    def source_ip(self) -> str | None:
        return self.header(HEADER_SOURCE_IP)

    @property
    def transport(self) -> str | None:
        return self.header(HEADER_TRANSPORT)

    @property
    def missing_headers(self) -> tuple[str, ...]:
        """Required SPEC headers that are absent or empty (decision row 1 input)."""
        return tuple(name for name in REQUIRED_HEADERS if not self.header(name))
