"""Fast, strict reader of the MSH segment of one HL7 v2 (ER7) message.

Why our own reader: the gateway only needs the header to route and ACK a
message, and must stay fast for multi-megabyte payloads. We locate MSH with
``bytes.find``, cut the segment at its terminator and decode only those bytes
(per MSH-18, see ``processor.hl7.charset``); the payload is never decoded nor
re-encoded. hl7apy is used as the reference in the tests, not here.

Accepted framing around the message: a UTF-8 BOM, MLLP start/end bytes
(0x0B, 0x1C 0x0D) and blank lines before MSH. MSH must be the first segment
("MSH" found only later is MalformedHl7, not NoMshSegment). A BOM is only
skipped: MSH-18 still decides the character set. Segment terminators CR, LF or
CRLF are detected from the end of MSH; a one-segment message defaults to CR.

Strictness: MSH-1 and the 4 encoding characters of MSH-2 (a 5th, the 2.7+
truncation character, is ignored) must be distinct ASCII punctuation; MSH-1 to
MSH-12 must be present and MSH-9.1, MSH-10 and MSH-12.1 non-empty. Fields are
never trimmed. Escape sequences: see ``processor.hl7.escape`` (unknown ones are
kept verbatim). Cost is linear in the MSH segment and independent of the
payload size (the terminator is searched for in a 64 KiB window first).

Memory is bounded for hostile headers too: only MSH-1..MSH-18 are split off (the
rest of the segment stays one string), MSH-9 only into its 3 components, and the
segment copy and its decoded text are dropped as soon as the fields are cut. So a
10 MiB MSH of field separators, a 10 MiB MSH-9 of component separators or a 10 MiB
MSH-4 costs about twice its size (a 10 MiB MSH of separators split in full cost
ten times that: one string object per field), and a big payload behind a small
MSH costs nothing.

Every input problem raises ``NoMshSegment`` (no MSH segment anywhere) or
``MalformedHl7``; texts name the problem, never content.
"""

from __future__ import annotations

import re
from functools import lru_cache

from processor.errors import MalformedHl7, NoMshSegment
from processor.hl7.charset import codec_for
from processor.hl7.escape import unescape_with
from processor.hl7.msh_header import MshHeader, MshValues

__all__ = ["MshHeader", "MshValues", "read_header", "salvage_header", "MIN_MSH_FIELDS"]

#: MSH-1 .. MSH-12 must be present (MSH-9, -10, -12 are required by every version).
MIN_MSH_FIELDS = 12

# Bytes tolerated before "MSH": UTF-8 BOM parts are handled separately.
_LEADING = b"\x0b\x1c\r\n \t"
# Skips a run of them in place (C speed, no copy of a multi-megabyte message).
_SKIP_LEADING = re.compile(b"[" + re.escape(_LEADING) + b"]*")
_BOM = b"\xef\xbb\xbf"
# Delimiters must be ASCII punctuation (HL7 recommends |^~\& ; any printable
# non-alphanumeric works, but letters, digits, blanks and controls never do).
_PUNCT = frozenset(b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
# How far to look for the end of MSH before scanning the whole message.
_WINDOW = 65536
# maxsplit for an MSH segment: fields[0] is "MSH", fields[k] is MSH-(k+1) up to fields[17]
# = MSH-18, fields[18] the unsplit rest. Splitting everything would cost one string object
# per field of a hostile header (10 MiB of "|" = 10 million of them).
_MSH_SPLIT = 18


def _locate_msh(data: bytes) -> int:
    """Offset of "MSH" at the start of the message, after tolerated framing."""
    pos = 0
    for _ in range(2):  # BOM then framing, or framing then BOM
        if data.startswith(_BOM, pos):
            pos += 3
        head = data[pos : pos + 64]
        kept = len(head.lstrip(_LEADING))
        if kept or len(head) < 64:
            pos += len(head) - kept
        else:  # megabytes of framing: skipped in place, not copied (a regex "*" always matches)
            skipped = _SKIP_LEADING.match(data, pos)
            pos = skipped.end() if skipped else pos
    if data.startswith(b"MSH", pos):
        return pos
    # Not first: distinguish "no MSH at all" (HTTP 400) from "MSH elsewhere".
    if data.find(b"\rMSH", pos) >= 0 or data.find(b"\nMSH", pos) >= 0:
        raise MalformedHl7("MSH is not the first segment", err_code="100")
    raise NoMshSegment("no MSH segment found")


def _segment_end(data: bytes, start: int) -> tuple[int, str]:
    """End offset of the segment starting at ``start`` and its terminator."""
    limit = min(len(data), start + _WINDOW)
    while True:
        cr = data.find(b"\r", start, limit)
        lf = data.find(b"\n", start, cr if cr >= 0 else limit)
        if lf >= 0:
            return lf, "\n"
        if cr >= 0:
            return cr, ("\r\n" if data.startswith(b"\n", cr + 1) else "\r")
        if limit >= len(data):
            return len(data), "\r"  # single-segment message: CR is the default
        start, limit = limit, len(data)


def _decode_non_ascii(segment: bytes, fs_byte: bytes, default_charset: str | None) -> str:
    """Decode an MSH segment holding non-ASCII bytes per its MSH-18 (else ``default_charset``,
    else UTF-8)."""
    raw_fields = segment.split(fs_byte, _MSH_SPLIT)
    raw_cs = raw_fields[17] if len(raw_fields) > 17 else b""
    del raw_fields  # copies of the whole segment: dropped before it is decoded (memory bound)
    raw_cs = raw_cs.split(segment[5:6], 1)[0] if len(segment) > 5 else raw_cs
    if not raw_cs.isascii():
        raise MalformedHl7("MSH-18 is not ASCII", err_code="102")
    charset = raw_cs.decode("ascii")
    delims = segment[3:8]
    if delims.isascii() and len(delims) == 5 and delims[3:4] in raw_cs:
        fs, cs, rs, esc, ss = tuple(delims.decode("ascii"))
        charset = unescape_with(charset, esc, fs, cs, rs, ss)
    codec = codec_for(charset or default_charset)
    if codec is None:
        raise MalformedHl7("MSH-18 names an unsupported character set", err_code="103")
    try:
        return segment.decode(codec)
    except UnicodeDecodeError:
        if raw_cs:
            raise MalformedHl7(
                "MSH segment does not decode in the character set of MSH-18", err_code="102"
            ) from None
        if default_charset:
            raise MalformedHl7(
                "MSH segment does not decode in the character set of the request", err_code="102"
            ) from None
        raise MalformedHl7(
            "MSH segment is not UTF-8 and MSH-18 declares no character set", err_code="102"
        ) from None


def _check_delimiters(fs: str, enc: str) -> None:
    """MSH-1/MSH-2: punctuation, distinct, 4 characters (+ optional truncation char)."""
    if len(enc) not in (4, 5) or len(set(enc)) != len(enc) or fs in enc:
        raise MalformedHl7("MSH-2 encoding characters are invalid", err_code="102")
    for ch in enc:
        if ch > "\x7f" or ord(ch) not in _PUNCT:
            raise MalformedHl7("MSH-2 encoding characters are invalid", err_code="102")


_USUAL_ENC = frozenset(("^~\\&", "^~\\&#"))

# Unusual MSH-1 + MSH-2 combinations already accepted (a sender keeps its own). Refusals
# raise, so they are never cached; accepted keys are 5 or 6 characters long.
_check_unusual_delimiters = lru_cache(maxsize=256)(_check_delimiters)


def _msh_values(
    fields: list[str],
    fs: str,
    cs: str,
    rs: str,
    esc: str,
    ss: str,
    terminator: str,
    escaped: bool,
    strict: bool,
) -> MshValues:
    """The one map from MSH field positions to ``MshHeader.values``, for both readers.

    ``fields`` is the segment split on MSH-1 with at most ``_MSH_SPLIT`` splits and at
    least ``MIN_MSH_FIELDS`` entries: ``fields[k]`` is MSH-(k+1), ``fields[0]`` is "MSH".
    Fields beyond the list read as empty. Decoded fields are unescaped only when
    ``escaped`` (the escape character occurs in the segment), and then only those that
    hold the escape character (usually MSH-4 alone). ``strict`` (``read_header``):
    an empty MSH-9.1, MSH-10 or MSH-12.1 or an unsupported MSH-18 raises MalformedHl7;
    otherwise nothing is validated.
    """
    n = len(fields)
    msh3 = fields[2]
    msh4 = fields[3]
    msh9 = fields[8].split(cs, 3)  # MSH-9.1..9.3; anything after stays in msh9[3]
    # partition(...)[0], not split(..., 1)[0]: a third cheaper, once per message.
    sending_app = msh3.partition(cs)[0]
    namespace_id = msh4.partition(cs)[0]
    message_type = msh9[0]
    trigger = msh9[1] if len(msh9) > 1 else ""
    structure = msh9[2] if len(msh9) > 2 else ""
    control_id = fields[9]
    version_raw = fields[11]
    version_id = version_raw.partition(cs)[0]
    accept_ack = fields[14] if n > 14 else ""
    app_ack = fields[15] if n > 15 else ""
    charset = fields[17].partition(rs)[0] if n > 17 else ""
    if escaped:
        if esc in sending_app:
            sending_app = unescape_with(sending_app, esc, fs, cs, rs, ss)
        if esc in namespace_id:
            namespace_id = unescape_with(namespace_id, esc, fs, cs, rs, ss)
        if esc in message_type:
            message_type = unescape_with(message_type, esc, fs, cs, rs, ss)
        if esc in trigger:
            trigger = unescape_with(trigger, esc, fs, cs, rs, ss)
        if esc in structure:
            structure = unescape_with(structure, esc, fs, cs, rs, ss)
        if esc in control_id:
            control_id = unescape_with(control_id, esc, fs, cs, rs, ss)
        if esc in version_id:
            version_id = unescape_with(version_id, esc, fs, cs, rs, ss)
        if esc in accept_ack:
            accept_ack = unescape_with(accept_ack, esc, fs, cs, rs, ss)
        if esc in app_ack:
            app_ack = unescape_with(app_ack, esc, fs, cs, rs, ss)
        if esc in charset:
            charset = unescape_with(charset, esc, fs, cs, rs, ss)
    if strict:
        if not message_type:
            raise MalformedHl7("MSH-9 message type is empty", err_code="101")
        if not control_id:
            raise MalformedHl7("MSH-10 message control id is empty", err_code="101")
        if not version_id:
            raise MalformedHl7("MSH-12 version id is empty", err_code="101")
        if charset and codec_for(charset) is None:
            raise MalformedHl7("MSH-18 names an unsupported character set", err_code="103")
    # In the order of MshValues.
    return (
        fs,
        cs,
        rs,
        esc,
        ss,
        sending_app or None,
        msh3,
        msh4,
        namespace_id,
        fields[4],
        fields[5],
        fields[6],
        message_type,
        trigger or None,
        structure or None,
        control_id,
        fields[10],
        version_id,
        version_raw,
        accept_ack or None,
        app_ack or None,
        charset or None,
        terminator,
    )


def read_header(data: bytes, default_charset: str | None = None) -> MshHeader:
    """Read the MSH segment of ``data``; raises NoMshSegment / MalformedHl7 only.

    ``default_charset`` (an MSH-18 style name, e.g. from the request's HTTP charset)
    applies when MSH-18 is empty; ``character_set`` still reports MSH-18 only.
    """
    try:
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise MalformedHl7("message is not bytes", err_code="102")
            data = bytes(data)
        start = 0 if data[:3] == b"MSH" else _locate_msh(data)
        # Segment end: CR is by far the most common terminator; look for it within
        # a window so an LF-only multi-megabyte message is not scanned to its end.
        # No LF before that CR: ``10 not in`` (LF as an int, one memchr) costs a fifth of a
        # find() with bounds (``b"\n" not in`` is slower still), once per message.
        cr = data.find(b"\r", start, start + _WINDOW)
        if cr >= 0 and 10 not in (segment := data[start:cr]):
            terminator = "\r\n" if data[cr + 1 : cr + 2] == b"\n" else "\r"
        else:
            end, terminator = _segment_end(data, start)
            segment = data[start:end]
        if segment[-1] == 0x1C:  # MLLP end block glued to a one-segment message (MSH: never empty)
            segment = segment.rstrip(b"\x1c")
        if len(segment) < 8 or segment[3] not in _PUNCT:
            if len(segment) < 8:
                raise MalformedHl7("MSH segment truncated", err_code="101")
            raise MalformedHl7("MSH-1 field separator is invalid", err_code="102")
        if segment.isascii():
            # All supported codecs are ASCII-compatible: nothing else to decide.
            text = segment.decode("ascii")
        else:
            text = _decode_non_ascii(segment, segment[3:4], default_charset)
        del segment  # a multi-segment message's copy of MSH: not needed once decoded
        fs = text[3]
        fields = text.split(fs, _MSH_SPLIT)  # MSH-1..MSH-18; MSH-19 on stay in fields[18]
        if len(fields) < MIN_MSH_FIELDS:
            raise MalformedHl7("MSH segment truncated: fewer than 12 fields", err_code="101")
        enc = fields[1]
        if enc == "^~\\&" and fs == "|":
            cs, rs, esc, ss = "^", "~", "\\", "&"
        else:
            if fs != "|" or enc not in _USUAL_ENC:
                _check_unusual_delimiters(fs, enc)
            cs, rs, esc, ss = enc[0], enc[1], enc[2], enc[3]
        # An escape character after MSH-2's own (text[6])? text[7] and text[8] are other
        # delimiters (or absent), so a search from 7 finds exactly those after MSH-2.
        escaped = text.find(esc, 7) >= 0
        del text  # the fields are copies: holding both would double the peak below
        return MshHeader(_msh_values(fields, fs, cs, rs, esc, ss, terminator, escaped, True))
    except MalformedHl7:
        raise
    except Exception:  # noqa: BLE001 - defence in depth: contract is "never anything else"  # pragma: no cover
        raise MalformedHl7("MSH segment could not be read", err_code="207") from None


def salvage_header(data: bytes, default_charset: str | None = None) -> MshHeader | None:
    """Best effort, for replies and keys only, never for routing decisions.

    Why: a message whose MSH ``read_header`` refuses (empty MSH-9/10/12, fewer than
    12 fields, unsupported MSH-18, undecodable bytes) is still stored and answered
    AR; the ACK should then use the sender's delimiters, swap MSH-3/4 <-> MSH-5/6,
    answer its MSH-10 and copy MSH-11/12/15, and the Kafka key should carry MSH-4
    as received. This reads whatever is readable: ``read_header``'s result when
    there is one, else the same fields leniently (missing ones empty, unescaped as
    ``read_header`` does; ``character_set`` only when supported, ``version_id`` may
    be empty). Bytes that do not decode are kept as surrogate escapes (a UTF-8
    ``surrogateescape`` encode gives them back).

    ``None`` when MSH is not the first segment (or absent), or MSH-1/MSH-2 are not
    valid delimiters. Never raises.
    """
    try:
        return read_header(data, default_charset)
    except NoMshSegment:
        return None
    except MalformedHl7:
        pass
    try:
        return _salvage(data, default_charset)
    except Exception:  # noqa: BLE001 - contract: never raises
        return None


def _salvage(data: bytes, default_charset: str | None = None) -> MshHeader | None:
    """Lenient MSH read behind ``salvage_header`` (may raise; the caller contains it)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return None
    data = bytes(data)
    try:
        start = _locate_msh(data)
    except MalformedHl7:  # MSH not first (or absent): nothing that is surely the header
        return None
    end, terminator = _segment_end(data, start)
    segment = data[start:end].rstrip(b"\x1c")
    if len(segment) < 8 or segment[3] not in _PUNCT:
        return None
    fs_byte = segment[3:4]
    raw_fields = segment.split(fs_byte, _MSH_SPLIT)
    raw_enc = raw_fields[1] if len(raw_fields) > 1 else b""
    if not raw_enc.isascii():
        return None
    fs = fs_byte.decode("ascii")
    enc = raw_enc.decode("ascii")
    try:
        _check_delimiters(fs, enc)
    except MalformedHl7:
        return None
    cs, rs, esc, ss = enc[0], enc[1], enc[2], enc[3]
    # MSH-18 first: it says how to decode the rest. Kept only when supported.
    raw_cs = raw_fields[17].split(rs.encode("ascii"), 1)[0] if len(raw_fields) > 17 else b""
    del raw_fields  # copies of the segment: dropped before it is decoded (memory bound)
    charset = unescape_with(raw_cs.decode("ascii"), esc, fs, cs, rs, ss) if raw_cs.isascii() else ""
    codec = codec_for(charset) if charset else None
    if codec is None:
        charset = ""
        codec = codec_for(default_charset) if default_charset else None
    text = segment.decode(codec or "utf-8", "surrogateescape")
    del segment
    fields = text.split(fs, _MSH_SPLIT)  # as in read_header: MSH-1..MSH-18, then the rest
    del text
    fields += [""] * (MIN_MSH_FIELDS - len(fields))  # missing fields read as empty
    values = _msh_values(fields, fs, cs, rs, esc, ss, terminator, True, False)
    if values[21] != (charset or None):  # character_set: not reported when unsupported
        values = (*values[:21], charset or None, values[22])
    return MshHeader(values)
