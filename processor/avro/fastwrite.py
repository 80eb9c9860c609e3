"""A schema-specialised Avro binary writer for the gateway's flat record schemas.

Why: fastavro's generic writer walks the parsed schema for every record (and
validates each union branch); for our ~26-field records that was the largest
per-record cost of the stream processor. :func:`compile_writer` turns one record
schema into straight-line Python once, at codec construction.

It is a *fast path only*: it handles exactly the value types whose encoding is
unambiguous (``str``, ``bytes``, in-range ``int`` - not ``bool`` -, ``None`` for
``["null", T]`` unions, known enum symbols, ``dict[str, str]`` maps) and a record
holding exactly the schema's fields. Anything else raises, and the codec then
encodes with fastavro as before (same bytes, same errors). Bytes are identical
to fastavro's (checked by property tests). Schemas using other types get no
fast writer (``None``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["compile_writer"]

FastWriter = Callable[[Mapping[str, Any]], bytes]

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
# zigzag(n) for 0 <= n < 64 is one byte: 2n.
_SMALL = tuple(bytes((2 * n,)) for n in range(64))
_SMALL_RAW = tuple(bytes((n,)) for n in range(128))


def _varint(n: int) -> bytes:
    """Avro varint of an already zigzag-encoded, non-negative ``n``.

    Straight expressions for the sizes records hold (lengths, offsets: 1-3 bytes;
    epoch-micros timestamps: 8 bytes), a loop for the rest.
    """
    if n < 0x80:
        return _SMALL_RAW[n]
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 0x200000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    if 1 << 49 <= n < 1 << 56:
        return bytes((
            n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21 & 0x7F | 0x80,
            n >> 28 & 0x7F | 0x80, n >> 35 & 0x7F | 0x80, n >> 42 & 0x7F | 0x80, n >> 49,
        ))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _long(n: int) -> bytes:
    """Avro ``long``/``int`` (zigzag varint); the caller checked the range."""
    if 0 <= n < 64:
        return _SMALL[n]
    return _varint((n << 1) ^ (n >> 63))


def _length(n: int) -> bytes:
    return _SMALL[n] if n < 64 else _varint(n << 1)


def _map_of_strings(value: Any) -> bytes:
    if value.__class__ is not dict:
        raise TypeError("not a dict")
    if not value:
        return b"\x00"
    parts = [_long(len(value))]
    for key, item in value.items():
        if key.__class__ is not str or item.__class__ is not str:
            raise TypeError("map entry is not str -> str")
        k = key.encode()
        v = item.encode()
        parts += (_length(len(k)), k, _length(len(v)), v)
    parts.append(b"\x00")
    return b"".join(parts)


def _type_name(schema: Any) -> str | None:
    """``string``/``bytes``/``int``/``long`` (logical types on long allowed), else None."""
    if isinstance(schema, str):
        return schema if schema in ("string", "bytes", "int", "long") else None
    if isinstance(schema, dict):
        base = schema.get("type")
        if base == "long" and schema.get("logicalType") in ("timestamp-micros", "timestamp-millis", None):
            return "long"
        if base in ("string", "bytes", "int") and "logicalType" not in schema:
            return base
    return None


def _emit(lines: list[str], env: dict[str, Any], index: int, schema: Any, value: str, indent: str) -> bool:
    """Append code writing ``value`` of ``schema`` to ``parts``; False if unsupported."""
    kind = _type_name(schema)
    if kind == "string":
        lines += [
            f"{indent}if {value}.__class__ is not str: raise TypeError",
            f"{indent}b = {value}.encode()",
            f"{indent}n = len(b)",
            f"{indent}parts += (_SMALL[n] if n < 64 else _varint(n << 1), b)",
        ]
        return True
    if kind == "bytes":
        lines += [
            f"{indent}if {value}.__class__ is not bytes: raise TypeError",
            f"{indent}n = len({value})",
            f"{indent}parts += (_SMALL[n] if n < 64 else _varint(n << 1), {value})",
        ]
        return True
    if kind in ("int", "long"):
        lo, hi = (_INT_MIN, _INT_MAX) if kind == "int" else (_LONG_MIN, _LONG_MAX)
        lines += [
            f"{indent}if {value}.__class__ is not int or not {lo} <= {value} <= {hi}: raise TypeError",
            f"{indent}parts.append(_SMALL[{value}] if 0 <= {value} < 64 else _varint(({value} << 1) ^ ({value} >> 63)))",
        ]
        return True
    if isinstance(schema, dict) and schema.get("type") == "enum":
        symbols = {s: _long(i) for i, s in enumerate(schema["symbols"])}
        env[f"_enum{index}"] = symbols
        lines.append(f"{indent}parts.append(_enum{index}[{value}])")  # KeyError / TypeError
        return True
    if isinstance(schema, dict) and schema.get("type") == "map" and schema.get("values") == "string":
        lines.append(f"{indent}parts.append(_map_of_strings({value}))")
        return True
    if isinstance(schema, list) and len(schema) == 2 and schema[0] == "null":
        inner: list[str] = []
        if not _emit(inner, env, index, schema[1], value, indent + "    "):
            return False
        lines += [f"{indent}if {value} is None:", f"{indent}    parts.append(b'\\x00')", f"{indent}else:",
                  f"{indent}    parts.append(b'\\x02')", *inner]
        return True
    return False


def compile_writer(parsed_schema: Any) -> FastWriter | None:
    """A writer for records of ``parsed_schema`` (fastavro-parsed), or None if unsupported.

    The writer raises (any exception) for a record it cannot encode exactly as
    fastavro would; the caller must then use fastavro.
    """
    if not isinstance(parsed_schema, dict) or parsed_schema.get("type") != "record":
        return None
    fields = parsed_schema.get("fields", ())
    env: dict[str, Any] = {
        "_SMALL": _SMALL, "_varint": _varint, "_long": _long, "_map_of_strings": _map_of_strings,
    }
    lines = [
        "def write(r):",
        f"    if r.__class__ is not dict or len(r) != {len(fields)}: raise TypeError",
        "    parts = []",
    ]
    for i, field in enumerate(fields):
        lines.append(f"    v = r[{field['name']!r}]")  # KeyError: a field is missing
        if not _emit(lines, env, i, field["type"], "v", "    "):
            return None
    lines.append("    return b''.join(parts)")
    exec(compile("\n".join(lines), f"<avro writer {parsed_schema.get('name')}>", "exec"), env)  # noqa: S102
    writer: FastWriter = env["write"]
    return writer
