"""Reading what is left of a truncated or damaged storage file.

A recording that was killed, or a file cut short by a full disk or a copy, has no mcap
summary / footer, or a sqlite3 database whose later pages are missing; ``rosbags`` refuses to
open either. These readers scan from the start and deliver every message up to the damage; the
iteration then raises :class:`SalvageEnd`, which :class:`openhelix_ros.bags.io.BagReader`
reports as "bag ends early" and counts.
"""
from __future__ import annotations

import mmap
import shutil
import sqlite3
import struct
import tempfile
from collections import defaultdict
from pathlib import Path

from rosbags.interfaces import Connection, ConnectionExtRosbag2, MessageDefinition, MessageDefinitionFormat
from rosbags.rosbag2.storage_mcap import get_qos
from rosbags.rosbag2.storage_sqlite3 import parse_qos


class SalvageEnd(RuntimeError):
    """The readable part of a damaged storage file ended here."""


class _Storage:
    """The subset of ``rosbags.rosbag2.Reader`` that BagReader uses."""

    connections: list
    start_time: int
    end_time: int
    message_count: int

    def close(self) -> None:
        pass


def _records(data, start: int = 0):
    """MCAP records ``(opcode, body, complete)`` from ``start``; the last one may be cut short."""
    position = start
    while position + 9 <= len(data):
        opcode = data[position]
        (length,) = struct.unpack_from("<Q", data, position + 1)
        body = data[position + 9: position + 9 + length]
        complete = len(body) == length
        yield opcode, body, complete
        if not complete:
            return
        position += 9 + length


def _string(body, offset: int) -> tuple[str, int]:
    (size,) = struct.unpack_from("<I", body, offset)
    return bytes(body[offset + 4: offset + 4 + size]).decode(), offset + 4 + size


def _chunk_data(body) -> bytes:
    """The (possibly partial) records of a chunk record, decompressed as far as they go."""
    compression, offset = _string(body, 28)
    records = bytes(body[offset + 8:])
    if compression == "":
        return records
    try:
        if compression == "zstd":
            try:
                from compression import zstd as zstd_module
            except ImportError:
                from backports import zstd as zstd_module
            return zstd_module.ZstdDecompressor().decompress(records)
        if compression == "lz4":
            import lz4.frame
            return lz4.frame.LZ4FrameDecompressor().decompress(records)
    except Exception:  # noqa: BLE001 - a cut compressed stream: whatever came out before is lost
        return b""
    return b""


class SalvagedMcap(_Storage):
    """Scans an mcap file record by record, into cut chunks (uncompressed ones fully)."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("rb")
        try:
            self.data = mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as error:   # empty file
            raise SalvageEnd(f"{path} is empty") from error
        if self.data[:8] != b"\x89MCAP0\r\n":
            raise SalvageEnd(f"{path} is not an mcap file")
        self.schemas: dict[int, tuple[str, str, str]] = {}
        self.channels: dict[int, Connection] = {}
        self.damage = ""
        counts: dict[int, int] = defaultdict(int)
        start, end = 2**63 - 1, 0
        for channel, timestamp, _ in self._scan():
            counts[channel] += 1
            start, end = min(start, timestamp), max(end, timestamp)
        self.connections = [c._replace(msgcount=counts.get(c.id, 0)) for c in self.channels.values()]
        self.message_count = sum(counts.values())
        self.start_time = start if self.message_count else 0
        self.end_time = end + 1 if self.message_count else 0

    def _scan(self):
        """Yields ``(channel id, log time, data)``; records schemas and channels on the way."""
        for opcode, body, complete in _records(self.data, 8):
            if opcode == 0x06:
                inner = _chunk_data(body) if len(body) > 40 else b""
                for inner_opcode, inner_body, inner_complete in _records(inner):
                    if not inner_complete:
                        break
                    yield from self._record(inner_opcode, inner_body)
                if not complete:
                    self.damage = "a chunk is cut short"
                    return
            elif not complete:
                self.damage = f"record 0x{opcode:02x} is cut short"
                return
            else:
                yield from self._record(opcode, body)

    def _record(self, opcode: int, body):
        try:
            if opcode == 0x05:
                channel, _, log_time, _ = struct.unpack_from("<HIQQ", body, 0)
                if channel in self.channels:
                    yield channel, log_time, bytes(body[22:])
            elif opcode == 0x03:
                (key,) = struct.unpack_from("<H", body, 0)
                name, offset = _string(body, 2)
                encoding, offset = _string(body, offset)
                (size,) = struct.unpack_from("<I", body, offset)
                self.schemas[key] = (name, encoding, bytes(body[offset + 4: offset + 4 + size]).decode())
            elif opcode == 0x04:
                key, schema_id = struct.unpack_from("<HH", body, 0)
                topic, offset = _string(body, 4)
                encoding, offset = _string(body, offset)
                (size,) = struct.unpack_from("<I", body, offset)
                metadata = bytes(body[offset + 4: offset + 4 + size])
                name, schema_encoding, text = self.schemas.get(schema_id, ("", "", ""))
                formats = {"ros2msg": MessageDefinitionFormat.MSG, "ros2idl": MessageDefinitionFormat.IDL}
                msgdef = MessageDefinition(formats.get(schema_encoding, MessageDefinitionFormat.NONE), text)
                try:
                    qos = get_qos(metadata)
                except Exception:  # noqa: BLE001
                    qos = []
                self.channels.setdefault(key, Connection(key, topic, name, msgdef, "", 0,
                                                         ConnectionExtRosbag2(encoding, qos), self))
        except (struct.error, UnicodeDecodeError):
            return

    def messages(self, connections):
        wanted = {c.id: c for c in connections}
        for channel, timestamp, data in self._scan():
            if channel in wanted:
                yield wanted[channel], timestamp, data
        if self.damage:
            raise SalvageEnd(f"mcap data ends at the damage: {self.damage}")

    def close(self) -> None:
        self.data.close()
        self.file.close()


class SalvagedSqlite(_Storage):
    BATCH = 64

    def __init__(self, path: Path) -> None:
        # sqlite refuses a file cut inside a page; a copy trimmed to whole pages, with the page
        # count in its header set to match, opens, and reads up to the first missing page.
        self.copy = Path(tempfile.mkstemp(suffix=".db3")[1])
        with path.open("rb") as source, self.copy.open("wb") as target:
            shutil.copyfileobj(source, target)
        with self.copy.open("r+b") as file:
            header = file.read(100)
            if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
                raise SalvageEnd(f"{path} is not an sqlite3 database")
            page_size = struct.unpack(">H", header[16:18])[0]
            page_size = 65536 if page_size == 1 else page_size
            pages = self.copy.stat().st_size // page_size
            file.truncate(pages * page_size)
            file.seek(28)
            file.write(struct.pack(">I", pages))
        self.db = sqlite3.connect(f"file:{self.copy}?mode=ro&immutable=1", uri=True)
        columns = [row[1] for row in self.db.execute("PRAGMA table_info(topics)")]
        rows = self.db.execute(f"SELECT {', '.join(columns)} FROM topics").fetchall()
        definitions = {}
        try:
            for name, encoding, text in self.db.execute(
                    "SELECT topic_type, encoding, encoded_message_definition FROM message_definitions"):
                if encoding == "ros2msg" and text:
                    definitions[name] = MessageDefinition(MessageDefinitionFormat.MSG, text)
                elif encoding == "ros2idl" and text:
                    definitions[name] = MessageDefinition(MessageDefinitionFormat.IDL, text)
        except sqlite3.Error:
            pass
        counts: dict[int, int] = defaultdict(int)
        start, end = 2**63 - 1, 0
        for topic_id, timestamp, _ in self._rows("topic_id, timestamp, 0", strict=False):
            counts[topic_id] += 1
            start, end = min(start, timestamp), max(end, timestamp)
        self.connections = []
        for row in rows:
            topic = dict(zip(columns, row))
            qos = topic.get("offered_qos_profiles") or ""
            try:
                profiles = parse_qos(qos) if qos else []
            except Exception:  # noqa: BLE001
                profiles = []
            self.connections.append(Connection(
                id=topic["id"], topic=topic["name"], msgtype=topic["type"],
                msgdef=definitions.get(topic["type"], MessageDefinition(MessageDefinitionFormat.NONE, "")),
                digest=topic.get("type_description_hash", "") or "", msgcount=counts.get(topic["id"], 0),
                ext=ConnectionExtRosbag2(serialization_format=topic.get("serialization_format", "cdr"),
                                         offered_qos_profiles=profiles),
                owner=self))
        self.message_count = sum(counts.values())
        self.start_time = start if self.message_count else 0
        self.end_time = end + 1 if self.message_count else 0

    def _rows(self, columns: str, strict: bool):
        """Rows in id order, batch by batch; stops (strict: raises SalvageEnd) at the first unreadable batch."""
        last, size = 0, self.BATCH
        while True:
            try:
                batch = self.db.execute(f"SELECT {columns}, id FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                                        (last, size)).fetchall()
            except sqlite3.Error as error:
                if size > 1:
                    size = 1   # read the rest of the damaged batch row by row
                    continue
                if strict:
                    raise SalvageEnd(f"sqlite3 data ends at the damage after row {last}: {error}") from error
                return
            if not batch:
                return
            for row in batch:
                yield row[:3]
            last = batch[-1][3]

    def messages(self, connections):
        wanted = {c.id: c for c in connections}
        for topic_id, timestamp, data in self._rows("topic_id, timestamp, data", strict=True):
            if topic_id in wanted:
                yield wanted[topic_id], timestamp, data

    def close(self) -> None:
        self.db.close()
        self.copy.unlink(missing_ok=True)


def salvage(path: Path) -> _Storage:
    """Opens a damaged ``.mcap`` / ``.db3`` file for a best-effort scan."""
    if path.suffix == ".mcap":
        return SalvagedMcap(path)
    if path.suffix == ".db3":
        return SalvagedSqlite(path)
    raise SalvageEnd(f"no salvage reader for '{path.suffix}' files")
