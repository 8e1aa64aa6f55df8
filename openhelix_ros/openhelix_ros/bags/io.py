"""Reading and writing rosbag2 bags (sqlite3 and mcap) with the ``rosbags`` library.

The reader never crashes on bad input: messages of an unknown type, with garbage bytes or
cut off by a truncated file are counted per topic and cause, a warning names each cause once,
and reading goes on with the next message (or stops cleanly at the end of a truncated file).
A bag that cannot be opened at all raises :class:`BagError` with the reason.

Message types are resolved, in this order, from the definitions stored in the bag (rosbag2
Iron and later, and every mcap bag, store them), from ``rosbags``' Kilted type store, and
from the ``.msg`` files of installed packages (``share/<package>/msg/<Type>.msg``), which is
how ``openhelix_msgs`` is found. Bags written by ``ros2 bag record`` and by :class:`BagWriter`
read the same way.
"""
from __future__ import annotations

import importlib
import logging
import os
import re
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from rosbags.interfaces import MessageDefinitionFormat, Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

LOGGER = logging.getLogger("openhelix.bags")
STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
STORAGE_SUFFIXES = {".db3": "sqlite3", ".mcap": "mcap"}
_TYPE_NAME = re.compile(r"^(?P<package>[A-Za-z0-9_]+)/(?:msg/)?(?P<name>[A-Za-z0-9_]+)$")
_PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
               "uint32", "int64", "uint64", "string", "wstring", "time", "duration"}


class BagError(RuntimeError):
    """A bag that cannot be used; the text names the bag and the cause."""


class MissingTopicError(BagError):
    """A required topic is not in the bag; the text names it and lists the bag's topics."""


def normalize_type(msgtype: str) -> str:
    """``pkg/Type`` or ``pkg/msg/Type`` -> ``pkg/msg/Type``."""
    match = _TYPE_NAME.match(msgtype)
    if not match:
        return msgtype
    return f"{match['package']}/msg/{match['name']}"


def ros_message_class(msgtype: str) -> type:
    """The rclpy message class of ``pkg/msg/Type`` (imports the generated Python package)."""
    match = _TYPE_NAME.match(msgtype)
    if not match:
        raise BagError(f"'{msgtype}' is not a message type name")
    try:
        return getattr(importlib.import_module(f"{match['package']}.msg"), match["name"])
    except (ImportError, AttributeError) as error:
        raise BagError(f"message type '{msgtype}' is not installed ({error})") from error


# type store ----------------------------------------------------------------------------------

def _installed_msg_file(msgtype: str) -> Path | None:
    match = _TYPE_NAME.match(msgtype)
    if not match:
        return None
    relative = Path("share") / match["package"] / "msg" / f"{match['name']}.msg"
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix and (Path(prefix) / relative).is_file():
            return Path(prefix) / relative
    source = Path(__file__).resolve().parents[3] / match["package"] / "msg" / f"{match['name']}.msg"
    return source if source.is_file() else None


def _referenced_types(definition: str, package: str) -> set[str]:
    found = set()
    for line in definition.splitlines():
        tokens = line.split("#", 1)[0].split()
        if len(tokens) < 2:
            continue
        name = re.sub(r"\[.*\]$", "", tokens[0]).split("<", 1)[0]
        if name in _PRIMITIVES:
            continue
        if name == "Header":
            found.add("std_msgs/msg/Header")
        elif "/" in name:
            found.add(normalize_type(name))
        else:
            found.add(f"{package}/msg/{name}")
    return found


def ensure_type(store: Typestore, msgtype: str) -> bool:
    """Registers ``msgtype`` (and what it references) from installed ``.msg`` files if the store
    lacks it. Returns whether the store knows the type afterwards."""
    msgtype = normalize_type(msgtype)
    if msgtype in store.fielddefs:
        return True
    path = _installed_msg_file(msgtype)
    if path is None:
        return False
    definition = path.read_text()
    package = msgtype.split("/", 1)[0]
    for dependency in _referenced_types(definition, package) - {msgtype}:
        if not ensure_type(store, dependency):
            return False
    try:
        store.register(get_types_from_msg(definition, msgtype))
    except Exception as error:  # noqa: BLE001 - a broken installed definition means "unknown"
        LOGGER.warning("cannot register %s from %s: %s", msgtype, path, error)
        return False
    return True


_DEFAULT_STORE: Typestore | None = None


def default_typestore() -> Typestore:
    """Kilted's standard types plus ``openhelix_msgs`` (from the installed or source ``.msg``)."""
    global _DEFAULT_STORE
    if _DEFAULT_STORE is None:
        store = get_typestore(Stores.ROS2_KILTED)
        for msgtype in ("openhelix_msgs/msg/GoalEmbedding", "openhelix_msgs/msg/TrajectoryChunk"):
            ensure_type(store, msgtype)
        _DEFAULT_STORE = store
    return _DEFAULT_STORE


def _definitions_from_connection(connection) -> dict:
    msgdef = connection.msgdef
    if msgdef.format == MessageDefinitionFormat.MSG and msgdef.data.strip():
        return dict(get_types_from_msg(msgdef.data, connection.msgtype))
    if msgdef.format == MessageDefinitionFormat.IDL and msgdef.data.strip():
        separator = "=" * 80 + "\n"
        types = {}
        if msgdef.data.startswith(f"{separator}IDL: "):
            for part in msgdef.data.split(separator)[1:]:
                types.update(get_types_from_idl(part.split("\n", 1)[1]))
        else:
            types.update(get_types_from_idl(msgdef.data))
        return types
    return {}


def deserialize_cdr(store: Typestore, raw: bytes, msgtype: str) -> object:
    """CDR -> rosbags message object. Unlike ``Typestore.deserialize_cdr`` it accepts trailing
    bytes after the message, as ROS does: rmw_fastrtps' serialized messages (what ``ros2 bag
    record`` and raw subscriptions store) can end with a few bytes of padding."""
    if len(raw) < 4 or raw[:2] not in (b"\x00\x00", b"\x00\x01"):
        raise ValueError("invalid or unsupported CDR encapsulation")
    msgdef = store.get_msgdef(msgtype)
    function = msgdef.deserialize_cdr_le if raw[1] else msgdef.deserialize_cdr_be
    message, _ = function(memoryview(raw)[4:], 0, msgdef.cls, store)
    return message


# reading -------------------------------------------------------------------------------------

@dataclass
class BagMessage:
    topic: str          # after remapping
    bag_topic: str      # as recorded
    msgtype: str
    timestamp_ns: int   # record (receive) time
    raw: bytes
    message: object | None = None   # rosbags' deserialized object when deserialize=True

    def to_ros(self):
        """The rclpy message (from the raw CDR, through rclpy's own deserializer)."""
        from rclpy.serialization import deserialize_message
        return deserialize_message(self.raw, ros_message_class(self.msgtype))


@dataclass
class ReadStats:
    read: Counter = field(default_factory=Counter)       # topic -> messages delivered
    skipped: Counter = field(default_factory=Counter)    # (topic, cause) -> messages skipped
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False

    def skip(self, topic: str, cause: str, detail: str, count: int = 1) -> None:
        if (topic, cause) not in self.skipped:
            self.warn(f"{topic}: skipping {cause} message(s): {detail}")
        self.skipped[(topic, cause)] += count

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        LOGGER.warning(text)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict:
        causes: Counter = Counter()
        for (_, cause), count in self.skipped.items():
            causes[cause] += count
        return {"messages_read": sum(self.read.values()), "messages_skipped": self.skipped_total,
                "skipped_by_cause": dict(causes),
                "skipped_by_topic": {f"{topic} ({cause})": n for (topic, cause), n in sorted(self.skipped.items())},
                "truncated": self.truncated, "warnings": list(self.warnings)}


@dataclass
class TopicSummary:
    topic: str
    msgtype: str
    count: int
    known: bool
    latched: bool


def parse_remaps(pairs: Sequence[str]) -> dict[str, str]:
    """``["from:=to", ...]`` -> ``{from: to}``; raises ValueError naming a malformed pair."""
    remaps = {}
    for pair in pairs:
        source, separator, target = pair.partition(":=")
        if not separator or not source or not target:
            raise ValueError(f"remapping '{pair}' is not of the form from:=to")
        remaps[source] = target
    return remaps


class BagReader:
    """Reads a rosbag2 directory, or a single ``.db3`` / ``.mcap`` file, robustly.

    ``remap`` renames the bag's topics (``{recorded: wanted}``); every other method speaks the
    remapped names. Use as a context manager.
    """

    def __init__(self, path: str | Path, remap: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self.remap = dict(remap or {})
        self.stats = ReadStats()
        self.reader: Reader | None = None
        self.store: Typestore | None = None
        self.storage = "unknown"
        self.connections = []
        self.unknown_types: dict[str, str] = {}   # msgtype -> why

    # opening -----------------------------------------------------------------------------

    def __enter__(self) -> BagReader:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        try:
            self.reader = self._open_reader(self.path)
        except Exception as error:  # noqa: BLE001 - any failure to open is handled the same way
            files = self._storage_files() if self.path.is_dir() else [self.path]
            if len(files) != 1 or files[0].suffix not in STORAGE_SUFFIXES:
                raise BagError(f"cannot open bag {self.path}: {error}") from error
            self.reader = self._salvage(files[0], error)
        self.connections = list(self.reader.connections)
        self.store = self._build_store()

    def _salvage(self, path: Path, error: Exception):
        from openhelix_ros.bags.salvage import salvage
        self.storage = STORAGE_SUFFIXES[path.suffix]
        if path != self.path:
            try:
                reader = Reader(path)
                reader.open()
                self.stats.warn(f"{self.path}: metadata unusable ({error}); read {path.name} directly")
                return reader
            except Exception as inner:  # noqa: BLE001
                error = inner
        try:
            reader = salvage(path)
        except Exception as inner:  # noqa: BLE001
            raise BagError(f"cannot open bag {self.path}: {error}; salvaging {path.name} failed too: {inner}") from inner
        self.stats.truncated = True
        self.stats.warn(f"{path} is damaged or truncated ({error}); reading the {reader.message_count} messages "
                        f"before the damage")
        return reader

    def _storage_files(self) -> list[Path]:
        return sorted(p for p in self.path.iterdir() if p.suffix in STORAGE_SUFFIXES)

    def _open_reader(self, path: Path) -> Reader:
        reader = Reader(path)
        reader.open()
        if path.is_dir():
            files = self._storage_files()
            self.storage = STORAGE_SUFFIXES[files[0].suffix] if files else "unknown"
        else:
            self.storage = STORAGE_SUFFIXES.get(path.suffix, "unknown")
        return reader

    def _build_store(self) -> Typestore:
        """The shared default store when the bag's definitions agree with it (the usual case, and
        cheap); otherwise a store of the bag's own definitions completed with the defaults."""
        base = default_typestore()
        stored: dict = {}
        for connection in self.connections:
            try:
                definitions = _definitions_from_connection(connection)
            except Exception as error:  # noqa: BLE001 - a bad stored definition: fall back below
                self.stats.warn(f"{self._name(connection.topic)}: the bag's definition of {connection.msgtype} "
                                f"is unusable ({error}); using the installed one if there is one")
                continue
            for name, definition in definitions.items():
                stored.setdefault(name, definition)

        def fields(definition) -> list:
            return [(field[0].lower(), field[1]) for field in definition[1]]

        conflicts = {n for n, d in stored.items() if n in base.fielddefs and fields(base.fielddefs[n]) != fields(d)}
        store = base
        new = {n: d for n, d in stored.items() if n not in base.fielddefs}
        if conflicts:
            store = get_typestore(Stores.EMPTY)
            new = stored
        try:
            if new:
                store.register(new)
        except Exception as error:  # noqa: BLE001 - inconsistent definitions: register one by one
            self.stats.warn(f"the bag's message definitions do not register together ({error})")
            for name, definition in new.items():
                try:
                    store.register({name: definition})
                except Exception:  # noqa: BLE001
                    pass
        if store is not base:
            store.register({k: v for k, v in base.fielddefs.items() if k not in store.fielddefs})
        for connection in self.connections:
            msgtype = connection.msgtype
            if msgtype not in store.fielddefs and not ensure_type(store, msgtype):
                self.unknown_types[msgtype] = "no definition in the bag and none installed"
        return store

    def close(self) -> None:
        if self.reader is not None:
            try:
                self.reader.close()
            except Exception:  # noqa: BLE001
                pass
            self.reader = None

    # queries -----------------------------------------------------------------------------

    def _name(self, bag_topic: str) -> str:
        return self.remap.get(bag_topic, bag_topic)

    def topics(self) -> dict[str, TopicSummary]:
        summaries: dict[str, TopicSummary] = {}
        for connection in self.connections:
            name = self._name(connection.topic)
            latched = any(q.durability == QosDurability.TRANSIENT_LOCAL
                          for q in getattr(connection.ext, "offered_qos_profiles", []) or [])
            if name in summaries:
                summaries[name].count += connection.msgcount
                summaries[name].latched |= latched
            else:
                summaries[name] = TopicSummary(name, connection.msgtype, connection.msgcount,
                                               connection.msgtype not in self.unknown_types, latched)
        return summaries

    def describe_topics(self) -> str:
        topics = self.topics()
        if not topics:
            return "(the bag has no topics)"
        return ", ".join(f"{t.topic} [{t.msgtype}, {t.count}]" for t in sorted(topics.values(), key=lambda t: t.topic))

    def require(self, required: Mapping[str, str | Sequence[str]]) -> None:
        """Raises :class:`MissingTopicError` for a required topic (``{topic: type(s)}``) the bag lacks
        or holds with another type; the text lists what the bag has."""
        topics = self.topics()
        problems = []
        for topic, types in required.items():
            allowed = [types] if isinstance(types, str) else list(types)
            allowed = [normalize_type(t) for t in allowed]
            if topic not in topics:
                problems.append(f"required topic {topic} ({' or '.join(allowed)}) is not in the bag")
            elif allowed and normalize_type(topics[topic].msgtype) not in allowed:
                problems.append(f"topic {topic} has type {topics[topic].msgtype}, expected {' or '.join(allowed)}")
        if problems:
            raise MissingTopicError(f"bag {self.path}: {'; '.join(problems)}. "
                                    f"The bag has: {self.describe_topics()}. Use --remap recorded:=expected "
                                    f"if it recorded them under other names.")

    @property
    def start_ns(self) -> int:
        return self.reader.start_time if self.reader and self.reader.message_count else 0

    @property
    def end_ns(self) -> int:
        return self.reader.end_time if self.reader and self.reader.message_count else 0

    def count(self, topics: Iterable[str] | None = None) -> int:
        wanted = None if topics is None else set(topics)
        return sum(c.msgcount for c in self.connections if wanted is None or self._name(c.topic) in wanted)

    # messages ----------------------------------------------------------------------------

    def messages(self, topics: Iterable[str] | None = None, deserialize: bool = True,
                 validate: Callable[[BagMessage], str | None] | None = None) -> Iterator[BagMessage]:
        """Yields the messages of ``topics`` (remapped names; None = all) in time order.

        Unknown types, undecodable bytes and messages that ``validate`` rejects (it returns the
        reason) are counted and skipped; a truncated or corrupt file ends the iteration with a
        warning.
        """
        if self.reader is None:
            raise BagError("the bag is not open")
        wanted = None if topics is None else set(topics)
        connections = []
        for connection in self.connections:
            name = self._name(connection.topic)
            if wanted is not None and name not in wanted:
                continue
            if connection.msgtype in self.unknown_types:
                self.stats.skip(name, "unknown_type",
                                f"type {connection.msgtype}: {self.unknown_types[connection.msgtype]}",
                                connection.msgcount)
                continue
            connections.append(connection)
        if not connections:
            return
        iterator = self.reader.messages(connections)
        while True:
            try:
                connection, timestamp, raw = next(iterator)
            except StopIteration:
                return
            except (Exception, sqlite3.Error) as error:  # noqa: BLE001 - truncated / corrupt storage
                self.stats.truncated = True
                self.stats.warn(f"bag {self.path} ends early or is corrupt after {sum(self.stats.read.values())} "
                                f"messages: {type(error).__name__}: {error}")
                return
            name = self._name(connection.topic)
            message = BagMessage(name, connection.topic, connection.msgtype, timestamp, bytes(raw))
            if deserialize:
                try:
                    message.message = deserialize_cdr(self.store, message.raw, connection.msgtype)
                except Exception as error:  # noqa: BLE001 - garbage bytes of any kind
                    self.stats.skip(name, "corrupt", f"{connection.msgtype}: {type(error).__name__}: {error}")
                    continue
            if validate is not None:
                reason = validate(message)
                if reason:
                    self.stats.skip(name, "invalid", reason)
                    continue
            self.stats.read[name] += 1
            yield message


# writing -------------------------------------------------------------------------------------

def qos_profile(reliable: bool = True, latched: bool = False, depth: int = 10) -> Qos:
    """A rosbags QoS description (stored as the connection's offered QoS)."""
    zero = QosTime(sec=0, nsec=0)
    return Qos(history=QosHistory.KEEP_LAST, depth=depth,
               reliability=QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               durability=QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
               deadline=zero, lifespan=zero, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=zero, avoid_ros_namespace_conventions=False)


class BagWriter:
    """Writes a rosbag2 bag (format version 9, readable by ``ros2 bag`` Iron and later and by rosbags)."""

    def __init__(self, path: str | Path, storage: str = "sqlite3", store: Typestore | None = None) -> None:
        if storage not in STORAGES:
            raise BagError(f"storage '{storage}' is not one of {sorted(STORAGES)}")
        self.path = Path(path)
        self.storage = storage
        self.store = store or default_typestore()
        self.writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])
        self.connections: dict[str, object] = {}
        self.types: dict[str, str] = {}
        self.count = 0
        self.bytes = 0
        self.closed = False

    def __enter__(self) -> BagWriter:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        try:
            self.writer.open()
        except Exception as error:  # noqa: BLE001
            raise BagError(f"cannot create bag {self.path}: {error}") from error

    def add_topic(self, topic: str, msgtype: str, qos: Sequence[Qos] = ()) -> None:
        msgtype = normalize_type(msgtype)
        if topic in self.connections:
            return
        if not ensure_type(self.store, msgtype):
            raise BagError(f"cannot record {topic}: no definition of {msgtype} is known or installed")
        self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=self.store,
                                                             offered_qos_profiles=list(qos))
        self.types[topic] = msgtype

    def write(self, topic: str, timestamp_ns: int, raw: bytes) -> None:
        self.writer.write(self.connections[topic], int(timestamp_ns), raw)
        self.count += 1
        self.bytes += len(raw)

    def write_message(self, topic: str, timestamp_ns: int, message: object, msgtype: str | None = None) -> None:
        """Writes a rosbags message object (``store.types[...]``), adding the topic if needed."""
        if topic not in self.connections:
            self.add_topic(topic, msgtype or message.__msgtype__)
        self.write(topic, timestamp_ns, bytes(self.store.serialize_cdr(message, self.types[topic])))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()


# image decoding ------------------------------------------------------------------------------

COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE = "sensor_msgs/msg/Image"


def compressed_to_image(message, depth_hint: bool = False):
    """Decodes a ``sensor_msgs/CompressedImage`` (jpeg / png, or image_transport's
    ``compressedDepth`` png) into an rclpy ``sensor_msgs/Image``: color as rgb8 (mono8 for
    grayscale), depth as 16UC1 (millimetres) or 32FC1. Raises ValueError naming the cause."""
    import io as _io

    import numpy as np
    from PIL import Image as PILImage
    from sensor_msgs.msg import Image

    fmt = (message.format or "").lower()
    data = bytes(message.data)
    if "compresseddepth" in fmt:
        if len(data) < 12:
            raise ValueError("compressedDepth image is shorter than its 12-byte header")
        data = data[12:]   # image_transport's ConfigHeader (format + quantization parameters)
    try:
        with PILImage.open(_io.BytesIO(data)) as picture:
            picture.load()
            mode = picture.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                pixels = np.asarray(picture).astype("<u2")
                encoding = "16UC1"
            elif mode == "F":
                pixels = np.asarray(picture).astype("<f4")
                encoding = "32FC1"
            elif mode == "L" and not depth_hint:
                pixels = np.asarray(picture, dtype=np.uint8)
                encoding = "mono8"
            else:
                pixels = np.asarray(picture.convert("RGB"), dtype=np.uint8)
                encoding = "rgb8"
    except (OSError, ValueError, SyntaxError) as error:
        raise ValueError(f"cannot decode '{message.format}' image: {error}") from error
    if "32fc1" in fmt and encoding == "16UC1":
        pixels, encoding = pixels.astype("<f4") / 1000.0, "32FC1"
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    image = Image(height=height, width=width, encoding=encoding, is_bigendian=0,
                  step=width * channels * pixels.itemsize, data=pixels.tobytes())
    image.header.stamp.sec = int(message.header.stamp.sec)
    image.header.stamp.nanosec = int(message.header.stamp.nanosec)
    image.header.frame_id = message.header.frame_id
    return image


def decoded_image_topic(topic: str) -> str:
    """``.../image_raw/compressed`` -> ``.../image_raw`` (image_transport's naming)."""
    for suffix in ("/compressedDepth", "/compressed"):
        if topic.endswith(suffix):
            return topic[: -len(suffix)]
    return topic
