"""Every exception the gateway raises on purpose, in one hierarchy.

Exception texts never carry message content (patient data): they name fields,
positions and ids only.

``exit_status`` is what a command exits with when one of these ends it
(:func:`processor.cli.main` prints one ``hl7-processor: <text>`` line, no traceback)::

    GatewayError                     1 unless a branch says otherwise
    ├── InputError                   2  input the gateway cannot use
    │   ├── MalformedHl7             (decision row 4)
    │   │   └── NoMshSegment
    │   ├── Msh4Error                (decision rows 5-6)
    │   ├── SoapError
    │   ├── BadLength                (edge request: 400)
    │   ├── BodyTooLarge             (edge request: 413)
    │   ├── RegistryInvalid
    │   └── UndecodableValue         (also a ValueError)
    ├── ConfigError                  2  settings (or their environment) that cannot work
    │   └── SchemaRegistryUnavailable
    ├── KafkaUnavailable             2  Kafka cannot be asked (see the class)
    └── RuntimeFailure               1  good input, but the work failed
        ├── StreamFatalError
        ├── SessionError             (a Kafka transaction call; the loop recovers)
        │   └── RecordTooLarge
        ├── SessionStopped
        ├── AuthenticatorBusy        (edge: 503)
        ├── OverBudget               (edge: 503)
        ├── AvroEncodeError          (also a ValueError)
        └── CommandFailed
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from processor.reasons import Reason

if TYPE_CHECKING:
    from processor.stream.txn_errors import TxnAction

__all__ = [
    "GatewayError",
    "InputError",
    "MalformedHl7",
    "NoMshSegment",
    "Msh4Error",
    "SoapError",
    "BadLength",
    "BodyTooLarge",
    "RegistryInvalid",
    "UndecodableValue",
    "ConfigError",
    "SchemaRegistryUnavailable",
    "KafkaUnavailable",
    "RuntimeFailure",
    "StreamFatalError",
    "SessionError",
    "RecordTooLarge",
    "SessionStopped",
    "AuthenticatorBusy",
    "OverBudget",
    "AvroEncodeError",
    "CommandFailed",
]


class GatewayError(Exception):
    """Base of every error this package raises on purpose."""

    exit_status: int = 1


# ------------------------------------------------------------------ input: exit 2


class InputError(GatewayError):
    """Input the gateway cannot use: message bytes, a request, a registry file, a
    command-line value."""

    exit_status = 2


class MalformedHl7(InputError):
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


class Msh4Error(InputError):
    """MSH-4 fails rows 5-6; ``reason`` is MSH4_MISSING or MSH4_SYNTAX."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class SoapError(InputError):
    """A SOAP request that cannot be unwrapped (bad XML, wrong shape, hostile DTD)."""


class BadLength(InputError):
    """``Content-Length`` is not a non-negative integer (400)."""


class BodyTooLarge(InputError):
    """The body is over the per-request limit (413)."""


class RegistryInvalid(InputError):
    """A registry file the gateway cannot use (unreadable, or refused by validation).

    ``errors`` lists every problem found, each naming the entry and field, e.g.
    ``customers[2] (id=trust-9).alias: ...``. Given one text (e.g. "registry file ...
    unreadable"), that is the whole message; given the validation errors, the message is
    ``invalid registry: <error>; <error>; ...`` on one line.
    """

    def __init__(self, errors: str | Sequence[str]) -> None:
        if isinstance(errors, str):
            self.errors: tuple[str, ...] = (errors,)
            super().__init__(errors)
        else:
            self.errors = tuple(errors)
            super().__init__("invalid registry: " + "; ".join(self.errors))


class UndecodableValue(InputError, ValueError):
    """Bytes that are not an Avro value this codec can read."""


# ------------------------------------------------------------------ configuration: exit 2


class ConfigError(GatewayError):
    """Configuration that cannot work (bad value, missing setting, missing Java/Maven, ...)."""

    exit_status = 2


class SchemaRegistryUnavailable(ConfigError):
    """The schema registry refused or could not answer a registration or look-up at start-up
    (incompatible schema, unreachable, unauthorised): a configuration problem, exit 2."""


class KafkaUnavailable(GatewayError):
    """Kafka could not store a record, or could not be asked (timeout or broker error).

    The edge answers a failed delivery with an error ACK and never lets this reach the
    command line. A command that cannot reach Kafka to start its work exits 2, as for a
    configuration error: the cause is usually the address or the credentials, and
    ``topics create --check`` keeps 1 for "the topics drifted"."""

    exit_status = 2


# ------------------------------------------------------------------ run time: exit 1


class RuntimeFailure(GatewayError):
    """The input and configuration were usable, but the work failed while it ran."""

    exit_status = 1


class StreamFatalError(RuntimeFailure):
    """The processor cannot continue (fenced by a newer instance, fatal client error)."""


class SessionError(RuntimeFailure):
    """A Kafka transaction call failed. ``action`` is the safe reaction (a
    :class:`processor.stream.txn_errors.TxnAction`), ``name`` the log-safe error name. The
    stream loop recovers from all but a fatal one, which becomes :class:`StreamFatalError`."""

    def __init__(self, action: TxnAction, name: str) -> None:
        super().__init__(name)
        self.action = action
        self.name = name


class RecordTooLarge(SessionError):
    """``produce`` refused one record as larger than the producer allows (nothing was sent)."""


class SessionStopped(RuntimeFailure):
    """Asked to stop while a producer could not be initialised (Kafka unreachable)."""


class AuthenticatorBusy(RuntimeFailure):
    """Too many cold checks queued: the caller should answer "busy, retry", not "bad password"."""


class OverBudget(RuntimeFailure):
    """The edge already holds as many body bytes as it may (503)."""


class AvroEncodeError(RuntimeFailure, ValueError):
    """A record does not match its topic's schema (names the fields, never their values)."""


class CommandFailed(RuntimeFailure):
    """A command could not finish its work (e.g. Kafka refused the ACLs, the port is taken);
    the text says what failed, starting with the command's name."""
