"""HL7 v2 escape sequences (chapter 2.7): decode and encode delimiter escapes.

Decoded: ``\\F\\`` field, ``\\S\\`` component, ``\\T\\`` subcomponent,
``\\R\\`` repetition and ``\\E\\`` escape character (shown with the
default escape character; the message's own one is used).

Left verbatim (escape characters included): every other sequence -
``\\H\\``/``\\N\\`` highlighting, ``\\Xhh..\\`` hex data, ``\\Zxx\\`` local,
``\\Cxxyy\\``/``\\Mxxyyzz\\`` character-set switches, ``\\.br\\`` formatting -
and an escape character without a closing one. Why: this module only decodes
identifiers (MSH-3, MSH-4, MSH-9, MSH-10); turning ``\\X00\\`` into a raw byte
or dropping highlighting would let a sender smuggle characters into an
identifier or make two different wire values compare equal. Kept verbatim,
such values still contain the escape character and so fail the MSH-4 alias
grammar (MSH4_SYNTAX) instead of being silently "fixed".

Both functions are linear in the input (``str.find`` based, no regex, no
backtracking), including for a value that is megabytes of escape characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Delimiters", "DEFAULT_DELIMITERS", "HasDelimiters", "unescape", "escape"]


class HasDelimiters(Protocol):
    """Anything carrying the five delimiters (``Delimiters`` or ``MshHeader``)."""

    @property
    def field_separator(self) -> str: ...
    @property
    def component_separator(self) -> str: ...
    @property
    def repetition_separator(self) -> str: ...
    @property
    def escape_character(self) -> str: ...
    @property
    def subcomponent_separator(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The MSH-1 / MSH-2 delimiters of one message."""

    field_separator: str = "|"
    component_separator: str = "^"
    repetition_separator: str = "~"
    escape_character: str = "\\"
    subcomponent_separator: str = "&"

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as written in a message we build (no truncation character)."""
        return (
            self.component_separator
            + self.repetition_separator
            + self.escape_character
            + self.subcomponent_separator
        )


DEFAULT_DELIMITERS = Delimiters()


def unescape_with(value: str, esc: str, fs: str, cs: str, rs: str, ss: str) -> str:
    """``unescape`` with the delimiters passed separately (hot path of read_header)."""
    start = value.find(esc)
    if start < 0:
        return value
    mapping = {"F": fs, "S": cs, "T": ss, "R": rs, "E": esc}
    out: list[str] = []
    pos = 0
    n = len(value)
    while start >= 0:
        end = value.find(esc, start + 1)
        if end < 0:
            break  # unterminated: rest stays verbatim
        repl = mapping.get(value[start + 1]) if end == start + 2 else None
        if repl is None:
            # Unknown or empty sequence: kept verbatim (closing character
            # included, so it cannot open the next sequence).
            start = value.find(esc, end + 1) if end + 1 < n else -1
            continue
        out.append(value[pos:start])
        out.append(repl)
        pos = end + 1
        start = value.find(esc, pos) if pos < n else -1
    out.append(value[pos:])
    return "".join(out)


def unescape(value: str, delimiters: HasDelimiters = DEFAULT_DELIMITERS) -> str:
    """Decode the delimiter escape sequences of ``value`` (see module doc)."""
    d = delimiters
    return unescape_with(
        value,
        d.escape_character,
        d.field_separator,
        d.component_separator,
        d.repetition_separator,
        d.subcomponent_separator,
    )


def escape(value: str, delimiters: HasDelimiters = DEFAULT_DELIMITERS) -> str:
    """Encode ``value`` for use as one HL7 primitive (text we put in an ACK).

    Every delimiter becomes its escape sequence; CR and LF become ``\\X0D\\`` /
    ``\\X0A\\`` so text can never start a new segment.
    """
    d = delimiters
    esc = d.escape_character
    specials = (
        d.field_separator,
        d.component_separator,
        d.repetition_separator,
        d.subcomponent_separator,
        esc,
        "\r",
        "\n",
    )
    if not any(c in value for c in specials):
        return value
    table = {
        ord(esc): f"{esc}E{esc}",
        ord(d.field_separator): f"{esc}F{esc}",
        ord(d.component_separator): f"{esc}S{esc}",
        ord(d.repetition_separator): f"{esc}R{esc}",
        ord(d.subcomponent_separator): f"{esc}T{esc}",
        ord("\r"): f"{esc}X0D{esc}",
        ord("\n"): f"{esc}X0A{esc}",
    }
    return value.translate(table)
