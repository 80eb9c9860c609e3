"""Reference helpers for the HL7 core tests (hl7apy-based, deliberately slow and simple)."""

from __future__ import annotations

import re

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_message

from processor.hl7.charset import codec_for

__all__ = ["hl7apy_message", "ref_escape", "ref_unescape"]


def hl7apy_message(raw: bytes, character_set: str | None) -> Message:
    """hl7apy's parse of ``raw``: framing stripped, decoded, CR-separated (what hl7apy needs)."""
    text = raw.lstrip(b"\xef\xbb\xbf").strip(b"\x0b\x1c\r\n").decode(codec_for(character_set) or "utf-8")
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    return parse_message(text, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT)


def ref_escape(value: str, fs: str, cs: str, rs: str, esc: str, ss: str) -> str:
    """Independent (char-by-char) escaper used to build test messages."""
    table = {esc: "E", fs: "F", cs: "S", rs: "R", ss: "T"}
    return "".join(f"{esc}{table[c]}{esc}" if c in table else c for c in value)


def ref_unescape(value: str, fs: str, cs: str, rs: str, esc: str, ss: str) -> str:
    """Independent regex unescaper: sequences are read left to right (as HAPI does);
    the five delimiter sequences are decoded, any other one is kept verbatim."""
    table = {"F": fs, "S": cs, "R": rs, "T": ss, "E": esc}
    e = re.escape(esc)
    return re.sub(f"{e}([^{e}]*){e}", lambda m: table.get(m.group(1), m.group(0)), value)
