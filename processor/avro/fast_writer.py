"""A record schema compiled into one Python function that writes its Avro binary body.

Why: ``fastavro.schemaless_writer`` walks the schema for every record; for an
``AcceptedMessage`` that is ≈ 10 µs, the largest single cost of routing a record. The
writer compiled here writes the same bytes in ≈ 4 µs (``bench/bench_avro.py``, figures in
docs/performance.md): one straight-line function per schema (generated source, kept on
the function as ``.source``), varints from lookup tables, one ``b"".join`` at the end.

fastavro stays the authority. The writer covers only record fields of type ``string``,
``bytes``, ``int``, ``long`` (also with a ``timestamp-millis`` / ``timestamp-micros``
logical type, given as an ``int``), an ``enum``, a ``map`` of strings, and a union of
``null`` with one of those scalars: :func:`compile_writer` returns ``None`` for a schema
with anything else. For a record it cannot write exactly as fastavro would (a missing
field, a value of another Python type, a string that UTF-8 cannot encode, an unknown
enum symbol, a number outside 64 bits) the writer *declines*, returning ``None``, and the
caller hands the record to fastavro, which writes it or raises as it always did. So where
the writer declines the output is fastavro's by construction, and where it does not,
``tests/unit/avro/test_fast_writer.py`` proves the bytes identical to fastavro's
(property tests over both gateway schemas and over generated schemas).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["BodyWriter", "compile_writer", "zigzag_varint"]

# ``writer(record, prefix)``: ``prefix`` + the record's Avro body, or None (declined).
BodyWriter = Callable[[Mapping[str, Any], bytes], "bytes | None"]

_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_TABLE_BITS = 14


def _varint_loop(z: int) -> bytes:
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


# _VARINT[z]: the varint of z < 2**14 (1 or 2 bytes). _GROUP[x]: x < 2**14 as two varint
# bytes that both carry the continuation bit (a low 14-bit group of a larger number).
_VARINT = tuple(_varint_loop(z) for z in range(1 << _TABLE_BITS))
_GROUP = tuple(bytes(((x & 0x7F) | 0x80, (x >> 7) | 0x80)) for x in range(1 << _TABLE_BITS))
_SIZE_LIMIT = 1 << (_TABLE_BITS - 1)  # lengths below this: _VARINT[n << 1] (zigzag of n >= 0)


def zigzag_varint(n: int) -> bytes:
    """Avro's ``long`` encoding of ``n`` (zigzag, then base-128 varint); OverflowError
    outside 64 bits, TypeError for a non-integer (the writer then declines)."""
    z = (n << 1) ^ (n >> 63)
    if z < 1 << 14:
        if z < 0:
            raise OverflowError("below the Avro long range")
        return _VARINT[z]
    if z < 1 << 28:
        return _GROUP[z & 0x3FFF] + _VARINT[z >> 14]
    if z < 1 << 42:
        return b"".join((_GROUP[z & 0x3FFF], _GROUP[(z >> 14) & 0x3FFF], _VARINT[z >> 28]))
    if z < 1 << 56:  # e.g. epoch microseconds
        return b"".join(
            (_GROUP[z & 0x3FFF], _GROUP[(z >> 14) & 0x3FFF], _GROUP[(z >> 28) & 0x3FFF], _VARINT[z >> 42])
        )
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise OverflowError("outside the Avro long range")
    return _varint_loop(z)


def _write_string_map(value: Any) -> bytes:
    """A ``map`` of ``string``: one block of all entries, then the empty block (fastavro's layout)."""
    if value.__class__ is not dict:
        raise TypeError("not a dict")
    if not value:
        return b"\x00"
    parts = [zigzag_varint(len(value))]
    for key, item in value.items():
        k, v = key.encode(), item.encode()
        parts += (
            _VARINT[n << 1] if (n := len(k)) < _SIZE_LIMIT else zigzag_varint(n),
            k,
            _VARINT[n << 1] if (n := len(v)) < _SIZE_LIMIT else zigzag_varint(n),
            v,
        )
    parts.append(b"\x00")
    return b"".join(parts)


_SCALARS = frozenset({"string", "bytes", "int", "long"})
_TIMESTAMPS = frozenset({"timestamp-millis", "timestamp-micros"})
# What a declined record raises inside the generated function (caught there: None).
_DECLINE = (KeyError, AttributeError, TypeError, ValueError, OverflowError, UnicodeEncodeError)


def _scalar(schema: Any) -> str | None:
    """``string`` / ``bytes`` / ``long`` (int and timestamps too) for a scalar the writer covers."""
    if isinstance(schema, dict) and schema.get("type") == "long" and schema.get("logicalType") in _TIMESTAMPS:
        return "long"
    if isinstance(schema, dict) and set(schema) == {"type"}:
        schema = schema["type"]
    if isinstance(schema, str) and schema in _SCALARS:
        return "long" if schema == "int" else schema
    return None


def _scalar_code(kind: str, value: str, var: str) -> tuple[list[str], list[str]]:
    """Statements and output parts writing ``value`` (an expression) as ``kind``."""
    load = [f"{var} = {value}"] if value != var else []
    if kind == "long":  # exactly an int: a bool or a float is declined (fastavro's unions tell them apart)
        return [*load, f"if {var}.__class__ is not int: raise TypeError", f"{var} = _long({var})"], [var]
    if kind == "string":
        statements = [f"{var} = {value}.encode()"]
    else:  # bytes: other bytes-like values (bytearray, memoryview) are declined
        statements = [*load, f"if not isinstance({var}, bytes): raise TypeError"]
    size = f"_VARINT[n << 1] if (n := len({var})) < _SIZE_LIMIT else _long(n)"
    return [*statements, f"{var}_size = {size}"], [f"{var}_size", var]


def _field_code(
    index: int, name: str, schema: Any, env: dict[str, Any]
) -> tuple[list[str], list[str]] | None:
    """Statements and output parts for one field, or None when the writer does not cover it."""
    value, var = f"record[{name!r}]", f"f{index}"
    kind = _scalar(schema)
    if kind is not None:
        return _scalar_code(kind, value, var)
    if isinstance(schema, dict) and schema.get("type") == "enum":
        env[f"_enum{index}"] = {symbol: _VARINT[i << 1] for i, symbol in enumerate(schema["symbols"])}
        return [f"{var} = _enum{index}[{value}]"], [var]
    if isinstance(schema, dict) and schema.get("type") == "map" and _scalar(schema.get("values")) == "string":
        return [f"{var} = _map({value})"], [var]
    if isinstance(schema, list) and len(schema) == 2 and "null" in schema:
        branch = schema[1 - schema.index("null")]
        kind = _scalar(branch)
        if kind is None:
            return None
        inner, parts = _scalar_code(kind, var, var)
        null_index, some_index = _VARINT[schema.index("null") << 1], _VARINT[schema.index(branch) << 1]
        return [
            f"{var} = {value}",
            f"if {var} is None:",
            f"    {var}_branch = {null_index!r}",
            *(f"    {part} = b''" for part in parts),
            "else:",
            f"    {var}_branch = {some_index!r}",
            *(f"    {line}" for line in inner),
        ], [f"{var}_branch", *parts]
    return None


def compile_writer(schema: Mapping[str, Any]) -> BodyWriter | None:
    """The body writer for a parsed record schema (``fastavro.parse_schema`` output), or
    None when a field has a type the writer does not cover (fastavro then writes them all)."""
    if not isinstance(schema, Mapping) or schema.get("type") != "record":
        return None
    env: dict[str, Any] = {
        "_VARINT": _VARINT,
        "_SIZE_LIMIT": _SIZE_LIMIT,
        "_long": zigzag_varint,
        "_map": _write_string_map,
        "_DECLINE": _DECLINE,
    }
    body: list[str] = []
    parts: list[str] = ["prefix"]
    for index, field in enumerate(schema.get("fields", ())):
        code = _field_code(index, field["name"], field["type"], env)
        if code is None:
            return None
        body += code[0]
        parts += code[1]
    source = "\n".join(
        [
            "def write(record, prefix=b''):",
            "    try:",
            *(f"        {line}" for line in body),
            "    except _DECLINE:",
            "        return None",
            f"    return b''.join(({', '.join(parts)},))",
        ]
    )
    exec(compile(source, f"<avro writer {schema.get('name', '?')}>", "exec"), env)
    writer = env["write"]
    writer.source = source
    return writer
