"""TFRecord framing and the ``tf.train.SequenceExample`` message without TensorFlow (issue 11: ingest at
native speed; ``import tensorflow`` alone costs ~5 CPU-seconds).

- ``SequenceExample``: the message class, built from the schema of TensorFlow's ``example.proto`` /
  ``feature.proto`` (same package, names, field numbers and types, so the bytes are the same) in a private
  protobuf descriptor pool (no clash with TensorFlow's own classes when both are loaded). Parsing runs in
  protobuf's C implementation (upb).
- ``feature_list_bytes``: where each feature list's bytes lie in a serialised record (found in place).
- ``frame_rows``: the frames of one feature list as a ``uint8[n, width]`` array in one numpy step, when
  every frame is encoded the canonical way (one ``bytes_list`` of one ``width``-byte value: a fixed header
  before each frame). Anything else returns None and the caller walks the frames one by one (and names
  the first bad one).
- ``encode_frame_list``: the same canonical encoding, written with numpy.
- ``read_records`` / ``write_records``: the TFRecord framing (little-endian uint64 length, masked CRC-32C
  of the length, the data, masked CRC-32C of the data), checked as TensorFlow's reader checks it; CRCs by
  ``google_crc32c`` (C; installed with google-cloud-storage).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import numpy as np

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


class CorruptRecord(Exception):
    """A record whose framing or CRC does not check out; the rest of the file cannot be trusted."""


def _masked_crc(data: Any) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def read_records(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(byte offset, record)`` for each whole record of a TFRecord file's bytes. Raises ``CorruptRecord``
    (message as TensorFlow's: ``corrupted record at OFFSET`` / ``truncated record at OFFSET``) at a bad CRC
    or a record cut inside its data. Stops quietly before fewer than 12 bytes (a header cut short), as
    TensorFlow does: the caller compares the end offset with the file size."""
    size, offset = len(data), 0
    while size - offset >= 12:
        (length,) = _LENGTH.unpack_from(data, offset)
        (length_crc,) = _CRC.unpack_from(data, offset + 8)
        if _masked_crc(data[offset : offset + 8]) != length_crc:
            raise CorruptRecord(f"corrupted record at {offset}")
        start, end = offset + 12, offset + 12 + length
        if end + 4 > size:
            raise CorruptRecord(f"truncated record at {offset}")
        (data_crc,) = _CRC.unpack_from(data, end)
        record = data[start:end]
        if _masked_crc(record) != data_crc:
            raise CorruptRecord(f"corrupted record at {offset}")
        yield offset, record
        offset = end + 4
    return


def frame_record(record: bytes) -> bytes:
    """One record with its TFRecord framing."""
    length = _LENGTH.pack(len(record))
    return length + _CRC.pack(_masked_crc(length)) + record + _CRC.pack(_masked_crc(record))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


@lru_cache(maxsize=None)
def _frame_header(width: int) -> bytes:
    """What precedes each ``width``-byte frame in a FeatureList: Feature{bytes_list: BytesList{value: [frame]}}
    as field 1 of the FeatureList."""
    bytes_list = _varint(1 << 3 | 2) + _varint(width)  # BytesList.value, then the frame
    feature_len = len(bytes_list) + width
    feature = _varint(1 << 3 | 2) + _varint(feature_len) + bytes_list  # Feature.bytes_list
    return _varint(1 << 3 | 2) + _varint(len(feature) + width) + feature  # FeatureList.feature


def _varint_at(data: Any, pos: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError("bad varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def feature_list_bytes(record: bytes) -> dict[str, memoryview] | None:
    """The serialised FeatureLists of a serialised SequenceExample, by name, found in place (no copy, no
    re-serialisation), or None when the record is not laid out plainly (the feature_lists field more than
    once, a name twice, an unknown field, a bad length): the caller then uses the parsed message, whose
    answer is the same. Where this returns a dict, protobuf's parser gives each of these lists."""
    view = memoryview(record)
    size, pos, lists = len(record), 0, None
    try:
        while pos < size:
            tag, pos = _varint_at(record, pos, size)
            if tag & 7 != 2 or tag >> 3 not in (1, 2):  # context (1) and feature_lists (2), both messages
                return None
            length, pos = _varint_at(record, pos, size)
            if pos + length > size:
                return None
            if tag >> 3 == 2:
                if lists is not None:  # repeated: protobuf merges them; leave that to the parser
                    return None
                lists = (pos, pos + length)
            pos += length
        found: dict[str, memoryview] = {}
        if lists is None:
            return found
        pos, end = lists
        while pos < end:
            tag, pos = _varint_at(record, pos, end)
            length, pos = _varint_at(record, pos, end)
            entry_end = pos + length
            if tag != 0x0A or entry_end > end:
                return None
            key = value = None
            while pos < entry_end:
                tag, pos = _varint_at(record, pos, entry_end)
                length, pos = _varint_at(record, pos, entry_end)
                if pos + length > entry_end or tag not in (0x0A, 0x12):
                    return None
                if tag == 0x0A and key is None:
                    key = bytes(view[pos : pos + length]).decode("utf-8")
                elif tag == 0x12 and value is None:
                    value = view[pos : pos + length]
                else:  # a key or value twice in one entry
                    return None
                pos += length
            if key is None or key in found:
                return None
            found[key] = value if value is not None else view[0:0]
    except (ValueError, UnicodeDecodeError):
        return None
    return found


def frame_rows(feature_list: bytes | memoryview, width: int) -> np.ndarray | None:
    """``uint8[n, width]`` when every frame of the serialised FeatureList is canonical, else None."""
    header = _frame_header(width)
    row = len(header) + width
    if len(feature_list) % row:
        return None
    rows = np.frombuffer(feature_list, dtype=np.uint8).reshape(-1, row)
    if rows.shape[0] and not (rows[:, : len(header)] == np.frombuffer(header, dtype=np.uint8)).all():
        return None
    return np.ascontiguousarray(rows[:, len(header) :])


def encode_frame_list(frames: np.ndarray) -> bytes:
    """The serialised FeatureList of ``uint8[n, width]`` frames (one bytes_list of one value per frame)."""
    n, width = frames.shape
    header = _frame_header(width)
    rows = np.empty((n, len(header) + width), dtype=np.uint8)
    rows[:, : len(header)] = np.frombuffer(header, dtype=np.uint8)
    rows[:, len(header) :] = frames
    return rows.tobytes()


def encode_feature_lists(lists: dict[str, bytes]) -> bytes:
    """SequenceExample field 2 (FeatureLists: map<string, FeatureList>) from serialised FeatureLists."""
    entries = b"".join(
        _length_delimited(1, _length_delimited(1, name.encode()) + _length_delimited(2, value))
        for name, value in lists.items()
    )
    return _length_delimited(2, entries)


@lru_cache(maxsize=None)
def _classes() -> dict[str, Any]:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="fewframes/tensorflow_example.proto", package="tensorflow",
                                             syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, int, str], nested: tuple = ()) -> Any:
        proto = descriptor_pb2.DescriptorProto(name=name)
        for field_name, number, label, kind, type_name in fields:
            added = proto.field.add(name=field_name, number=number, label=label, type=kind, json_name=field_name)
            if type_name:
                added.type_name = type_name
        for entry in nested:
            proto.nested_type.add().CopyFrom(entry)
        return proto

    def map_entry(name: str, value_type: str) -> Any:
        entry = message(name, ("key", 1, F.LABEL_OPTIONAL, F.TYPE_STRING, ""),
                        ("value", 2, F.LABEL_OPTIONAL, F.TYPE_MESSAGE, value_type))
        entry.options.map_entry = True
        return entry

    repeated, optional = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    file.message_type.extend([
        message("BytesList", ("value", 1, repeated, F.TYPE_BYTES, "")),
        message("FloatList", ("value", 1, repeated, F.TYPE_FLOAT, "")),
        message("Int64List", ("value", 1, repeated, F.TYPE_INT64, "")),
        message("Feature", ("bytes_list", 1, optional, F.TYPE_MESSAGE, ".tensorflow.BytesList"),
                ("float_list", 2, optional, F.TYPE_MESSAGE, ".tensorflow.FloatList"),
                ("int64_list", 3, optional, F.TYPE_MESSAGE, ".tensorflow.Int64List")),
        message("Features", ("feature", 1, repeated, F.TYPE_MESSAGE, ".tensorflow.Features.FeatureEntry"),
                nested=(map_entry("FeatureEntry", ".tensorflow.Feature"),)),
        message("FeatureList", ("feature", 1, repeated, F.TYPE_MESSAGE, ".tensorflow.Feature")),
        message("FeatureLists", ("feature_list", 1, repeated, F.TYPE_MESSAGE, ".tensorflow.FeatureLists.FeatureListEntry"),
                nested=(map_entry("FeatureListEntry", ".tensorflow.FeatureList"),)),
        message("SequenceExample", ("context", 1, optional, F.TYPE_MESSAGE, ".tensorflow.Features"),
                ("feature_lists", 2, optional, F.TYPE_MESSAGE, ".tensorflow.FeatureLists")),
    ])
    # Feature's three lists are one oneof ("kind") in TensorFlow's schema.
    feature = file.message_type[3]
    feature.oneof_decl.add(name="kind")
    for field in feature.field:
        field.oneof_index = 0
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    names = ("SequenceExample", "Features", "FeatureList")
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{name}")) for name in names}


def sequence_example_class() -> Any:
    """The ``tensorflow.SequenceExample`` message class (private pool, no TensorFlow)."""
    return _classes()["SequenceExample"]


__all__ = [
    "CorruptRecord",
    "encode_feature_lists",
    "encode_frame_list",
    "feature_list_bytes",
    "frame_record",
    "frame_rows",
    "read_records",
    "sequence_example_class",
]
