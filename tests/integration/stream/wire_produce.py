"""Write records whose header *names* are arbitrary bytes, over the Kafka wire protocol.

Why by hand: every client library (librdkafka, the Java client) encodes header names as
UTF-8 text, so none can produce the poison record an upstream gateway with a buggy
encoder could: a header name that is not UTF-8. Produce v3 (the oldest version Kafka 4
still serves), one uncompressed v2 record batch, ``acks=-1``. Test support only.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Sequence

import crc32c

__all__ = ["produce_with_raw_header_names"]

Headers = Sequence[tuple[bytes, bytes | None]]


def _varint(n: int) -> bytes:
    """Zig-zag varint (Kafka record fields)."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte = z & 0x7F
        z >>= 7
        if z:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bytes_field(value: bytes | None) -> bytes:
    return _varint(-1) if value is None else _varint(len(value)) + value


def _record(delta: int, key: bytes | None, value: bytes, headers: Headers) -> bytes:
    body = b"\x00" + _varint(0) + _varint(delta) + _bytes_field(key) + _bytes_field(value)
    body += _varint(len(headers))
    for name, header_value in headers:
        body += _varint(len(name)) + name + _bytes_field(header_value)
    return _varint(len(body)) + body


def _batch(records: Sequence[tuple[bytes | None, bytes, Headers]]) -> bytes:
    now_ms = int(time.time() * 1000)
    encoded = b"".join(_record(i, k, v, h) for i, (k, v, h) in enumerate(records))
    # attributes, last offset delta, first/max timestamp, producer id/epoch, base sequence, count
    after_crc = struct.pack(">hiqqqhii", 0, len(records) - 1, now_ms, now_ms, -1, -1, -1, len(records)) + encoded
    inner = struct.pack(">ibI", 0, 2, crc32c.crc32c(after_crc)) + after_crc  # leader epoch, magic, CRC-32C
    return struct.pack(">qi", 0, len(inner)) + inner


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def produce_with_raw_header_names(
    bootstrap: str, topic: str, partition: int, records: Sequence[tuple[bytes | None, bytes, Headers]]
) -> None:
    """Append ``records`` (key, value, headers) to ``topic``/``partition``; raises unless
    the broker reports success. ``bootstrap`` must be the partition leader (one broker).
    A topic created a moment ago may have no leader yet: retried for a few seconds."""
    error_code = -1
    for _ in range(50):
        error_code = _produce_once(bootstrap, topic, partition, records)
        if error_code not in _RETRIABLE:
            break
        time.sleep(0.2)
    if error_code != 0:
        raise RuntimeError(f"produce to {topic}[{partition}] failed with Kafka error code {error_code}")


# UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER
_RETRIABLE = frozenset({3, 5, 6})


def _produce_once(
    bootstrap: str, topic: str, partition: int, records: Sequence[tuple[bytes | None, bytes, Headers]]
) -> int:
    batch = _batch(records)
    body = (
        struct.pack(">h", -1)  # no transactional id
        + struct.pack(">hi", -1, 10_000)  # acks=all, timeout
        + struct.pack(">i", 1) + _string(topic)
        + struct.pack(">i", 1) + struct.pack(">ii", partition, len(batch)) + batch
    )
    request = struct.pack(">hhi", 0, 3, 1) + _string("wire-produce") + body  # Produce v3, correlation 1
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _read(sock, 4))[0]
        response = _read(sock, size)
    # correlation id, topic count, topic name, partition count, partition, error code
    offset = 4 + 4
    name_len = struct.unpack_from(">h", response, offset)[0]
    offset += 2 + name_len + 4
    _partition, error_code = struct.unpack_from(">ih", response, offset)
    return int(error_code)


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data
