"""MSH-18 character set names -> Python codecs.

Only byte-oriented, ASCII-compatible character sets are supported: in them the
delimiter bytes (``|^~\\&`` or whatever MSH-1/MSH-2 declare) can never occur
inside a multi-byte character, so the MSH segment can be located and split at
the byte level before anything is decoded. Double-byte sets whose trail bytes
overlap ASCII punctuation (BIG-5, GB 18030, Shift-JIS) and UTF-16/32 are
refused rather than mis-split.

When MSH-18 is empty, HL7 says "ASCII"; in practice senders put UTF-8 or
8859/1 in the payload without declaring it. We decode only the MSH segment,
which is nearly always plain ASCII, so the default is strict UTF-8 (a superset
of ASCII); MSH bytes that are not UTF-8 without a declaration are malformed.
"""

from __future__ import annotations

import codecs

__all__ = ["DEFAULT_CODEC", "codec_for", "charset_from_http", "iana_name", "payload_decodes"]

DEFAULT_CODEC = "utf-8"

# payload_decodes checks bigger payloads this many bytes at a time (bounds its memory:
# decoding one chunk of 4-byte UTF-8 characters briefly takes 6 times the chunk). 256 KiB
# measured as fast as 1 MiB, and faster than one whole decode (cache-sized pieces).
_DECODE_CHUNK = 1 << 18

_CODECS: dict[str, str] = {
    "": DEFAULT_CODEC,
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",  # not an HL7 table 0211 value, but widely sent
    "ISO IR100": "iso8859-1",  # DICOM-style name for Latin-1, seen in the wild
    "ISO IR192": "utf-8",
    "KS X 1001": "euc_kr",  # trail bytes are 0xA1-0xFE: byte split is safe
}
# Python codec name (as codecs.lookup() spells it) -> the table 0211 value to use.
_HL7_NAME_BY_CODEC: dict[str, str] = {
    "ascii": "ASCII",
    "utf-8": "UNICODE UTF-8",
    "euc_kr": "KS X 1001",
}
for _n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15):
    _CODECS[f"8859/{_n}"] = f"iso8859-{_n}"
    _HL7_NAME_BY_CODEC[f"iso8859-{_n}"] = f"8859/{_n}"


def codec_for(character_set: str | None) -> str | None:
    """Python codec for an MSH-18 value (first repetition), None if unsupported.

    Matching is case-insensitive and ignores surrounding blanks: the value is a
    coded identifier, not data, and senders vary in spelling.
    """
    if not character_set:
        return DEFAULT_CODEC
    return _CODECS.get(character_set.strip().upper())


def charset_from_http(charset: str) -> str | None:
    """The MSH-18 name for an HTTP ``charset`` parameter (IANA name or alias, any case),
    ``None`` when it is not one of the character sets above.

    Why: a sender may declare the character set on the request instead of in MSH-18
    (common for 8859/1 feeds); it then applies exactly as if MSH-18 had said it.
    """
    try:
        name = codecs.lookup(charset.strip()).name
    except (LookupError, ValueError):
        return None
    return _HL7_NAME_BY_CODEC.get(name)


def iana_name(codec: str) -> str:
    """The IANA charset name for one of our codecs, for an HTTP ``charset`` parameter."""
    if codec.startswith("iso8859-"):
        return "ISO-8859-" + codec[len("iso8859-") :]
    return {"ascii": "US-ASCII", "utf-8": "UTF-8", "euc_kr": "EUC-KR"}.get(codec, codec.upper())


def payload_decodes(data: bytes, character_set: str | None) -> bool:
    """Do the whole message's bytes decode in the character set MSH-18 declares
    (UTF-8 when it declares none)? Decision row 4: "bytes decode".

    Pure ASCII is checked at C speed; otherwise the bytes are decoded and the text
    dropped (the payload itself is stored and forwarded untouched). Beyond one
    chunk they are decoded incrementally, chunk by chunk of a memoryview: decoding
    10 MiB at once would build a 10-40 MiB str (and a UTF-8 decode briefly needs
    more than that) only to throw it away; chunked, the check costs at most a couple
    of MiB whatever the payload size. The answer is the same: the incremental
    decoder carries a character split across a chunk boundary over to the next
    chunk, and ``final=True`` refuses one left incomplete at the end.
    """
    if data.isascii():
        return True
    codec = codec_for(character_set)
    if codec is None:
        return False
    try:
        if len(data) <= _DECODE_CHUNK:
            data.decode(codec)
            return True
        decode = codecs.getincrementaldecoder(codec)("strict").decode
        with memoryview(data) as view:
            for offset in range(0, len(view), _DECODE_CHUNK):
                decode(view[offset : offset + _DECODE_CHUNK])
        decode(b"", True)
    except UnicodeDecodeError:
        return False
    return True
