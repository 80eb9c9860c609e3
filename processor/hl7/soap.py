"""PKB-compatible SOAP 1.1 wrapper: ``acceptMessage(arg0) -> return``.

Requests are parsed with expat used directly, fed in 16 KiB slices: defusedxml
has no streaming parser with depth or element limits (its parsers build the
whole tree first, so a 9 MiB body of nested or sibling elements cost hundreds
of MiB). Only arg0's text and a few counters are kept, and the parse stops at
once past a MAX_* limit, one of which is a tag, comment or PI left unfinished
over MAX_TOKEN bytes (expat holds it whole, and hands all of a tag's attributes
to Python before a handler can refuse them). The forbidding mirrors defusedxml's
forbid_dtd/forbid_entities/forbid_external: a DOCTYPE, an entity declaration
(parsed or unparsed) or an external entity reference raises from its handler
and parameter entities are never parsed, so XXE and "billion laughs" bodies are
refused before anything is expanded. The shape checks and their error texts are
those of the tree-based parser this replaced, reported in the same order.

Line ends: XML parsers normalise a literal CR or CRLF in text (CDATA too) to
LF; only ``&#13;`` survives as CR. ``parse_accept_message`` returns arg0's
text as the XML infoset defines it (after that normalisation), with no further
change - that text is "the message as received after SOAP unwrapping". So a
client that wrote raw CRs inside CDATA delivers LF-separated segments, which
the header reader and the processor accept (SPEC 4 allows LF). Our own
responses write every CR as ``&#13;`` so the ACK's CRs reach the client.

The WSDL is document/literal wrapped in the JAX-WS shape: element
``acceptMessage`` with an unqualified ``arg0`` string, response element
``acceptMessageResponse`` with an unqualified ``return`` string. The service,
port and binding names are ours; the namespace, operation and element names
are the contract partners code against.
"""

from __future__ import annotations

import codecs
import re
import sys
from collections.abc import Iterator
from typing import NoReturn
from xml.parsers import expat
from xml.sax.saxutils import escape as _xml_escape
from xml.sax.saxutils import quoteattr

from processor.errors import SoapError
from processor.hl7.charset import DEFAULT_CODEC, codec_for

__all__ = [
    "SOAP_NS",
    "SERVICE_NS",
    "SERVICE_NAME",
    "PORT_NAME",
    "MAX_DEPTH",
    "MAX_ELEMENTS",
    "MAX_ELEMENT_ATTRIBUTES",
    "MAX_ATTRIBUTES",
    "MAX_TOKEN",
    "parse_accept_message",
    "message_bytes",
    "build_accept_response",
    "build_fault",
    "build_wsdl",
]

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SERVICE_NS = "http://wsssl.hl7api.patientsknowbest.com/"
SERVICE_NAME = "Hl7ApiService"
PORT_NAME = "Hl7ApiPort"

MAX_DEPTH = 32  # element nesting, the root being level 1
MAX_ELEMENTS = 1000  # elements in the whole request
MAX_ELEMENT_ATTRIBUTES = 64  # attributes of one element
MAX_ATTRIBUTES = 1000  # attributes and namespace declarations in the whole request
MAX_TOKEN = 1 << 14  # bytes of one unfinished tag, comment or PI
_CHUNK = 1 << 14  # bytes fed to expat at a time (at least MAX_TOKEN: see _Reader.feed)

# Names as expat reports them with namespace_separator "}": "uri}local", or "local".
# _EXPECTED[k]: the names allowed for the one child of the element at level k
# (0 the document, 1 Envelope, 2 Body, 3 acceptMessage; 4 is arg0).
_HEADER = f"{SOAP_NS}}}Header"
_EXPECTED = (
    (f"{SOAP_NS}}}Envelope",),
    (f"{SOAP_NS}}}Body",),
    (f"{SERVICE_NS}}}acceptMessage",),
    ("arg0", f"{SERVICE_NS}}}arg0"),
)
# _SHAPE[k]: the error when level k's content is wrong, in the order they are checked.
_SHAPE = (
    "root element is not a SOAP 1.1 Envelope",
    "SOAP Envelope must hold exactly one Body (and an optional Header)",
    f"SOAP Body must hold one acceptMessage element in namespace {SERVICE_NS}",
    "acceptMessage must hold exactly one arg0 element",
    "arg0 must hold text, not elements",
)
_REFUSED = "SOAP request with a DTD, entity or external reference refused"
_LEADING = re.compile(rb"[\xef\xbb\xbf \t\r\n]*")

# Characters XML 1.0 cannot carry, even as character references.
_XML_INVALID = {c: "\ufffd" for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)}
_XML_INVALID.update({0xFFFE: "\ufffd", 0xFFFF: "\ufffd"})


def parse_accept_message(body: bytes, http_charset: str | None = None) -> str:
    """The text of ``Envelope/Body/acceptMessage/arg0``; raises SoapError.

    CDATA and escaped text are equivalent. An empty arg0 returns "" (the
    caller then finds no MSH segment). ``http_charset``: the request's
    ``Content-Type`` charset, used when the body has no XML declaration (XML
    itself would assume UTF-8); with a declaration, the declaration decides.
    """
    chunks: Iterator[bytes | memoryview] = _slices(body)
    if http_charset and not body.startswith(b"<?xml", _leading_end(body)):
        chunks = _as_utf8(body, http_charset)
    reader = _Reader()
    try:
        for chunk in chunks:
            reader.feed(chunk)
        reader.parser.Parse(b"", True)
    except (expat.ExpatError, ValueError, TypeError, LookupError):  # LookupError: encoding="x-unknown"
        raise SoapError("SOAP request is not well-formed XML") from None
    if reader.shape_error is not None:
        raise SoapError(_SHAPE[reader.shape_error])
    return "".join(reader.text)


def _leading_end(body: bytes) -> int:
    """Offset after the BOM and whitespace that may precede an XML declaration."""
    leading = _LEADING.match(body)  # a "*" pattern: always matches
    return leading.end() if leading else 0


class _Reader:
    """expat handlers that check the envelope's shape as it streams past.

    ``stack`` holds per open element its level (1 Envelope ... 4 arg0), or None
    if its content is not checked (a Header's, or below an element in error).
    The first shape error in check order is raised once the parse is complete.
    """

    def __init__(self) -> None:
        self.stack: list[int | None] = []
        self.children = [0, 0, 0, 0]  # per level: child elements seen (Headers not counted)
        self.elements = self.names = self.fed = 0
        self.shape_error: int | None = None
        self.text: list[str] = []
        p = self.parser = expat.ParserCreate(None, "}")
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartDoctypeDeclHandler = p.EntityDeclHandler = _refuse
        p.UnparsedEntityDeclHandler = p.ExternalEntityRefHandler = _refuse
        p.ordered_attributes = True
        p.buffer_text = True  # one call per slice of text, not one per line
        p.buffer_size = 2 * _CHUNK  # a slice re-encoded to UTF-8 can double
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._data
        p.StartNamespaceDeclHandler = lambda _prefix, _uri: self._count_names(1)
        if hasattr(p, "SetReparseDeferralEnabled"):  # expat >= 2.6
            p.SetReparseDeferralEnabled(False)

    def feed(self, chunk: bytes | memoryview) -> None:
        self.parser.Parse(chunk, False)
        self.fed += len(chunk)
        # After Parse, CurrentByteIndex is where the markup expat still waits to finish
        # starts. (expat >= 2.6 may defer a retry until the pending bytes have doubled,
        # which a slice of MAX_TOKEN bytes or more always does; it is off anyway.)
        if self.fed - self.parser.CurrentByteIndex > MAX_TOKEN:
            raise SoapError(f"SOAP request has a tag, comment or PI over {MAX_TOKEN} bytes")

    def _count_names(self, count: int) -> None:
        self.names += count
        if self.names > MAX_ATTRIBUTES:
            raise SoapError(
                f"SOAP request has more than {MAX_ATTRIBUTES} attributes and namespace declarations"
            )

    def _fail(self, check: int) -> None:
        if self.shape_error is None or check < self.shape_error:
            self.shape_error = check
        self.text = []

    def _start(self, name: str, attributes: list[str]) -> None:
        self.elements += 1
        if len(self.stack) >= MAX_DEPTH:
            raise SoapError(f"SOAP request nests elements deeper than {MAX_DEPTH} levels")
        if self.elements > MAX_ELEMENTS:
            raise SoapError(f"SOAP request has more than {MAX_ELEMENTS} elements")
        if len(attributes) > 2 * MAX_ELEMENT_ATTRIBUTES:
            raise SoapError(f"SOAP request has an element with more than {MAX_ELEMENT_ATTRIBUTES} attributes")
        self._count_names(len(attributes) // 2)
        level = self.stack[-1] if self.stack else 0
        role = None
        if level == 4:
            self._fail(4)
        elif level is not None and not (level == 1 and name == _HEADER):
            self.children[level] += 1
            if self.children[level] == 1 and name in _EXPECTED[level]:
                role = level + 1
            else:
                self._fail(level)
        self.stack.append(role)

    def _end(self, _name: str) -> None:
        level = self.stack.pop()
        if level is not None and level < 4 and not self.children[level]:
            self._fail(level)

    def _data(self, text: str) -> None:
        if self.stack and self.stack[-1] == 4 and self.shape_error is None:
            self.text.append(text)


def _refuse(*_args: object) -> NoReturn:
    raise SoapError(_REFUSED)


def _slices(body: bytes) -> Iterator[memoryview]:
    view = memoryview(body)
    for i in range(0, len(view), _CHUNK):
        yield view[i : i + _CHUNK]


def _as_utf8(body: bytes, charset: str) -> Iterator[bytes | memoryview]:
    """``body`` re-encoded from ``charset`` to UTF-8, slice by slice (unchanged for an
    unknown or non-text charset). All of it must decode before any is parsed."""
    try:
        info = codecs.lookup(charset.strip())
    except (LookupError, ValueError):
        info = None
    if info is None or info.name == "utf-8" or not getattr(info, "_is_text_encoding", True):
        yield from _slices(body)
        return
    if info.name == "utf-16" and body[:2] not in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        info = codecs.lookup(f"utf-16-{sys.byteorder[0]}e")  # as bytes.decode: native order

    def decoded() -> Iterator[str]:
        decoder = info.incrementaldecoder()
        for piece in _slices(body):
            yield decoder.decode(piece)
        yield decoder.decode(b"", True)

    try:
        for _ in decoded():
            pass
    except UnicodeError:
        raise SoapError("SOAP request does not decode in the charset of its Content-Type") from None
    for text in decoded():
        yield text.encode("utf-8")


def message_bytes(text: str) -> bytes:
    """Bytes to store for an unwrapped message: encoded per its own MSH-18.

    SOAP carries Unicode text; a message declaring e.g. 8859/1 is stored in
    that charset so the stored bytes decode as the message says. Without a
    (supported) declaration, or if the text cannot be represented in it,
    UTF-8 is used. Only MSH-2 and MSH-18 are looked at, by position: nothing
    else of the segment is copied, however many fields it has.
    """
    codec = _msh18_codec(text) or DEFAULT_CODEC
    try:
        return text.encode(codec)
    except UnicodeEncodeError:
        return text.encode(DEFAULT_CODEC)


def _msh18_codec(text: str) -> str | None:
    """The codec MSH-18's first repetition names (fields split like ``str.split``)."""
    start = text.find("MSH")
    if start < 0 or len(text) <= start + 3:
        return None
    end = min(i for i in (text.find("\r", start), text.find("\n", start), len(text)) if i >= 0)
    sep, cuts = text[start + 3], [start - 1]  # cuts[k]: the separator before field k
    while len(cuts) < 19 and (cut := text.find(sep, cuts[-1] + 1, end)) >= 0:
        cuts.append(cut)
    cuts.append(end)
    # fields[k] = text[cuts[k] + 1 : cuts[k + 1]]; MSH-2 is fields[1], MSH-18 fields[17]
    if len(cuts) < 19 or cuts[2] - cuts[1] <= 2:
        return None
    first, stop = cuts[17] + 1, cuts[18]
    repeat = text.find(text[cuts[1] + 2], first, stop)
    stop = repeat if repeat >= 0 else stop
    # No table 0211 name is anywhere near this long: a longer value is not one.
    return codec_for(text[first:stop]) if stop - first <= 64 else None


def _text(value: str) -> str:
    """XML text content that keeps CR (as &#13;) and drops XML-illegal characters."""
    return _xml_escape(value.translate(_XML_INVALID), {"\r": "&#13;"})


def _envelope(body_xml: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<soap:Envelope xmlns:soap="{SOAP_NS}"><soap:Body>{body_xml}</soap:Body></soap:Envelope>'
    ).encode()


def build_accept_response(ack: str) -> bytes:
    """SOAP envelope ``acceptMessageResponse/return`` holding the ACK text."""
    return _envelope(
        f'<ns2:acceptMessageResponse xmlns:ns2="{SERVICE_NS}">'
        f"<return>{_text(ack)}</return></ns2:acceptMessageResponse>"
    )


def build_fault(fault_code: str, message: str) -> bytes:
    """SOAP 1.1 Fault; ``fault_code`` is ``soap:Client`` or ``soap:Server``."""
    if fault_code not in ("soap:Client", "soap:Server"):
        raise ValueError("fault_code must be soap:Client or soap:Server")
    return _envelope(
        f"<soap:Fault><faultcode>{fault_code}</faultcode>"
        f"<faultstring>{_text(message)}</faultstring></soap:Fault>"
    )


def build_wsdl(endpoint_url: str) -> bytes:
    """Document/literal WSDL 1.1 for acceptMessage at ``endpoint_url``."""
    location = quoteattr(endpoint_url.translate(_XML_INVALID))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<definitions xmlns="http://schemas.xmlsoap.org/wsdl/"
             xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
             xmlns:xs="http://www.w3.org/2001/XMLSchema"
             xmlns:tns="{SERVICE_NS}"
             targetNamespace="{SERVICE_NS}" name="{SERVICE_NAME}">
  <types>
    <xs:schema targetNamespace="{SERVICE_NS}" version="1.0">
      <xs:element name="acceptMessage" type="tns:acceptMessage"/>
      <xs:element name="acceptMessageResponse" type="tns:acceptMessageResponse"/>
      <xs:complexType name="acceptMessage">
        <xs:sequence>
          <xs:element name="arg0" type="xs:string" minOccurs="0"/>
        </xs:sequence>
      </xs:complexType>
      <xs:complexType name="acceptMessageResponse">
        <xs:sequence>
          <xs:element name="return" type="xs:string" minOccurs="0"/>
        </xs:sequence>
      </xs:complexType>
    </xs:schema>
  </types>
  <message name="acceptMessage">
    <part name="parameters" element="tns:acceptMessage"/>
  </message>
  <message name="acceptMessageResponse">
    <part name="parameters" element="tns:acceptMessageResponse"/>
  </message>
  <portType name="Hl7Api">
    <operation name="acceptMessage">
      <input message="tns:acceptMessage"/>
      <output message="tns:acceptMessageResponse"/>
    </operation>
  </portType>
  <binding name="Hl7ApiPortBinding" type="tns:Hl7Api">
    <soap:binding transport="http://schemas.xmlsoap.org/soap/http" style="document"/>
    <operation name="acceptMessage">
      <soap:operation soapAction=""/>
      <input><soap:body use="literal"/></input>
      <output><soap:body use="literal"/></output>
    </operation>
  </binding>
  <service name="{SERVICE_NAME}">
    <port name="{PORT_NAME}" binding="tns:Hl7ApiPortBinding">
      <soap:address location={location}/>
    </port>
  </service>
</definitions>
""".encode()
