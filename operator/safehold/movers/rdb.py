"""Key counts of an RDB stream, taken on its way into the repository.

`python -m safehold.movers.rdb --counts FILE -- redis-cli … --rdb -` runs the command, passes
its stdout through unchanged (restic stores it) and walks the RDB on the way: every key of
every logical database is counted, and keys with an expiry time separately (they may be gone
by the time of a restore). The counts go to FILE as JSON `{"0": [keys, volatile], …}` once
the RDB's end was seen. The exit code is the command's, so a failed dump still leaves no
snapshot. An RDB this walker does not know (a module type, a format newer than Redis 7.2's)
is passed through all the same, with no counts file.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Sequence
from typing import IO

CHUNK = 1 << 20

# Opcodes and value types of the RDB format (Redis 7.2: RDB version 11).
OP_FUNCTION2, OP_MODULE_AUX, OP_IDLE, OP_FREQ, OP_AUX = 0xF5, 0xF7, 0xF9, 0xF8, 0xFA
OP_RESIZEDB, OP_EXPIRETIME_MS, OP_EXPIRETIME, OP_SELECTDB, OP_EOF = 0xFB, 0xFC, 0xFD, 0xFE, 0xFF
OP_SLOT_INFO = 0xF4
ONE_STRING = {0, 9, 10, 11, 12, 13, 16, 17, 20}
STRING_LISTS = {1, 2, 14}  # list, set, quicklist: count + strings
STREAMS = {15, 19, 21}
MAX_VERSION = 11


class Unknown(Exception):
    """Not an RDB this walker knows; the stream is passed on uncounted."""


class Tap:
    """Reads the source in chunks, writing each to the sink as it is read."""

    def __init__(self, source: IO[bytes], sink: IO[bytes]) -> None:
        self.source, self.sink = source, sink
        self.buf = b""
        self.pos = 0

    def _fill(self, need: int) -> None:
        while len(self.buf) - self.pos < need:
            chunk = self.source.read(CHUNK)
            if not chunk:
                raise EOFError
            self.sink.write(chunk)
            self.buf = self.buf[self.pos :] + chunk
            self.pos = 0

    def read(self, n: int) -> bytes:
        self._fill(n)
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def skip(self, n: int) -> None:
        while n > 0:
            have = len(self.buf) - self.pos
            if have >= n:
                self.pos += n
                return
            n -= have
            self.buf, self.pos = b"", 0
            self._fill(min(n, CHUNK))

    def byte(self) -> int:
        return self.read(1)[0]

    def drain(self) -> None:
        while chunk := self.source.read(CHUNK):
            self.sink.write(chunk)


def length(tap: Tap) -> tuple[int, bool]:
    """A length, or (encoding, True) for a specially encoded string."""
    first = tap.byte()
    kind = first >> 6
    if kind == 0:
        return first & 0x3F, False
    if kind == 1:
        return ((first & 0x3F) << 8) | tap.byte(), False
    if kind == 3:
        return first & 0x3F, True
    if first == 0x80:
        return int(struct.unpack(">I", tap.read(4))[0]), False
    if first == 0x81:
        return int(struct.unpack(">Q", tap.read(8))[0]), False
    raise Unknown(f"length byte {first:#x}")


def plain_length(tap: Tap) -> int:
    value, encoded = length(tap)
    if encoded:
        raise Unknown("an encoded length where a length belongs")
    return value


def skip_string(tap: Tap) -> None:
    value, encoded = length(tap)
    if not encoded:
        tap.skip(value)
    elif value in (0, 1, 2):  # 8, 16, 32 bit integers
        tap.skip(1 << value)
    elif value == 3:  # LZF: compressed length, original length, data
        compressed = plain_length(tap)
        plain_length(tap)
        tap.skip(compressed)
    else:
        raise Unknown(f"string encoding {value}")


def skip_strings(tap: Tap, count: int) -> None:
    for _ in range(count):
        skip_string(tap)


def skip_double(tap: Tap) -> None:
    size = tap.byte()
    if size < 253:  # 253-255: nan, +inf, -inf
        tap.skip(size)


def skip_module(tap: Tap) -> None:
    """A module value (type 7, or module aux data): opcodes up to EOF."""
    while True:
        opcode = plain_length(tap)
        if opcode == 0:
            return
        if opcode in (1, 2):
            plain_length(tap)
        elif opcode == 3:
            tap.skip(4)
        elif opcode == 4:
            tap.skip(8)
        elif opcode == 5:
            skip_string(tap)
        else:
            raise Unknown(f"module opcode {opcode}")


def skip_stream(tap: Tap, kind: int) -> None:
    skip_strings(tap, 2 * plain_length(tap))  # listpacks: node key, listpack
    for _ in range(3 if kind == 15 else 8):  # length, last id (and first/max deleted id, added)
        plain_length(tap)
    for _ in range(plain_length(tap)):  # consumer groups
        skip_string(tap)
        for _ in range(2 if kind == 15 else 3):  # last id (and entries read)
            plain_length(tap)
        for _ in range(plain_length(tap)):  # pending entries: id, delivery time, count
            tap.skip(24)
            plain_length(tap)
        for _ in range(plain_length(tap)):  # consumers: name, seen (and active) time, PEL
            skip_string(tap)
            tap.skip(8 if kind < 21 else 16)
            tap.skip(16 * plain_length(tap))


def skip_value(tap: Tap, kind: int) -> None:
    if kind in ONE_STRING:
        skip_string(tap)
    elif kind in STRING_LISTS:
        skip_strings(tap, plain_length(tap))
    elif kind == 4:
        skip_strings(tap, 2 * plain_length(tap))
    elif kind in (3, 5):
        for _ in range(plain_length(tap)):
            skip_string(tap)
            skip_double(tap) if kind == 3 else tap.skip(8)
    elif kind == 18:  # quicklist 2: container kind, listpack
        for _ in range(plain_length(tap)):
            plain_length(tap)
            skip_string(tap)
    elif kind in STREAMS:
        skip_stream(tap, kind)
    elif kind == 7:
        plain_length(tap)  # module id
        skip_module(tap)
    else:
        raise Unknown(f"value type {kind}")


def _opcode(tap: Tap, op: int) -> int | None:
    """Handle a non-key opcode; the new logical database for SELECTDB, else None."""
    if op == OP_SELECTDB:
        return plain_length(tap)
    if op in (OP_EXPIRETIME, OP_EXPIRETIME_MS, OP_FREQ, OP_IDLE):
        raise AssertionError  # handled by walk()
    if op == OP_AUX:
        skip_strings(tap, 2)
    elif op == OP_RESIZEDB:
        plain_length(tap)
        plain_length(tap)
    elif op == OP_SLOT_INFO:
        for _ in range(3):
            plain_length(tap)
    elif op == OP_FUNCTION2:
        skip_string(tap)
    elif op == OP_MODULE_AUX:
        plain_length(tap)  # module id
        plain_length(tap)  # when opcode
        plain_length(tap)  # when
        skip_module(tap)
    else:
        raise Unknown(f"opcode {op:#x}")
    return None


def walk(tap: Tap) -> dict[int, list[int]]:
    """Logical database → [keys, keys with an expiry time], up to the RDB's end."""
    header = tap.read(9)
    if header[:5] != b"REDIS" or not header[5:].isdigit() or int(header[5:]) > MAX_VERSION:
        raise Unknown(f"header {header[:9]!r}")
    counts: dict[int, list[int]] = {}
    db, expiring = 0, False
    while True:
        op = tap.byte()
        if op == OP_EOF:
            return counts
        if op in (OP_EXPIRETIME, OP_EXPIRETIME_MS):
            tap.skip(4 if op == OP_EXPIRETIME else 8)
            expiring = True
        elif op == OP_FREQ:
            tap.skip(1)
        elif op == OP_IDLE:
            plain_length(tap)
        elif op >= OP_SLOT_INFO:
            selected = _opcode(tap, op)
            db = db if selected is None else selected
        else:
            skip_string(tap)  # the key
            skip_value(tap, op)
            entry = counts.setdefault(db, [0, 0])
            entry[0] += 1
            entry[1] += int(expiring)
            expiring = False


def relay(source: IO[bytes], sink: IO[bytes]) -> dict[int, list[int]] | None:
    """Pass `source` to `sink` whole; the key counts when the RDB could be walked."""
    tap = Tap(source, sink)
    counts: dict[int, list[int]] | None
    try:
        counts = walk(tap)
    except Exception:  # Unknown, EOFError, or a malformed stream: passed on all the same
        counts = None
    tap.drain()
    return counts


def main(argv: Sequence[str]) -> int:
    if len(argv) < 4 or argv[0] != "--counts" or argv[2] != "--":
        print("usage: python -m safehold.movers.rdb --counts FILE -- COMMAND…", file=sys.stderr)
        return 2
    proc = subprocess.Popen(list(argv[3:]), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        counts = relay(proc.stdout, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    except BrokenPipeError:  # the reader (restic) went away
        proc.kill()
        counts = None
    code = proc.wait()
    if code == 0 and counts is not None:
        with open(argv[1], "w", encoding="utf-8") as fh:
            json.dump({str(db): pair for db, pair in sorted(counts.items())}, fh)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
