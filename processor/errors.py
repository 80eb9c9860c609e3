"""One base exception for the gateway, and few subclasses.

Exception texts never carry message content (patient data): they name fields,
positions and ids only.
"""

from processor.reasons import Reason

__all__ = [
    "GatewayError",
    "MalformedHl7",
    "NoMshSegment",
    "Msh4Error",
    "RegistryInvalid",
    "SoapError",
    "KafkaUnavailable",
    "ConfigError",
]


class GatewayError(Exception):
    """Base of every error this package raises on purpose."""


class MalformedHl7(GatewayError):
    """The bytes are not a readable HL7 v2 message (decision row 4).

    ``err_code`` is the HL7 table 0357 code the ACK's ERR segment reports: set where
    the problem is known (100 MSH not first, 101 required field missing, 102 bad
    delimiters or undecodable bytes, 103 MSH-18 not a supported table value). The
    default, 102 "data type error", fits "these bytes do not read as HL7"; 100
    "segment sequence error" would wrongly blame the segment order.
    """

    reason = Reason.MALFORMED_HL7
    err_code: str = "102"

    def __init__(self, *args: object, err_code: str | None = None) -> None:
        super().__init__(*args)
        if err_code is not None:
            self.err_code = err_code


class NoMshSegment(MalformedHl7):
    """No MSH segment at all: the edge answers 400 and stores nothing."""

    err_code = "100"


class Msh4Error(GatewayError):
    """MSH-4 fails rows 5-6; ``reason`` is MSH4_MISSING or MSH4_SYNTAX."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class RegistryInvalid(GatewayError):
    """A registry file failed validation; the text names the entry and field."""


class SoapError(GatewayError):
    """A SOAP request that cannot be unwrapped (bad XML, wrong shape, hostile DTD)."""


class KafkaUnavailable(GatewayError):
    """A record could not be stored in Kafka (timeout or broker error)."""


class ConfigError(GatewayError):
    """Configuration that cannot work (bad value, missing Java/Maven, ...)."""
