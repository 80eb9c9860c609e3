"""PKB-compatible SOAP 1.1 wrapper: ``acceptMessage(arg0) -> return``.

Requests are parsed with defusedxml with DTDs, entity declarations and
external references all forbidden, so XXE and "billion laughs" bodies are a
``SoapError`` before anything is expanded.

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
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape as _xml_escape
from xml.sax.saxutils import quoteattr

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from processor.errors import SoapError
from processor.hl7.charset import DEFAULT_CODEC, codec_for

__all__ = [
    "SOAP_NS",
    "SERVICE_NS",
    "SERVICE_NAME",
    "PORT_NAME",
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

_ENVELOPE = f"{{{SOAP_NS}}}Envelope"
_BODY = f"{{{SOAP_NS}}}Body"
_HEADER = f"{{{SOAP_NS}}}Header"
_ACCEPT = f"{{{SERVICE_NS}}}acceptMessage"
_ARG0 = ("arg0", f"{{{SERVICE_NS}}}arg0")

# Characters XML 1.0 cannot carry, even as character references.
_XML_INVALID = {c: "\ufffd" for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)}
_XML_INVALID.update({0xFFFE: "\ufffd", 0xFFFF: "\ufffd"})


def _elements(parent: Element) -> list[Element]:
    return [c for c in parent if isinstance(c.tag, str)]


def parse_accept_message(body: bytes, http_charset: str | None = None) -> str:
    """The text of ``Envelope/Body/acceptMessage/arg0``; raises SoapError.

    CDATA and escaped text are equivalent. An empty arg0 returns "" (the
    caller then finds no MSH segment). ``http_charset``: the request's
    ``Content-Type`` charset, used when the body has no XML declaration (XML
    itself would assume UTF-8); with a declaration, the declaration decides.
    """
    if http_charset and not body.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<?xml"):
        body = _as_utf8(body, http_charset)
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise SoapError("SOAP request with a DTD, entity or external reference refused") from None
    except (ParseError, ValueError, TypeError):
        raise SoapError("SOAP request is not well-formed XML") from None
    if root.tag != _ENVELOPE:
        raise SoapError("root element is not a SOAP 1.1 Envelope")
    children = _elements(root)
    bodies = [c for c in children if c.tag == _BODY]
    if len(bodies) != 1 or any(c.tag not in (_BODY, _HEADER) for c in children):
        raise SoapError("SOAP Envelope must hold exactly one Body (and an optional Header)")
    payload = _elements(bodies[0])
    if len(payload) != 1 or payload[0].tag != _ACCEPT:
        raise SoapError(f"SOAP Body must hold one acceptMessage element in namespace {SERVICE_NS}")
    args = _elements(payload[0])
    if len(args) != 1 or args[0].tag not in _ARG0:
        raise SoapError("acceptMessage must hold exactly one arg0 element")
    arg0 = args[0]
    if _elements(arg0):
        raise SoapError("arg0 must hold text, not elements")
    return arg0.text or ""


def _as_utf8(body: bytes, charset: str) -> bytes:
    """``body`` re-encoded from ``charset`` to UTF-8 (unchanged for an unknown charset)."""
    try:
        codec = codecs.lookup(charset.strip()).name
    except (LookupError, ValueError):
        return body
    if codec == "utf-8":
        return body
    try:
        return body.decode(codec).encode("utf-8")
    except UnicodeDecodeError:
        raise SoapError("SOAP request does not decode in the charset of its Content-Type") from None


def message_bytes(text: str) -> bytes:
    """Bytes to store for an unwrapped message: encoded per its own MSH-18.

    SOAP carries Unicode text; a message declaring e.g. 8859/1 is stored in
    that charset so the stored bytes decode as the message says. Without a
    (supported) declaration, or if the text cannot be represented in it,
    UTF-8 is used.
    """
    codec = DEFAULT_CODEC
    start = text.find("MSH")
    if start >= 0 and len(text) > start + 3:
        end = min(i for i in (text.find("\r", start), text.find("\n", start), len(text)) if i >= 0)
        fields = text[start:end].split(text[start + 3])
        if len(fields) > 17 and len(fields[1]) >= 2:
            codec = codec_for(fields[17].split(fields[1][1], 1)[0]) or DEFAULT_CODEC
    try:
        return text.encode(codec)
    except UnicodeEncodeError:
        return text.encode(DEFAULT_CODEC)


def _text(value: str) -> str:
    """XML text content that keeps CR (as &#13;) and drops XML-illegal characters."""
    return _xml_escape(value.translate(_XML_INVALID), {"\r": "&#13;"})


def _envelope(body_xml: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<soap:Envelope xmlns:soap="{SOAP_NS}"><soap:Body>{body_xml}</soap:Body></soap:Envelope>'
    ).encode("utf-8")


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
""".encode("utf-8")
