"""What the processor read from ``hl7.raw``: one immutable value per Kafka record.

Header names are the SPEC section 5 contract between the edge (and upstream gateways)
and the processor. Kafka delivers header values as bytes, possibly repeated or
``None``; ``decode_headers`` turns them into the ``dict[str, str]`` every later step
uses (remembering which names came more than once: decision row 1 wants each required
header exactly once), and never raises, because no record, however malformed, may stop
its partition. The value checks of row 1 (UUID, IP address, epoch micros) live here too.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import NamedTuple

__all__ = [
    "HEADER_INGEST_ID",
    "HEADER_PRINCIPAL_ID",
    "HEADER_PRINCIPAL_TYPE",
    "HEADER_RECEIVED_AT",
    "HEADER_SOURCE_IP",
    "HEADER_TRANSPORT",
    "HEADER_CHARSET",
    "REQUIRED_HEADERS",
    "MAX_KEY_MSH4_BYTES",
    "RawRecord",
    "DecodedHeaders",
    "decode_headers",
    "parse_epoch_micros",
    "is_uuid_text",
    "UUID_PATTERN",
    "is_ip_address_text",
    "raw_record_key",
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

#: The longest MSH-4 (UTF-8 bytes) an ``hl7.raw`` key carries as received (SPEC 5).
MAX_KEY_MSH4_BYTES = 256

# Valid receive times: from the epoch to the last microsecond of year 9999. Any long fits
# Avro, but readers that map timestamp-micros to a date type (Python datetime, Java
# Instant in many libraries) fail beyond year 9999, and a time before 1970 would turn the
# end-to-end latency histogram into decades.
_MICROS_MIN = 0
_MICROS_MAX = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
# Longest decimal text of an Avro long (sign + 19 digits); bounds int() on hostile input.
_MAX_MICROS_TEXT = 20
# Longest IP address text: IPv6 with an embedded IPv4 (45 characters) plus a zone id
# ("%" and an interface name of at most 15); bounds ipaddress on hostile input.
_MAX_IP_TEXT = 64
_ZONE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
# Addresses already found valid: a record's source is one of a few clients, and
# ipaddress costs microseconds a record. Bounded (cleared when full): the value is
# sender-controlled.
_GOOD_IPS: set[str] = set()
_GOOD_IPS_MAX = 4096
#: A UUID in its canonical text form, either case (use with ``fullmatch``).
UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_UUID_TEXT = re.compile(UUID_PATTERN)


class DecodedHeaders(dict[str, str]):
    """``decode_headers``' result for a record that carried some header name more than
    once: the same dict (last value wins) plus ``duplicates``, those names in order of
    first repetition. Why a dict subclass: ``RawRecord`` and the processor's fast
    constructor stay as they are, and the usual record (no repetition) keeps a plain
    ``dict`` at no extra cost; ``RawRecord.duplicate_headers`` reads it back."""

    __slots__ = ("duplicates",)

    def __init__(self, decoded: dict[str, str], duplicates: tuple[str, ...]) -> None:
        super().__init__(decoded)
        self.duplicates = duplicates


def decode_headers(headers: Iterable[tuple[str, bytes | str | None]] | None) -> dict[str, str]:
    """Kafka headers as ``{name: text}``; never raises.

    Values are decoded as UTF-8 with U+FFFD for invalid bytes; ``None`` becomes ``""``;
    a header sent more than once keeps its last value (what ``dict()`` of the list
    would do, stated here so producers and replay agree), and the result is then a
    :class:`DecodedHeaders` naming the repeated names (row 1 refuses a repeated
    required header). Telling needs one length comparison per record.
    """
    out: dict[str, str] = {}
    if not headers:
        return out
    if headers.__class__ is not list:
        headers = list(headers)
    for name, value in headers:
        if value.__class__ is bytes:  # what Kafka delivers: the one case per record that matters
            text = value.decode("utf-8", "replace")
        elif value is None:
            text = ""
        elif isinstance(value, str):
            text = value
        else:
            text = bytes(value).decode("utf-8", errors="replace")
        out[name if name.__class__ is str else str(name)] = text
    if len(out) != len(headers):  # a list by now
        return DecodedHeaders(out, _repeated(headers))
    return out


def _repeated(headers: Iterable[tuple[str, object]]) -> tuple[str, ...]:
    """Header names that occur more than once, in order of their first repetition."""
    seen: set[str] = set()
    repeated: dict[str, None] = {}
    for name, _value in headers:
        key = name if name.__class__ is str else str(name)
        if key in seen:
            repeated[key] = None
        seen.add(key)
    return tuple(repeated)


def is_uuid_text(text: str | None) -> bool:
    """Is ``text`` a UUID in its canonical form: 8-4-4-4-12 hex digits and hyphens, 36
    characters, either case (any version or variant)?

    Why canonical only: ``uuid.UUID`` also takes braces, ``urn:uuid:``, missing hyphens
    and surrounding whitespace; ingest ids are compared and searched as text (dead-letter
    replay, logs, ACK ids), so one UUID must have one spelling up to case. Every text
    accepted here is one ``uuid.UUID`` accepts, checked without building one.
    """
    return text is not None and _UUID_TEXT.fullmatch(text) is not None


def is_ip_address_text(text: str | None) -> bool:
    """Is ``text`` an IPv4 or IPv6 address as ``ipaddress.ip_address`` reads it?

    The length is bounded first (the value is sender-controlled). An IPv6 zone id
    (``fe80::1%eth0``), which ``ipaddress`` takes with any characters at all, must be an
    interface name or number (``[A-Za-z0-9._-]``): the text is carried downstream as
    ``source_ip`` and must stay an address, not a vehicle for arbitrary text.
    """
    if text in _GOOD_IPS:  # first: the usual case, once per record
        return True
    if not text or len(text) > _MAX_IP_TEXT:
        return False
    _address, percent, zone = text.partition("%")
    if percent and (not zone or zone.strip(_ZONE_CHARS)):
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    if len(_GOOD_IPS) >= _GOOD_IPS_MAX:
        _GOOD_IPS.clear()
    _GOOD_IPS.add(text)
    return True


def raw_record_key(principal_id: str, msh4: str) -> bytes:
    """The ``hl7.raw`` key (SPEC 5): ``<principal id>|<MSH-4 as received>`` in UTF-8.

    ``msh4`` is MSH-4 as the header reader returns it (``sending_facility_raw``):
    bytes that did not decode are surrogate escapes, so its bytes are
    ``msh4.encode("utf-8", "surrogateescape")``. Over 256 of them, MSH-4 is replaced
    by ``sha256:`` + the hex SHA-256 of those bytes. Why bounded: MSH-4 is
    sender-controlled (up to the body limit) and the key travels with the record to
    every output topic; a hash still keeps one sender's stream in one partition.
    A kept MSH-4 must be UTF-8 text, so undecodable bytes become U+FFFD there; the
    256 and the hash count the exact bytes.
    """
    raw = msh4.encode("utf-8", "surrogateescape")
    if len(raw) > MAX_KEY_MSH4_BYTES:
        shown = "sha256:" + hashlib.sha256(raw).hexdigest()
    elif raw.isascii():
        shown = msh4
    else:
        shown = raw.decode("utf-8", "replace")
    return f"{principal_id}|{shown}".encode()


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


_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


# A NamedTuple, not a frozen dataclass: one is built per record on the processor's hot
# path, where a frozen dataclass's __init__ (object.__setattr__ per field) costs 0.65 µs
# for these 7 fields against ≈ 0.15 µs for the tuple (timeit, Python 3.11).
class RawRecord(NamedTuple):
    """One record read from ``hl7.raw``: coordinates, key, value bytes and decoded headers."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Mapping[str, str] = _NO_HEADERS
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

    @property
    def duplicate_headers(self) -> tuple[str, ...]:
        """Header names the record carried more than once (``headers`` kept the last
        value of each); known only when ``headers`` came from ``decode_headers``."""
        return getattr(self.headers, "duplicates", ())
