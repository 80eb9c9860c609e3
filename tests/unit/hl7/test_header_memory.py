"""Memory of read_header, salvage_header and payload_decodes on hostile and big messages.

Measured with tracemalloc (peak of Python allocations during one call, above what was
allocated before it; the input itself is built beforehand and not counted). SPEC 4: no
body up to the 10 MiB limit may cost more than a few times its size in memory. Before
the header reader bounded its splits, 10 MiB of field separators cost about 10x (read)
and 18x (salvage) the input: one string object per empty field.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

from processor.errors import MalformedHl7
from processor.hl7 import charset as charset_module
from processor.hl7.charset import payload_decodes
from processor.hl7.header import read_header, salvage_header

MiB = 1 << 20
SIZE = 10 * MiB
HEAD = b"MSH|^~\\&|LAB|"
TAIL = b"|PKB|PKBFAC|20240102030405||ORU^R01^ORU_R01|CTL1|P|2.5"
NORMAL_MSH = HEAD + b"trustalias{trustalias}" + TAIL

pytestmark = pytest.mark.timeout(120)


def _peak(fn: Callable[[], object]) -> int:
    """Peak bytes allocated while ``fn`` runs, above what was allocated before it."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    del result
    return peak


def _read(data: bytes) -> Callable[[], object]:
    def call() -> object:
        try:
            return read_header(data)
        except MalformedHl7 as exc:  # (a), (b): MSH-9.1 empty; the cost is what is measured
            return exc
    return call


HOSTILE = {
    # (a) the whole message is field separators after MSH-1/MSH-2 (single segment)
    "field separators": lambda: b"MSH|^~\\&" + b"|" * SIZE,
    # (a') the same, followed by another segment (so the MSH segment is a copy)
    "field separators + segment": lambda: b"MSH|^~\\&" + b"|" * SIZE + b"\rPID|1",
    # (b) MSH-9 made of component separators (MSH-9.1 empty, then non-empty)
    "MSH-9 of ^": lambda: HEAD + b"F|R|RF|20240102||" + b"^" * SIZE + b"|CTL1|P|2.5\rPID|1",
    "MSH-9 ADT then ^": lambda: HEAD + b"F|R|RF|20240102||ADT" + b"^" * SIZE + b"|CTL1|P|2.5\rPID|1",
    # (c) a 10 MiB MSH-4, with and without a segment after it, and made of "^"
    "MSH-4 of 10 MiB": lambda: HEAD + b"F" * SIZE + TAIL + b"\rPID|1",
    "MSH-4 of 10 MiB, one segment": lambda: HEAD + b"F" * SIZE + TAIL,
    "MSH-4 of ^": lambda: HEAD + b"^" * SIZE + TAIL + b"\rPID|1",
}


@pytest.fixture(params=sorted(HOSTILE))
def hostile(request: pytest.FixtureRequest) -> Iterator[bytes]:
    yield HOSTILE[request.param]()


def test_hostile_header_read_costs_at_most_three_times_its_size(hostile: bytes) -> None:
    peak = _peak(_read(hostile))
    assert peak <= 3 * len(hostile), f"read_header peak {peak / MiB:.1f} MiB"


def test_hostile_header_salvage_costs_at_most_three_times_its_size(hostile: bytes) -> None:
    peak = _peak(lambda: salvage_header(hostile))
    assert peak <= 3 * len(hostile), f"salvage_header peak {peak / MiB:.1f} MiB"


def test_hostile_headers_still_read_as_before() -> None:
    fs = salvage_header(HOSTILE["field separators"]())
    assert fs is not None and fs.message_type == "" and fs.character_set is None
    msh9 = salvage_header(HOSTILE["MSH-9 of ^"]())
    assert msh9 is not None and msh9.message_type == "" and msh9.trigger_event is None
    adt = read_header(HOSTILE["MSH-9 ADT then ^"]())
    assert (adt.message_type, adt.trigger_event, adt.message_structure) == ("ADT", None, None)
    big = read_header(HOSTILE["MSH-4 of 10 MiB"]())
    assert len(big.sending_facility_raw) == SIZE and big.msh4_namespace_id == big.sending_facility_raw
    carets = read_header(HOSTILE["MSH-4 of ^"]())
    assert carets.msh4_namespace_id == "" and len(carets.sending_facility_raw) == SIZE


@pytest.mark.parametrize(
    "framing", [b"", b"\x0b", b"\xef\xbb\xbf\x0b", b"\r\n" * 100], ids=["plain", "mllp", "bom", "blank lines"]
)
def test_big_payload_behind_a_small_msh_costs_nothing(framing: bytes) -> None:
    data = framing + NORMAL_MSH + b"\rPID|1\rOBX|1|ED|PDF||^application^pdf^Base64^" + b"QUFB" * (SIZE // 4) + b"\r"
    for fn in (_read(data), lambda: salvage_header(data)):
        peak = _peak(fn)
        assert peak <= 64 * 1024, f"peak {peak} bytes"  # the header's few small strings
    assert read_header(data).msh4_namespace_id == "trustalias{trustalias}"


def test_fields_beyond_the_split_limit_read_as_a_full_split() -> None:
    """Only MSH-1..MSH-18 and MSH-9.1..9.3 are split off: the values must not change."""
    msh = HEAD + b"F|R|RF|20240102||ADT^A01^ADT_A01^X^Y|CTL1|P|2.5^x|||AL|NE||UNICODE UTF-8~8859/1|EN|ZZ|a|b|c"
    for reader in (read_header, salvage_header):
        h = reader(msh + b"\rPID|1")
        assert h is not None
        assert (h.message_type, h.trigger_event, h.message_structure) == ("ADT", "A01", "ADT_A01")
        assert (h.accept_ack_type, h.application_ack_type) == ("AL", "NE")
        assert h.character_set == "UNICODE UTF-8" and h.version_id == "2.5"


# --------------------------------------------------------------- payload_decodes


@pytest.mark.parametrize(
    ("char", "character_set"),
    [("é", "UNICODE UTF-8"), ("中", "UNICODE UTF-8"), ("😀", None), ("Ж", "8859/5")],
)
def test_payload_decodes_does_not_build_the_text(char: str, character_set: str | None) -> None:
    codec = "iso8859-5" if character_set == "8859/5" else "utf-8"
    unit = char.encode(codec)
    data = NORMAL_MSH + b"\rOBX|1|TX|||" + unit * (SIZE // len(unit))
    peak = _peak(lambda: payload_decodes(data, character_set))
    assert payload_decodes(data, character_set)
    # One chunk decoded at a time (a whole decode: 10-40 MiB of text, up to 60 MiB at peak).
    assert peak <= 2 * MiB, f"payload_decodes peak {peak / MiB:.1f} MiB"


CHUNK = charset_module._DECODE_CHUNK


@pytest.mark.parametrize(
    ("char", "shift"), [(c, n) for c in ("é", "€", "😀") for n in range(1, len(c.encode()))]
)
def test_character_split_across_a_chunk_boundary_still_decodes(char: str, shift: int) -> None:
    unit = char.encode("utf-8")
    prefix = b"MSH|^~\\&|" + b"a" * (CHUNK - 9 - shift)  # the character straddles the boundary
    data = prefix + unit + b"tail" * 10
    assert data[: CHUNK] == prefix + unit[:shift]
    assert payload_decodes(data, None) is True
    assert payload_decodes(data, "ASCII") is False


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (b"", True),
        (b"\xff", False),  # an invalid byte at the very end
        (b"\xc3", False),  # a UTF-8 sequence cut off at the very end
        (b"\xe2\x82", False),
        (b"\xc3\xa9", True),
    ],
)
@pytest.mark.parametrize("size", [CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK])
def test_end_of_a_multi_chunk_payload(tail: bytes, expected: bool, size: int) -> None:
    data = b"MSH|^~\\&|" + "é".encode() * ((size - 9) // 2) + b"x" * ((size - 9) % 2) + tail
    assert payload_decodes(data, None) is expected
    assert payload_decodes(data, "UNICODE UTF-8") is expected
    assert payload_decodes(data, "8859/1") is True  # every byte is a Latin-1 character


@pytest.mark.parametrize("codec_name", ["UNICODE UTF-8", "8859/1", "8859/5", "KS X 1001", "ASCII"])
def test_chunked_answers_equal_a_whole_decode(monkeypatch: pytest.MonkeyPatch, codec_name: str) -> None:
    """Tiny chunks put every kind of boundary inside characters: same answers as decoding whole."""
    monkeypatch.setattr(charset_module, "_DECODE_CHUNK", 3)
    codec = charset_module.codec_for(codec_name)
    assert codec is not None
    samples = [
        "ascii only".encode(), "héllo wörld".encode(), "中文字符 €".encode(), "😀 x 😀".encode(),
        "한국어 텍스트".encode("euc_kr"), "Жук".encode("iso8859-5"), b"abc\xff", b"\xc3", b"ab\xe2\x82",
        b"\xa1", b"\xa1\xa1\xa1", b"abcd\x80", b"\xf0\x9f\x98",
    ]
    for data in samples:
        try:
            data.decode(codec)
            whole = True
        except UnicodeDecodeError:
            whole = False
        assert payload_decodes(data, codec_name) is whole, (codec_name, data)
