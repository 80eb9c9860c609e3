"""MLLP framing (pure, incremental): bytes in, complete frames out (SPEC 4a).

A frame is ``0x0B`` + message + ``0x1C 0x0D``. :class:`FrameReader` is fed whatever the
socket delivered, in any split, and returns the messages completed by that input, in
order. Bytes outside a frame (before a start block) are skipped and counted. A frame
whose message grows over ``max_bytes`` raises ``BodyTooLarge`` as soon as that is certain,
so a hostile sender never makes the reader hold more than ``max_bytes`` + one read.

Inside a frame every byte up to the first ``0x1C 0x0D`` is message content (a stray
``0x0B`` or lone ``0x1C`` included: the decision then judges the message).
"""

from __future__ import annotations

from processor.errors import BodyTooLarge

__all__ = ["START_BLOCK", "END_BLOCK", "FrameReader", "frame"]

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
_SB = 0x0B
_FS = 0x1C


def frame(message: bytes) -> bytes:
    """``message`` wrapped in one MLLP frame."""
    return START_BLOCK + message + END_BLOCK


class FrameReader:
    """Incremental MLLP frame parser for one connection (not thread-safe; one per connection)."""

    __slots__ = ("_max", "_buf", "_in_frame", "_scanned", "skipped")

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._buf = bytearray()  # content of the frame being received (after its start block)
        self._in_frame = False
        self._scanned = 0  # bytes of _buf known not to hold the end block's first byte
        self.skipped = 0  # bytes seen outside any frame

    @property
    def pending(self) -> int:
        """Bytes held for the frame being received."""
        return len(self._buf)

    @property
    def in_frame(self) -> bool:
        """A start block was read and its frame is not complete yet."""
        return self._in_frame

    def feed(self, data: bytes) -> list[bytes]:
        """The messages ``data`` completes, in order; raises ``BodyTooLarge`` for a frame over
        ``max_bytes`` (the reader is then unusable: close the connection)."""
        frames: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            if not self._in_frame:
                start = data.find(_SB, pos)
                if start < 0:
                    self.skipped += end - pos
                    return frames
                self.skipped += start - pos
                self._in_frame = True
                pos = start + 1
                continue
            buf = self._buf
            # Where to look for 0x1C 0x0D: from the last byte already held (a 0x1C there may
            # pair with a 0x0D at the start of this read).
            look_from = max(self._scanned - 1, 0) if buf else 0
            if buf:
                buf += data[pos:]
                pos = end
                stop = buf.find(END_BLOCK, look_from)
                if stop < 0:
                    self._hold_check()
                    return frames
                message = bytes(buf[:stop])
                rest = bytes(buf[stop + 2 :])
                self._reset()
                self._check(len(message))
                frames.append(message)
                data, pos, end = rest, 0, len(rest)
                continue
            stop = data.find(END_BLOCK, pos)
            if stop < 0:
                buf += data[pos:]
                self._hold_check()
                return frames
            self._check(stop - pos)
            frames.append(data[pos:stop])
            self._in_frame = False
            pos = stop + 2
        return frames

    def _hold_check(self) -> None:
        """No end block yet: refuse once the message is certainly over the limit (the last
        held byte may be the 0x1C of an end block, so it does not count yet)."""
        buf = self._buf
        held = len(buf) - (1 if buf and buf[-1] == _FS else 0)
        self._check(held)
        self._scanned = len(buf)

    def _check(self, size: int) -> None:
        if size > self._max:
            self._reset()
            raise BodyTooLarge(f"MLLP frame over {self._max} bytes")

    def _reset(self) -> None:
        self._buf = bytearray()
        self._in_frame = False
        self._scanned = 0
