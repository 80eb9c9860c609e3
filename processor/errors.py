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
    """The bytes are not a readable HL7 v2 message (decision row 4)."""

    reason = Reason.MALFORMED_HL7


class NoMshSegment(MalformedHl7):
    """No MSH segment at all: the edge answers 400 and stores nothing."""


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
