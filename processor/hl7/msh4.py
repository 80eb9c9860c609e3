"""MSH-4.1 grammar: ``connecting-alias{data-controller-alias}`` (SPEC 3, rows 5-6).

The input is MSH-4.1 already unescaped (``MshHeader.msh4_namespace_id``).
Nothing is trimmed: surrounding whitespace is a syntax error (SPEC 3: "an error,
not trimmed"). That includes a legacy customer value (row 6), which is otherwise
accepted whatever it holds: the SPEC names no exception, and padding is a sender
misconfiguration better refused (an AR the sender sees) than carried silently
into ``sending_facility``. Error details name the rule that failed, never the
value (it is sender-controlled text).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import lru_cache

from processor.errors import Msh4Error
from processor.reasons import Reason

__all__ = ["Msh4Aliases", "parse_msh4", "ALIAS_PATTERN", "is_alias"]

#: Alias syntax shared with the registry (SPEC 3).
ALIAS_PATTERN = r"[A-Za-z0-9._-]+"

_ALIAS_CHARS = string.ascii_letters + string.digits + "._-"


@dataclass(frozen=True, slots=True)
class Msh4Aliases:
    """The two aliases MSH-4.1 stands for; ``legacy`` for a plain customer value, which
    stands for the customer's own alias twice whatever it says."""

    connecting_alias: str
    data_controller_alias: str
    legacy: bool


def is_alias(value: str) -> bool:
    """True when ``value`` matches ``ALIAS_PATTERN`` exactly.

    ``strip`` with the allowed set leaves "" only when every character is
    allowed: linear, and faster than a regex for these short values.
    """
    return bool(value) and value.isascii() and not value.strip(_ALIAS_CHARS)


def parse_msh4(namespace_id: str, *, customer_principal: bool, own_alias: str | None = None) -> Msh4Aliases:
    """Split MSH-4.1 into aliases or raise Msh4Error(MSH4_MISSING | MSH4_SYNTAX).

    ``A{B}`` (aliases of ``ALIAS_PATTERN``) is accepted from anyone. A plain value
    (neither ``{`` nor ``}``) is accepted only from a Customer principal: its legacy
    connection means ``own-alias{own-alias}`` whatever the value (SPEC 3 row 6: a
    customer login may send its facility code, e.g. ``RXH01``); ``own_alias`` is that
    customer's registry alias. Callers that check syntax only may omit it: the value
    then stands in for it. Surrounding whitespace is still MSH4_SYNTAX.
    """
    # A sender uses a handful of alias pairs: almost every message is one cache hit.
    if len(namespace_id) <= _CACHED_MAX_LEN:
        aliases = _split_braced_cached(namespace_id)
    else:
        aliases = _split_braced(namespace_id)
    if aliases is not None:
        return aliases
    if not namespace_id:
        raise Msh4Error(Reason.MSH4_MISSING, "MSH-4.1 is empty")
    if "{" not in namespace_id and "}" not in namespace_id:
        if not customer_principal:
            raise Msh4Error(
                Reason.MSH4_SYNTAX,
                "MSH-4.1 must be connecting-alias{data-controller-alias} for a partner",
            )
        if namespace_id[0].isspace() or namespace_id[-1].isspace():
            raise Msh4Error(Reason.MSH4_SYNTAX, "MSH-4.1 has surrounding whitespace (never trimmed)")
        alias = namespace_id if own_alias is None else own_alias
        return Msh4Aliases(alias, alias, True)  # never cached: it depends on the sender
    raise Msh4Error(
        Reason.MSH4_SYNTAX,
        "MSH-4.1 is not alias{alias} with aliases of [A-Za-z0-9._-]+",
    )


# The cache holds what depends on the value alone: its ``A{B}`` aliases, or ``None`` (not
# ``A{B}``; looked up first, so a hit costs one call). A legacy result is never cached: it
# stands for the sender's own alias, so cached by value it would leak one customer's alias
# to another. Bounded in entries and in key length (sender-controlled).
_CACHED_MAX_LEN = 128


def _split_braced(namespace_id: str) -> Msh4Aliases | None:
    """``A{B}`` as aliases, or ``None`` when ``namespace_id`` is not that."""
    if namespace_id[-1:] != "}":
        return None
    brace = namespace_id.find("{")
    connecting = namespace_id[:brace]
    controller = namespace_id[brace + 1 : -1]
    # brace > 0 also rules out -1 (no "{"): controller would be bogus then.
    if (
        brace > 0
        and controller
        and namespace_id.isascii()
        and not connecting.strip(_ALIAS_CHARS)
        and not controller.strip(_ALIAS_CHARS)
    ):
        return Msh4Aliases(connecting, controller, False)
    return None


_split_braced_cached = lru_cache(maxsize=4096)(_split_braced)
