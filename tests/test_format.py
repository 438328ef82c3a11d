"""The RecordIO framing and IRHeader layout, checked against bytes built by hand from the spec."""

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recpack.format import framing, schema, index_files

MAGIC = b"\x0a\x23\xd7\xce"  # 0xced7230a little endian


def lrec(cflag, length):
    return struct.pack("<I", cflag << 29 | length)


def reference_read_all(data: bytes) -> list[bytes]:
    """An independent RecordIO reader written from the dmlc spec: join parts, re-insert magic."""
    records, position, current = [], 0, None
    while position < len(data):
        assert data[position : position + 4] == MAGIC
        (word,) = struct.unpack_from("<I", data, position + 4)
        cflag, length = word >> 29, word & ((1 << 29) - 1)
        body = data[position + 8 : position + 8 + length]
        position += 8 + length + (-length % 4)
        if cflag == 0:
            records.append(body)
        elif cflag == 1:
            current = body
        elif cflag == 2:
            current += MAGIC + body
        else:
            records.append(current + MAGIC + body)
            current = None
    return records


def framed(payload: bytes) -> bytes:
    return b"".join(bytes(piece) for piece in framing.frame_record(payload))


def test_whole_record_is_header_data_and_padding():
    assert framed(b"abcde") == MAGIC + lrec(0, 5) + b"abcde" + b"\0\0\0"
    assert framed(b"abcd") == MAGIC + lrec(0, 4) + b"abcd"
    assert framed(b"") == MAGIC + lrec(0, 0)


def test_magic_at_aligned_offset_splits_the_record():
    payload = b"AAAA" + MAGIC + b"BBBBBB"
    expected = MAGIC + lrec(1, 4) + b"AAAA" + MAGIC + lrec(3, 6) + b"BBBBBB" + b"\0\0"
    assert framed(payload) == expected
    assert reference_read_all(expected) == [payload]


def test_two_magics_give_first_middle_and_last_parts():
    payload = MAGIC + b"XXXX" + MAGIC + b"Y"
    expected = MAGIC + lrec(1, 0) + MAGIC + lrec(2, 4) + b"XXXX" + MAGIC + lrec(3, 1) + b"Y\0\0\0"
    assert framed(payload) == expected
    joined, end = framing.read_framed(expected, 0)
    assert bytes(joined) == payload and end == len(expected)


def test_magic_at_unaligned_offset_is_left_alone():
    payload = b"AB" + MAGIC + b"CD"
    assert framed(payload) == MAGIC + lrec(0, 8) + payload


def frame_placed(payload: bytes) -> tuple[bool, bytes]:
    """Frame ``payload`` in place in a buffer of stale bytes, as the writer's in-place path does."""
    record = memoryview(bytearray(b"\xee" * framing.whole_record_length(len(payload))))
    record[8 : 8 + len(payload)] = payload
    return framing.frame_in_place(record, len(payload)), bytes(record)


@pytest.mark.parametrize("payload", [b"", b"a", b"abcd", b"abcde", b"AB" + MAGIC + b"CD", bytes(range(256)) * 5])
def test_framing_in_place_gives_the_bytes_of_a_whole_record(payload):
    placed, record = frame_placed(payload)
    assert placed and record == framed(payload) and len(record) == framing.whole_record_length(len(payload))


def test_framing_in_place_refuses_a_payload_that_must_be_cut_into_parts():
    payload = b"AAAA" + MAGIC + b"BBBBBB"
    placed, record = frame_placed(payload)
    assert not placed
    assert record == b"\xee" * 8 + payload + b"\xee" * 2  # nothing written


def test_payload_prefix_is_what_precedes_the_image():
    for labels in ([], [3.0], [1.0, 2.5, 7.0]):
        assert schema.payload_prefix(labels, 9) + b"IMG" == b"".join(schema.pack_payload(schema.Payload(labels, 9, b"IMG")))


def test_single_label_header_matches_mxnet_pack_layout():
    payload = b"".join(schema.pack_payload(schema.Payload([3.0], 17, b"JPEG")))
    assert payload == struct.pack("<IfQQ", 0, 3.0, 17, 0) + b"JPEG"
    parsed = schema.unpack_payload(payload)
    assert parsed.labels.tolist() == [3.0] and parsed.record_id == 17 and bytes(parsed.image) == b"JPEG"


def test_multi_label_header_puts_float32_vector_after_header():
    payload = b"".join(schema.pack_payload(schema.Payload([1.0, 0.5, 2.0], 5, b"IMG", b"MASK")))
    assert payload == struct.pack("<IfQQ", 3, 0.0, 5, 0) + struct.pack("<3f", 1.0, 0.5, 2.0) + b"IMG" + b"MASK"
    parsed = schema.unpack_payload(payload, (4,))
    assert parsed.labels.tolist() == [1.0, 0.5, 2.0]
    assert bytes(parsed.image) == b"IMG" and bytes(parsed.mask) == b"MASK"


def test_unpack_rejects_short_or_inconsistent_payloads():
    with pytest.raises(ValueError):
        schema.unpack_payload(b"short")
    with pytest.raises(ValueError):
        schema.unpack_payload(struct.pack("<IfQQ", 9, 0.0, 0, 0) + b"\0" * 8)


def test_read_framed_reports_bad_magic_and_truncation():
    good = framed(b"hello world")
    with pytest.raises(framing.FramingError, match="bad magic"):
        framing.read_framed(b"\0" * 4 + good[4:], 0)
    with pytest.raises(framing.FramingError, match="ends first"):
        framing.read_framed(good[:12], 0)
    with pytest.raises(framing.FramingError, match="continuation"):
        framing.read_framed(MAGIC + lrec(2, 0), 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from([MAGIC, b"\xce", b"\x00", b"ab", b"\x0a\x23", b"xyz!"]), max_size=12), max_size=8))
def test_frame_then_read_round_trips_any_payload(chunks):
    payloads = [b"".join(parts) for parts in chunks]
    data = b"".join(framed(payload) for payload in payloads)
    assert len(data) % 4 == 0
    assert reference_read_all(data) == payloads
    position, ours = 0, []
    while position < len(data):
        payload, position = framing.read_framed(data, position)
        ours.append(bytes(payload))
    assert ours == payloads


def test_idx_lines_parse_back():
    text = index_files.idx_bytes([0, 40]).decode()
    keys, offsets = index_files.parse_idx(text)
    assert keys.tolist() == [0, 1] and offsets.tolist() == [0, 40]
    with pytest.raises(ValueError, match="line 1"):
        index_files.parse_idx("0 0\n")


def test_record_index_dtype_is_20_bytes():
    assert schema.RECORD_INDEX_DTYPE.itemsize == 20
    assert np.zeros(2, schema.RECORD_INDEX_DTYPE).tobytes() == b"\0" * 40
