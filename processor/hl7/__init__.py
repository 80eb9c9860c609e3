"""Pure HL7 v2 core: MSH header reader, escapes, MSH-4 grammar, ACKs, SOAP wrapper.

No I/O here; the edge and the processor call these functions.
"""

from processor.hl7.ack import AckOutcome, ack_code, build_ack
from processor.hl7.escape import DEFAULT_DELIMITERS, Delimiters, escape, unescape
from processor.hl7.header import MshHeader, read_header, salvage_header
from processor.hl7.msh4 import Msh4Aliases, parse_msh4
from processor.hl7.soap import (
    build_accept_response,
    build_fault,
    build_wsdl,
    message_bytes,
    parse_accept_message,
)

__all__ = [
    "AckOutcome",
    "ack_code",
    "build_ack",
    "DEFAULT_DELIMITERS",
    "Delimiters",
    "escape",
    "unescape",
    "MshHeader",
    "read_header",
    "salvage_header",
    "Msh4Aliases",
    "parse_msh4",
    "build_accept_response",
    "build_fault",
    "build_wsdl",
    "message_bytes",
    "parse_accept_message",
]
