"""Build the HL7 ACK the gateway answers with (SPEC 4, "ACK rules").

Acknowledgement mode: original (AA/AE/AR) unless the received MSH-15 is
non-empty, then enhanced (CA/CE/CR). The ACK swaps sender and receiver
(MSH-3/4 <-> MSH-5/6, copied as received, so escapes stay valid because the
ACK uses the message's own delimiters), copies MSH-11, MSH-12 and MSH-18, has
its own MSH-10 and answers MSA-2 = the received MSH-10. Segments are each
terminated by CR (HAPI style, so the ACK also ends with CR).

The ERR segment, written when a ``reason`` is given, follows the version:

* before 2.5: ERR-1 (ELD) ``<segment>^<seq>^<field>^<CE>`` where the CE is
  ``<0357 code>&<0357 text>&HL70357&<REASON>&&L`` (subcomponents);
* 2.5 and later: ERR-2 location (ERL), ERR-3 ``<0357 code>^<text>^HL70357^
  <REASON>^^L`` (CWE), ERR-4 severity ``E``, ERR-7 diagnostic information =
  the reason code, ERR-8 user message = ``text`` (when given).

Reason -> HL7 table 0357 (the table has no "not authorised" code, so every
authorisation failure is the generic 207, with our reason code as alternate
identifier so partners can still tell them apart):

====================================================  ====  =================
reason                                                 0357  location
====================================================  ====  =================
MALFORMED_HL7                                          102   MSH
MSH4_MISSING                                           101   MSH-4
MSH4_SYNTAX                                            102   MSH-4
UNKNOWN_CONNECTING_ALIAS, UNKNOWN_DATA_CONTROLLER_...  204   MSH-4
CUSTOMER_NOT_ACTIVE, PARTNER_NOT_AUTHORISED,           207   MSH-4
CUSTOMER_ALIAS_MISMATCH, DELEGATION_NOT_AUTHORISED
MISSING_METADATA, PRINCIPAL_*, PROCESSING_ERROR        207   (none)
====================================================  ====  =================

MALFORMED_HL7's code is refined by ``error_code=`` (the ``err_code`` of the
``MalformedHl7`` that ``read_header`` raised): 100 MSH not the first segment,
101 required field missing (empty MSH-9/10/12, fewer than 12 fields), 102 bad
delimiters or undecodable bytes (also the default: the bytes do not read as
HL7), 103 MSH-18 not a supported character set, 207 anything unexpected.

MSA-3 is ``<REASON>: <text>`` (either part alone when the other is absent),
cut to 80 characters (the ST length limit of 2.3-2.4) before escaping. MSA-3
is withdrawn from 2.7 on (hl7apy refuses it), so there it is left out: the
reason is in ERR-3/ERR-7 and the text in ERR-8; a ``text`` without a reason
then goes into an informational ERR (code 0, severity I).
All text we insert is escaped with the message's delimiters.

For versions 2.3 and older MSH-9 is ``ACK^<trigger>``: their MSG data type
(CM_MSG) has no message-structure component; from 2.3.1 on it is
``ACK^<trigger>^ACK`` as the SPEC says.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from processor.hl7.charset import DEFAULT_CODEC, codec_for
from processor.hl7.escape import DEFAULT_DELIMITERS, HasDelimiters, escape
from processor.hl7.header import MshHeader
from processor.reasons import Reason

__all__ = ["AckOutcome", "ack_code", "ack_codec", "build_ack", "error_code", "DEFAULT_VERSION"]

#: Version of an ACK to a message whose MSH could not be read.
DEFAULT_VERSION = "2.5"


def ack_codec(header: MshHeader | None) -> str:
    """The codec an ACK to ``header``'s message is written in: its MSH-18, else UTF-8."""
    charset = header.character_set if header is not None else None
    return (codec_for(charset) if charset else None) or DEFAULT_CODEC


class AckOutcome(Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    ERROR = "error"


_ORIGINAL = {AckOutcome.ACCEPT: "AA", AckOutcome.REJECT: "AR", AckOutcome.ERROR: "AE"}
_ENHANCED = {AckOutcome.ACCEPT: "CA", AckOutcome.REJECT: "CR", AckOutcome.ERROR: "CE"}

_0357_TEXT = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "204": "Unknown key identifier",
    "207": "Application internal error",
}
_MSH4 = ("MSH", "1", "4")
_MSH = ("MSH", "1", "")
_NOWHERE = ("", "", "")
_ERRORS: dict[Reason, tuple[str, tuple[str, str, str]]] = {
    Reason.MALFORMED_HL7: ("102", _MSH),
    Reason.MSH4_MISSING: ("101", _MSH4),
    Reason.MSH4_SYNTAX: ("102", _MSH4),
    Reason.UNKNOWN_CONNECTING_ALIAS: ("204", _MSH4),
    Reason.UNKNOWN_DATA_CONTROLLER_ALIAS: ("204", _MSH4),
    Reason.CUSTOMER_NOT_ACTIVE: ("207", _MSH4),
    Reason.PARTNER_NOT_AUTHORISED: ("207", _MSH4),
    Reason.CUSTOMER_ALIAS_MISMATCH: ("207", _MSH4),
    Reason.DELEGATION_NOT_AUTHORISED: ("207", _MSH4),
}
_MSA3_MAX = 80


def ack_code(header: MshHeader | None, outcome: AckOutcome) -> str:
    """MSA-1 for ``outcome``: enhanced-mode code when the sender set MSH-15."""
    table = _ENHANCED if header is not None and header.enhanced_mode else _ORIGINAL
    return table[outcome]


def error_code(reason: Reason) -> str:
    """HL7 table 0357 code used for ``reason`` (see module doc)."""
    return _ERRORS.get(reason, ("207", _NOWHERE))[0]


def _version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for p in version.split("."):
        if not (p.isascii() and p.isdigit()):  # "¹" is a digit to isdigit(), not to int()
            break
        parts.append(int(p))
    return tuple(parts) if parts else (2, 5)


def _hl7_timestamp(ts: datetime) -> str:
    text = ts.strftime("%Y%m%d%H%M%S")
    offset = ts.strftime("%z")
    return text + offset if offset else text


def _msa3(reason: Reason | None, text: str | None) -> str:
    parts = [p for p in ((reason.value if reason is not None else None), text) if p]
    return ": ".join(parts)[:_MSA3_MAX]


def _err_segment(
    reason: Reason,
    text: str | None,
    version: tuple[int, ...],
    d: HasDelimiters,
    refined_code: str | None = None,
) -> str:
    code, (seg, seq, fld) = _ERRORS.get(reason, ("207", _NOWHERE))
    if refined_code in _0357_TEXT and reason is Reason.MALFORMED_HL7:
        code = refined_code
    desc = _0357_TEXT[code]
    fs, cs = d.field_separator, d.component_separator
    if version < (2, 5):
        ss = d.subcomponent_separator
        ce = ss.join((code, desc, "HL70357", reason.value, "", "L"))
        return fs.join(("ERR", cs.join((seg, seq, fld, ce))))
    location = cs.join((seg, seq, fld)).rstrip(cs)
    cwe = cs.join((code, desc, "HL70357", reason.value, "", "L"))
    user_message = escape(text, d) if text else ""
    return fs.join(("ERR", "", location, cwe, "E", "", "", reason.value, user_message))


def build_ack(
    header: MshHeader | None,
    outcome: AckOutcome,
    *,
    control_id: str,
    timestamp: datetime,
    reason: Reason | None = None,
    text: str | None = None,
    error_code: str | None = None,
) -> bytes:
    """ER7 bytes of the ACK to ``header``'s message (None: MSH was unreadable).

    ``header`` may be a ``salvage_header`` result: an empty MSH-12 version id is
    answered with ``DEFAULT_VERSION`` (whose ERR shape is then used) and an empty
    MSH-10 with an empty MSA-2. ``error_code`` refines the 0357 code of a
    MALFORMED_HL7 rejection (see module doc); ignored for other reasons.

    The result is encoded in the character set of the received MSH-18 (copied
    into the ACK), UTF-8 when there is none. Without a header, MSA-2 is left
    empty: the received control id is unknown and a placeholder would be
    mistaken for a real one (strict validators flag the empty MSA-2).
    """
    d: HasDelimiters = header if header is not None else DEFAULT_DELIMITERS
    fs = d.field_separator
    cs = d.component_separator
    if header is not None:
        enc = header.encoding_characters
        recv_app, recv_fac = header.sending_application_raw, header.sending_facility_raw
        send_app, send_fac = header.receiving_application_raw, header.receiving_facility_raw
        processing_id = header.processing_id_raw
        version_raw = header.version_raw if header.version_id else DEFAULT_VERSION
        version = _version_tuple(header.version_id)
        trigger = header.trigger_event or ""
        received_id = header.message_control_id
        charset = header.character_set or ""
    else:
        enc = DEFAULT_DELIMITERS.encoding_characters
        recv_app = recv_fac = send_app = send_fac = ""
        processing_id = "P"
        version_raw = DEFAULT_VERSION
        version = _version_tuple(DEFAULT_VERSION)
        trigger = ""
        received_id = ""
        charset = ""
    version_raw = version_raw.translate(_NO_CONTROLS) or DEFAULT_VERSION  # see the end
    msh9_parts = ["ACK", escape(trigger, d)]
    if version >= (2, 3, 1):
        msh9_parts.append("ACK")
    msh = [
        "MSH" + fs + enc,
        send_app,
        send_fac,
        recv_app,
        recv_fac,
        _hl7_timestamp(timestamp),
        "",
        cs.join(msh9_parts),
        escape(control_id, d),
        processing_id,
        version_raw,
    ]
    if charset:
        msh.extend(("", "", "", "", "", escape(charset, d)))
    msa3 = escape(_msa3(reason, text), d) if version < (2, 7) else ""
    msa = fs.join(("MSA", ack_code(header, outcome), escape(received_id, d), msa3)).rstrip(fs)
    segments = [fs.join(msh), msa]
    if reason is not None:
        segments.append(_err_segment(reason, text, version, d, error_code).rstrip(fs))
    elif text and version >= (2, 7):
        # MSA-3 is withdrawn, so the text goes in an ERR: for AE/CE (not stored, retry)
        # 0357 code 207 at severity E, so no reader takes it for an acceptance; for an
        # acceptance with a remark, code 0 at severity I.
        if outcome is AckOutcome.ERROR:
            info, severity = cs.join(("207", "Application internal error", "HL70357")), "E"
        else:
            info, severity = cs.join(("0", "Message accepted", "HL70357")), "I"
        segments.append(fs.join(("ERR", "", "", info, severity, "", "", "", escape(text, d))))
    # Fields copied from the message may hold control characters (e.g. 0x1C, MLLP's end
    # block, or 0x0B, its start): never echo them, they would break the reply's framing.
    return "".join(s.translate(_NO_CONTROLS) + "\r" for s in segments).encode(
        ack_codec(header), errors="replace"
    )


_NO_CONTROLS = {c: None for c in (*range(0x20), 0x7F)}
