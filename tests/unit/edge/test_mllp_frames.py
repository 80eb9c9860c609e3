"""MLLP framing (processor.edge.mllp_frames): any split of a byte stream gives the same frames."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.edge.mllp_frames import END_BLOCK, START_BLOCK, FrameReader, frame
from processor.errors import BodyTooLarge

# message bytes never hold the end block (0x1C 0x0D); anything else may appear, 0x0B and 0x1C too
messages = st.binary(max_size=60).filter(lambda m: END_BLOCK not in m and not m.endswith(b"\x1c"))
noise = st.binary(max_size=10).filter(lambda b: START_BLOCK not in b)


def feed_all(reader: FrameReader, chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for chunk in chunks:
        out += reader.feed(chunk)
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(st.lists(st.tuples(noise, messages), max_size=8), st.lists(st.integers(0, 10_000), max_size=12))
def test_any_split_gives_the_same_frames_and_skips_noise(items: list[tuple[bytes, bytes]], cuts: list[int]) -> None:
    stream = b"".join(n + frame(m) for n, m in items)
    reader = FrameReader(max_bytes=100)
    assert feed_all(reader, split(stream, cuts)) == [m for _n, m in items]
    assert reader.skipped == sum(len(n) for n, _m in items)
    assert reader.pending == 0 and not reader.in_frame


@given(messages, st.lists(st.integers(0, 200), max_size=8))
def test_byte_by_byte_equals_one_read(message: bytes, cuts: list[int]) -> None:
    data = frame(message) * 3
    one = FrameReader(100).feed(data)
    assert one == feed_all(FrameReader(100), [data[i : i + 1] for i in range(len(data))]) == [message] * 3


def test_limit_is_exact() -> None:
    assert FrameReader(5).feed(frame(b"12345")) == [b"12345"]
    with pytest.raises(BodyTooLarge):
        FrameReader(5).feed(frame(b"123456"))


@given(st.integers(1, 50), st.lists(st.integers(0, 10_000), max_size=10))
def test_over_limit_detected_in_any_split_without_holding_more(limit: int, cuts: list[int]) -> None:
    data = START_BLOCK + b"x" * (limit + 1) + b"\x1c" + b"y" * 5000
    reader = FrameReader(limit)
    with pytest.raises(BodyTooLarge):
        for chunk in split(data, cuts):
            reader.feed(chunk)
            assert reader.pending <= limit + 1  # never holds more than the limit (+ a possible 0x1C)


def test_end_block_split_across_reads() -> None:
    reader = FrameReader(100)
    assert reader.feed(START_BLOCK + b"MSH|x\x1c") == []
    assert reader.pending == 6 and reader.in_frame
    assert reader.feed(b"\r" + START_BLOCK + b"MSH|y" + END_BLOCK) == [b"MSH|x", b"MSH|y"]


def test_message_at_the_limit_with_end_block_in_the_next_read() -> None:
    reader = FrameReader(3)
    assert reader.feed(START_BLOCK + b"abc\x1c") == []  # 4 held, the 0x1C may start the end block
    assert reader.feed(b"\r") == [b"abc"]


def test_lone_fs_inside_a_message_is_content() -> None:
    assert FrameReader(100).feed(frame(b"a\x1cb\x0bc")) == [b"a\x1cb\x0bc"]
