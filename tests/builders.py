"""Builders for test inputs: HL7 messages and registry documents (fake data only).

One place for the small messages and registries tests make up on the spot, next to
the fixed sample messages of ``tests.corpus`` (``seed_message``, ``load``), in the
spirit of python-hl7's shared sample corpus. Unit and integration tests both import
from here; nothing here talks to Kafka or starts a process.

Messages:

* ``hl7_message`` - ADT^A01 / ORU^R01 v2.4 from PAS (the stream tests' traffic),
  optionally padded to a size; ``kind="PID"`` is the same MSH with one short PID.
* ``adt_a01`` - a small ADT^A01 v2.5 from SENDAPP with MSH-4 given as text (decision
  and explain tests), with a choice of segment separator and MSH-15.

Registries (argon2id hashes use cheap parameters; the processor never needs them to
be strong in tests):

* ``registry_yaml`` / ``write_registry`` - the edge tests' registry (login checks
  use ``SEED_USER``/``SEED_PASSWORD``/``PASSWORD`` and ``basic``).
* ``registry_text`` / ``REGISTRY_YAML`` - the stream tests' registry.
* ``cheap_hash`` / ``PASSWORD_HASH`` - a cheap hash of any password, and a fixed one
  of "testing" for registries whose logins are never checked.
"""

from __future__ import annotations

from base64 import b64encode
from pathlib import Path

from argon2 import Type
from argon2.profiles import Parameters

from processor.registry.credentials import hash_password

__all__ = [
    "CHEAP",
    "PASSWORD",
    "PASSWORD_HASH",
    "REGISTRY_YAML",
    "SEED_PASSWORD",
    "SEED_USER",
    "adt_a01",
    "basic",
    "cheap_hash",
    "hl7_message",
    "registry_text",
    "registry_yaml",
    "write_registry",
]

# --------------------------------------------------------------------------- messages


def hl7_message(
    msh4: bytes = b"trustalias{trustalias}",
    control_id: bytes = b"MSG00001",
    *,
    kind: str = "ADT",
    size: int = 0,
) -> bytes:
    """An ADT^A01 or ORU^R01 v2.4 message (CR-separated), padded with NTE text to ~``size`` bytes.

    ``kind="PID"``: the ADT^A01 MSH followed by a single short PID segment.
    """
    if kind == "ADT":
        msh9 = b"ADT^A01^ADT_A01"
        body = (
            b"EVN|A01|20240115103000\r"
            b"PID|1||ZZT0000001^^^TRUST^MR||ZZTESTPATIENT^ZZTESTFIRST||19700101|F\r"
            b"PV1|1|I|WARD1^BAY1^BED1\r"
        )
    elif kind == "PID":
        msh9 = b"ADT^A01^ADT_A01"
        body = b"PID|1||ZZT0000001^^^TRUST^MR||ZZTESTPATIENT^ZZTESTFIRST\r"
    else:
        msh9 = b"ORU^R01^ORU_R01"
        body = (
            b"PID|1||ZZT0000001^^^TRUST^MR||ZZTESTPATIENT^ZZTESTFIRST||19700101|F\r"
            b"OBR|1||LAB123|CBC^Full blood count\r"
            b"OBX|1|NM|HB^Haemoglobin||135|g/L|115-165|N|||F\r"
        )
    msg = (
        b"MSH|^~\\&|PAS|"
        + msh4
        + b"|PKB|PKB|20240115103000||"
        + msh9
        + b"|"
        + control_id
        + b"|P|2.4\r"
        + body
    )
    n = 1
    while len(msg) < size:
        msg += b"NTE|%d||Synthetic note text for a fake patient, no real data here.\r" % n
        n += 1
    return msg


def adt_a01(
    msh4: str,
    *,
    control_id: str = "CTRL-4711",
    sep: str = "\r",
    msh15: str = "",
    patient: str = "ZZPATIENTNAMEZZ^TEST",
) -> bytes:
    """A small ADT^A01 v2.5 with MSH-4 as given (verbatim, already escaped) and PID-5 ``patient``."""
    msh = f"MSH|^~\\&|SENDAPP|{msh4}|PKB|PKB|20240101120000||ADT^A01^ADT_A01|{control_id}|P|2.5"
    if msh15:
        msh += f"|||{msh15}|NE"
    segments = [
        msh,
        "EVN|A01|20240101120000",
        f"PID|1||9990000001^^^NHS^NH||{patient}||19700101|U",
    ]
    return (sep.join(segments) + sep).encode()


# -------------------------------------------------------------------------- registries

# Cheap argon2id for tests only (the production floor costs ~35 ms per cold check).
CHEAP = Parameters(
    type=Type.ID, version=19, salt_len=16, hash_len=32, time_cost=1, memory_cost=64, parallelism=1
)

# A real argon2id hash of "testing" (m=8, t=1, p=1), for registries whose logins are never checked.
PASSWORD_HASH = (
    "$argon2id$v=19$m=8,t=1,p=1$SnMS2d9rx+FyL0jKo7ZPBg$kKWwPqyZB/qNQZR/L0B6wiDyujNe7apV6zzDB30QOFs"
)

SEED_USER = "partner_mailco"
SEED_PASSWORD = "testing"
PASSWORD = "s3cret-pw"

_HASHES: dict[tuple[str, int], str] = {}


def cheap_hash(password: str, *, memory_cost: int = 8) -> str:
    """An argon2id hash of ``password`` with t=1, p=1 and ``memory_cost`` KiB (cached per process)."""
    key = (password, memory_cost)
    if key not in _HASHES:
        parameters = Parameters(
            type=Type.ID,
            version=19,
            salt_len=16,
            hash_len=32,
            time_cost=1,
            memory_cost=memory_cost,
            parallelism=1,
        )
        _HASHES[key] = hash_password(password, parameters=parameters)
    return _HASHES[key]


def _edge_hash(password: str) -> str:
    return cheap_hash(password, memory_cost=CHEAP.memory_cost)


def registry_yaml() -> str:
    """The edge tests' registry. Customers trust-1 (trustalias), trust-2 (otheralias,
    delegates to trust-1), trust-3 (thirdalias, no grants), trust-off (inactive); partner
    mailco (seed) authorised by trust-1 and trust-3; an inactive partner; a partner limited
    to TEST-NET-3; a customer login for trust-1."""
    return f"""
customers:
  - id: trust-1
    alias: trustalias
    login:
      username: trust_user
      password_hash: "{_edge_hash(PASSWORD)}"
  - id: trust-2
    alias: otheralias
    authorised_connectors: [trust-1]
  - id: trust-3
    alias: thirdalias
  - id: trust-off
    alias: offalias
    active: false
partners:
  - id: mailco
    username: {SEED_USER}
    password_hash: "{_edge_hash(SEED_PASSWORD)}"
    authorised_by: [trust-1, trust-off]
  - id: oldco
    active: false
    username: partner_old
    password_hash: "{_edge_hash(PASSWORD)}"
    authorised_by: [trust-1]
  - id: netco
    username: partner_net
    password_hash: "{_edge_hash(PASSWORD)}"
    allowed_networks: ["203.0.113.0/24"]
    authorised_by: [trust-1]
"""


def write_registry(directory: Path) -> Path:
    """``registry_yaml()`` written to ``directory/registry.yaml``."""
    path = directory / "registry.yaml"
    path.write_text(registry_yaml())
    return path


def basic(user: str, password: str) -> str:
    """An HTTP Basic ``Authorization`` header value."""
    return "Basic " + b64encode(f"{user}:{password}".encode()).decode()


#: The stream tests' registry: trust-1 (lets trust-3 connect for it), trust-2, trust-3
#: (conalias), trust-off (inactive), cust-login (a customer login); partner mailco
#: authorised by trust-1 and trust-3 (plus ``{extra_grants}``), inactive partner sleepy.
REGISTRY_YAML = f"""\
customers:
  - id: trust-1
    alias: trustalias
    authorised_connectors: [trust-3]
  - id: trust-2
    alias: otheralias
  - id: trust-3
    alias: conalias
  - id: trust-off
    alias: offalias
    active: false
  - id: cust-login
    alias: custalias
    login:
      username: cust_user
      password_hash: "{PASSWORD_HASH}"
partners:
  - id: mailco
    active: true
    username: partner_mailco
    password_hash: "{PASSWORD_HASH}"
    authorised_by: [trust-1, trust-3{{extra_grants}}]
  - id: sleepy
    active: false
    username: partner_sleepy
    password_hash: "{PASSWORD_HASH}"
    authorised_by: [trust-1]
"""


def registry_text(*, grant_trust1: bool = True, extra_grants: str = "") -> str:
    """``REGISTRY_YAML`` with extra grants for mailco, or without its trust-1 grant."""
    text = REGISTRY_YAML.replace("{extra_grants}", extra_grants)
    if not grant_trust1:
        text = text.replace("authorised_by: [trust-1, trust-3", "authorised_by: [trust-3", 1)
    return text
