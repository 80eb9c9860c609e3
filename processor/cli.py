"""The ``hl7-processor`` command line (SPEC section 7).

The argument tree lives here; each handler lives in ``processor.commands.*`` and is
imported only when its command runs, so ``hl7-processor explain`` starts fast and
does not load Kafka or HTTP code.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from processor import __version__

__all__ = ["build_parser", "command_failure", "main", "LOG_LEVELS", "JsonLogFormatter", "configure_logging"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _log_level(text: str) -> str:
    """``--log-level`` in any case; anything else is a usage error (exit 2)."""
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"invalid choice: {text!r} (choose from {', '.join(LOG_LEVELS)}; any case)"
        )
    return level


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (ISO-8601 UTC), ``level``, ``logger``, ``message``;
    with an exception also ``exc_type`` and ``traceback`` (the standard one: file, line,
    function and source line per frame, never local variables)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, tz=UTC)
        out: dict[str, object] = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__
            out["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Root logging on stderr, as text or JSON lines (``HL7_LOG_FORMAT``)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format.lower() == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])


def _log_format() -> str:
    """``HL7_LOG_FORMAT`` through ``Settings``. An invalid value of another setting is
    the command's business (it reports it if it uses it): logging then stays text."""
    from pydantic import ValidationError

    from processor.config import load_settings

    try:
        return load_settings().log_format.lower()
    except ValidationError as exc:
        if any(error["loc"] and str(error["loc"][0]) == "log_format" for error in exc.errors()):
            raise
        return "text"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hl7-processor",
        description="HL7 Partner Gateway: edge receiver, exactly-once processor and tools.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=_log_level,
        choices=LOG_LEVELS,
        metavar="LEVEL",
        help=f"{', '.join(LOG_LEVELS)} (any case; default INFO); HL7_LOG_FORMAT=json for JSON lines",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="whole pipeline on one machine (starts Kafka if none configured)")
    run.add_argument("--registry", help="registry YAML (default: HL7_REGISTRY_FILE or the demo registry)")
    run.add_argument("--data-dir", help="local Kafka data directory (kept); default: a temporary one")
    run.set_defaults(handler="processor.commands.run:main")

    edge = sub.add_parser("edge", help="the HTTP/SOAP edge receiver alone")
    edge.add_argument("--host", help="listen address (HL7_EDGE_HOST)")
    edge.add_argument("--port", type=int, help="listen port (HL7_EDGE_PORT)")
    edge.set_defaults(handler="processor.commands.edge:main")

    stream = sub.add_parser("stream", help="one exactly-once processor (consumer-group member)")
    stream.add_argument("--metrics-port", type=int, help="Prometheus port (HL7_METRICS_PORT)")
    stream.add_argument("--transactional-id", help="stable per instance (HL7_TRANSACTIONAL_ID)")
    stream.set_defaults(handler="processor.commands.stream:main")

    kafka = sub.add_parser("kafka", help="a local single-node Apache Kafka (KRaft) in the foreground")
    kafka.add_argument("--port", type=int, default=9092, help="client port (0 = any free port)")
    kafka.add_argument("--data-dir", help="keep data here (default: temporary, removed on exit)")
    kafka.add_argument(
        "--sasl",
        action="store_true",
        help="SASL_PLAINTEXT + SCRAM-SHA-512 with ACLs enforced; creates and prints a "
        "user per role (development only)",
    )
    kafka.set_defaults(handler="processor.commands.kafka:main")

    acls = sub.add_parser("acls", help="least-privilege Kafka ACLs per role (print; --apply creates)")
    acls.add_argument(
        "--apply",
        action="store_true",
        help="create them on HL7_KAFKA_BOOTSTRAP_SERVERS (idempotent); default: print only",
    )
    acls.add_argument(
        "--format",
        choices=("table", "kafka-acls"),
        default="table",
        help="print as a table (default) or as kafka-acls.sh command lines",
    )
    acls.add_argument("--edge-principal", help="default User:hl7-edge")
    acls.add_argument("--processor-principal", help="default User:hl7-processor")
    acls.add_argument("--replay-principal", help="default User:hl7-replay")
    acls.add_argument("--admin-principal", help="default User:hl7-admin")
    acls.add_argument(
        "--transactional-id-prefix",
        help="common prefix of the processors' HL7_TRANSACTIONAL_IDs (default hl7-processor-)",
    )
    acls.set_defaults(handler="processor.commands.acls:main")

    topics = sub.add_parser("topics", help="topic administration")
    topics_sub = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    create = topics_sub.add_parser(
        "create", help="create the three topics, the replay ledger and the dedupe changelog (idempotent)"
    )
    create.add_argument("--partitions", type=int, help="partitions per topic (HL7_TOPIC_PARTITIONS)")
    create.add_argument("--replication-factor", type=int, help="-1 = broker default")
    create.add_argument(
        "--check",
        action="store_true",
        help="create nothing: print one line per difference between the settings and "
        "the existing topics; exit 0 none, 1 drift, 2 configuration error",
    )
    create.set_defaults(handler="processor.commands.topics:create")

    explain = sub.add_parser("explain", help="print the routing decision for one message as JSON")
    explain.add_argument("--registry", required=True, help="registry YAML file")
    explain.add_argument("--principal", required=True, help="registry id of the sender")
    explain.add_argument("message", nargs="?", default="-", help="message file, or - for stdin")
    explain.add_argument(
        "--charset",
        help="the HTTP charset the message was sent with (applies when MSH-18 is empty), e.g. ISO-8859-1",
    )
    explain.set_defaults(handler="processor.commands.explain:main")

    registry = sub.add_parser("registry", help="registry tools")
    registry_sub = registry.add_subparsers(dest="registry_command", required=True, metavar="ACTION")
    hash_pw = registry_sub.add_parser("hash-password", help="read a password, print its argon2id hash")
    hash_pw.set_defaults(handler="processor.commands.registry:hash_password")
    check = registry_sub.add_parser("check", help="validate a registry file")
    check.add_argument("file")
    check.set_defaults(handler="processor.commands.registry:check")

    decode = sub.add_parser("decode", help="print Avro records of a topic as JSON lines")
    decode.add_argument("topic")
    decode.add_argument("--max", type=int, default=None, help="stop after this many records")
    decode.add_argument("--timeout", type=float, default=5.0, help="stop after this long idle (s)")
    decode.add_argument(
        "--no-payload", action="store_true", help="leave the payload field (patient data) out of every line"
    )
    decode.add_argument(
        "--follow",
        action="store_true",
        help="keep reading new records until SIGINT/SIGTERM (exit 0); --timeout is ignored",
    )
    decode.add_argument(
        "--since",
        metavar="TIME",
        help="start at the first record written at or after TIME (ISO-8601, UTC if "
        "no offset; or epoch seconds), per partition",
    )
    decode.add_argument("--partition", type=int, metavar="N", help="read this partition only")
    decode.add_argument("--offset", type=int, metavar="N", help="start at this offset (needs --partition)")
    decode.add_argument(
        "--reason", action="append", metavar="R", help="dead letters with this reason code only (repeatable)"
    )
    decode.add_argument(
        "--principal", action="append", metavar="P", help="records of this principal id only (repeatable)"
    )
    decode.set_defaults(handler="processor.commands.decode:main")

    deadletter = sub.add_parser("deadletter", help="dead-letter tools")
    dl_sub = deadletter.add_subparsers(dest="deadletter_command", required=True, metavar="ACTION")
    replay = dl_sub.add_parser("replay", help="re-publish chosen dead letters to hl7.raw")
    replay.add_argument("--reason", action="append", help="reason code (repeatable)")
    replay.add_argument("--principal", action="append", help="principal id (repeatable)")
    replay.add_argument("--since", help="ISO-8601 time, dead-lettered at or after")
    replay.add_argument("--until", help="ISO-8601 time, dead-lettered before")
    replay.add_argument(
        "--registry",
        help="current registry (default HL7_REGISTRY_FILE): only dead letters it now accepts are replayed",
    )
    replay.add_argument("--force", action="store_true", help="replay without checking the registry")
    replay.add_argument("--execute", action="store_true", help="publish (default: dry run, count only)")
    replay.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    replay.set_defaults(handler="processor.commands.replay:main")
    return parser


def _resolve(target: str) -> Callable[[argparse.Namespace], int | None]:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Whatever ends a command with an exception is reported the same way:
    one ``hl7-processor: <text>`` line on stderr and exit 2 for unusable input or
    configuration, 1 for a failure at run time (:func:`command_failure`); the traceback of
    an unexpected exception only with ``--log-level DEBUG``."""
    args = build_parser().parse_args(argv)
    try:
        configure_logging(args.log_level, _log_format())
        return int(_resolve(args.handler)(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the command line's boundary: one line, an exit status
        status, text, expected = command_failure(exc)
        if not expected:
            if args.log_level == "DEBUG":
                traceback.print_exception(exc, file=sys.stderr)
            else:
                text += "; --log-level DEBUG shows the traceback"
        print(f"hl7-processor: {text}", file=sys.stderr)
        return status


def command_failure(exc: BaseException) -> tuple[int, str, bool]:
    """``(exit status, one-line text, expected)`` for an exception that ended a command.

    Expected: the package's own errors (:mod:`processor.errors`; exit 2 or 1 as the class
    says) and invalid ``HL7_*`` values (exit 2; the text names the variable and the rule
    broken, never the value). Anything else is unexpected: exit 1, the type name only (its
    text might quote data)."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from processor.errors import GatewayError

    if isinstance(exc, GatewayError):
        return exc.exit_status, _one_line(str(exc)) or type(exc).__name__, True
    if isinstance(exc, ValidationError):
        problems = [
            f"HL7_{str(error['loc'][0]).upper() if error['loc'] else '?'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        ]
        return 2, "invalid configuration: " + "; ".join(problems), True
    if isinstance(exc, SettingsError):  # e.g. a .env file that cannot be read
        return 2, f"invalid configuration: {_one_line(str(exc))}", True
    return 1, f"unexpected error: {type(exc).__name__}", False


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


if __name__ == "__main__":
    raise SystemExit(main())
