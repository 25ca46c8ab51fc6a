"""A small, fast MCAP reader for the replay-ingest hot path (no decoding, no copies).

It reads the whole file once, walks the data section (top-level records and chunks, uncompressed
or zstd/lz4) and returns the raw CDR payloads of the wanted topics as memoryviews into that
buffer, in file (= write) order. rosbags' own reader does the same through a heap merge of
message indexes; this is several times faster per message and gives precise errors for the
files a crash leaves behind (no footer, a record running past the end of the file).
Why it exists: 9-10x faster than rosbags' rosbag2.Reader on episode bags with one 84x84 camera,
27-40x state-only (same messages, one core): python bench/bag_decode.py (docs/benchmarks.md).

MCAP record layout (https://mcap.dev/spec): opcode u8, length u64, body. Strings are u32 length +
bytes. Header 0x01, Footer 0x02, Schema 0x03, Channel 0x04, Message 0x05, Chunk 0x06,
DataEnd 0x0F; everything else is skipped.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"\x89MCAP0\r\n"
_FOOTER_LEN = 1 + 8 + 8 + 8 + 4  # opcode, length, summary_start, summary_offset_start, crc

_u16 = struct.Struct("<H").unpack_from
_u32 = struct.Struct("<I").unpack_from
_u64 = struct.Struct("<Q").unpack_from
_rec = struct.Struct("<BQ").unpack_from          # opcode, length
_msg = struct.Struct("<HIQQ").unpack_from        # channel_id, sequence, log_time, publish_time
_chunk = struct.Struct("<QQQI").unpack_from      # start, end, uncompressed_size, uncompressed_crc


class McapError(ValueError):
    """The file is not a readable MCAP file; the message says why (truncated, corrupt, ...)."""


@dataclass
class McapChannel:
    id: int
    topic: str
    schema_name: str
    message_encoding: str


@dataclass
class McapContents:
    channels: dict[int, McapChannel] = field(default_factory=dict)
    # topic -> [(log_time_ns, payload memoryview), ...] for the wanted topics, in file order
    messages: dict[str, list[tuple[int, memoryview]]] = field(default_factory=dict)
    truncated_at: int | None = None   # allow_truncated: where the complete records end (None: a whole file)


def _string(buf: memoryview, pos: int) -> tuple[str, int]:
    (n,) = _u32(buf, pos)
    pos += 4
    return bytes(buf[pos:pos + n]).decode("utf-8"), pos + n


def _decompress(data: memoryview, compression: str, size: int) -> memoryview:
    if compression == "":
        return data
    if compression == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]  # Python >= 3.14
        except ImportError:
            from backports import zstd  # type: ignore[no-redef]  # a rosbags dependency
        out = zstd.decompress(bytes(data))
    elif compression == "lz4":
        try:
            import lz4.frame  # type: ignore[import-not-found]
        except ImportError:
            raise McapError("chunk is lz4-compressed and the 'lz4' package is not installed") from None
        out = lz4.frame.decompress(bytes(data))
    else:
        raise McapError(f"unsupported chunk compression '{compression}'")
    if len(out) != size:
        raise McapError(f"chunk decompressed to {len(out)} bytes, header says {size}")
    return memoryview(out)


def read_mcap(path: str | Path, topics: set[str] | None = None, allow_truncated: bool = False) -> McapContents:
    """Channels and the raw messages of `topics` (all topics when None) of the MCAP file at `path`.

    Raises McapError for a truncated file (no footer: the writer never closed it) or a corrupt
    one (bad magic, a record or chunk that runs past its container, bad chunk CRC).
    `allow_truncated`: a file its writer never closed (killed) gives the messages of its complete
    top-level records instead (`truncated_at` says where they end); corrupt records still raise.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise McapError(f"cannot read {path.name}: {exc.strerror}") from None
    buf = memoryview(raw)
    size = len(buf)
    if size < 8 or bytes(buf[:8]) != MAGIC:
        raise McapError("not an MCAP file (bad magic at the start)" if size else "file is empty")
    closed = size >= 8 + _FOOTER_LEN + 8 and bytes(buf[size - 8:]) == MAGIC
    if not closed and allow_truncated:
        return _walk_data(buf, 8, size, topics, truncated_ok=True)
    if not closed:
        raise McapError("truncated: no MCAP footer (the writer did not close the file)")
    footer = size - 8 - _FOOTER_LEN
    op, length = _rec(buf, footer)
    if op != 0x02 or length != 20:
        raise McapError("corrupt MCAP footer")
    (summary_start,) = _u64(buf, footer + 9)
    data_end = summary_start if summary_start else footer
    if not 8 < data_end <= footer:
        raise McapError(f"corrupt MCAP footer: summary offset {summary_start} outside the file")

    return _walk_data(buf, 8, data_end, topics)


def _walk_data(buf: memoryview, start: int, data_end: int, topics: set[str] | None,
               truncated_ok: bool = False) -> McapContents:
    """The records from the Header at `start` up to `data_end`: channels and wanted messages."""
    out = McapContents(truncated_at=data_end if truncated_ok else None)
    schemas: dict[int, str] = {}
    wanted: dict[int, list] = {}  # channel id -> message list of a wanted topic

    def walk(data: memoryview, start: int, end: int, top: bool) -> None:
        pos = start
        while pos < end:
            if pos + 9 > end or (top and truncated_ok and _rec(data, pos)[1] > end - pos - 9):
                if top and truncated_ok:   # the record the writer was writing when it stopped
                    out.truncated_at = pos
                    return
                raise McapError(f"corrupt: record header at byte {pos} runs past its container")
            op, length = _rec(data, pos)
            body = pos + 9
            nxt = body + length
            if nxt > end:
                raise McapError(f"corrupt: record 0x{op:02x} at byte {pos} (length {length}) "
                                f"runs past its container ({end} bytes)")
            if op == 0x05:
                cid, _, log_time, _ = _msg(data, body)
                target = wanted.get(cid)
                if target is not None:
                    target.append((log_time, data[body + 22:nxt]))
            elif op == 0x06 and top:
                _, _, usize, crc = _chunk(data, body)
                compression, p = _string(data, body + 28)
                (csize,) = _u64(data, p)
                p += 8
                if p + csize > nxt:
                    raise McapError(f"corrupt: chunk at byte {pos} claims {csize} bytes of records")
                records = _decompress(data[p:p + csize], compression, usize)
                if crc and zlib.crc32(records) != crc:
                    raise McapError(f"corrupt: CRC mismatch in the chunk at byte {pos}")
                walk(records, 0, len(records), False)
            elif op == 0x03:
                (sid,) = _u16(data, body)
                name, _ = _string(data, body + 2)
                schemas[sid] = name
            elif op == 0x04:
                cid, sid = struct.unpack_from("<HH", data, body)
                topic, p = _string(data, body + 4)
                encoding, _ = _string(data, p)
                if cid not in out.channels:
                    out.channels[cid] = McapChannel(cid, topic, schemas.get(sid, ""), encoding)
                    if topics is None or topic in topics:
                        wanted[cid] = out.messages.setdefault(topic, [])
            elif op == 0x0F and top:  # DataEnd
                return
            pos = nxt

    try:
        # skip the Header record after the magic
        op, length = _rec(buf, start)
        if op != 0x01:
            raise McapError("corrupt: the first record is not an MCAP header")
        walk(buf, start + 9 + length, data_end, True)
    except (struct.error, UnicodeDecodeError) as exc:
        raise McapError(f"corrupt MCAP data: {exc}") from None
    return out
