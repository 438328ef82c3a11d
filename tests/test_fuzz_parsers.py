"""Property-based fuzzing of every parser of untrusted bytes: random and mutated inputs.

Record framing, the two index files, the manifest loader, the list-file parser and the
MXNet ``.rec`` scanner.  For each: only recpack's own error types escape (or the one
documented ValueError of a pure helper), nothing hangs, and a length field cannot make
a parser allocate what the input does not hold.  Valid inputs still round-trip.

The default run keeps the examples few enough for CI; ``pytest -m slow`` runs many more.
"""

import io
import json
import struct
import tracemalloc

import crc32c
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recpack.errors import DatasetError, ListFileError, RecpackError
from recpack.format import manifest as mf
from recpack.format.framing import MAGIC, MAGIC_BYTES, MAX_PART_LENGTH, PART_HEADER, FramingError, frame_record, read_framed
from recpack.format.index_files import idx_bytes, load_rpi, parse_idx, rpi_bytes
from recpack.format.recscan import check_idx, scan_rec
from recpack.format.schema import IR_HEADER, RECORD_INDEX_DTYPE, index_row
from recpack.pack.sources import read_list

pytestmark = pytest.mark.timeout(300)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])
SLOW = settings(FAST, max_examples=5000)


# --- inputs: valid samples, and the ways they get damaged ------------------------------------


def mutated(sample: bytes) -> st.SearchStrategy[bytes]:
    """``sample`` damaged by a few edits: flipped bits, cuts, insertions, overwrites with telling words."""
    words = st.sampled_from([MAGIC_BYTES, struct.pack("<I", MAX_PART_LENGTH), struct.pack("<I", 0xFFFFFFFF),
                             struct.pack("<I", 3 << 29 | 8), struct.pack("<I", 1 << 29), b"\0\0\0\0", b"\n", b"\t"])

    @st.composite
    def edit(draw):
        data = bytearray(sample)
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["flip", "cut", "insert", "overwrite", "truncate"]))
            at = draw(st.integers(0, max(len(data) - 1, 0)))
            if kind == "flip" and data:
                data[at] ^= 1 << draw(st.integers(0, 7))
            elif kind == "cut":
                del data[at : at + draw(st.integers(1, 16))]
            elif kind == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=16))
            elif kind == "overwrite":
                data[at : at + 4] = draw(words)
            elif kind == "truncate":
                del data[at:]
        return bytes(data)

    return edit()


def fuzz_bytes(sample: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=512), mutated(sample))


def payloads() -> st.SearchStrategy[bytes]:
    """Payloads that sometimes hold the magic at aligned offsets (so the framing cuts them into parts)."""
    chunk = st.one_of(st.binary(min_size=1, max_size=12), st.just(MAGIC_BYTES))
    return st.lists(chunk, max_size=8).map(b"".join)


def framed_file(records: list[bytes]) -> tuple[bytes, list[int]]:
    """A .rec's bytes holding these payloads, and each record's offset."""
    pieces, offsets, offset = [], [], 0
    for payload in records:
        offsets.append(offset)
        framed = b"".join(bytes(piece) for piece in frame_record(payload))
        pieces.append(framed)
        offset += len(framed)
    return b"".join(pieces), offsets


SAMPLE_PAYLOADS = [IR_HEADER.pack(0, 1.0, 7, 0) + b"\xff\xd8 jpeg", b"abcd" + MAGIC_BYTES + b"efgh" + MAGIC_BYTES,
                   IR_HEADER.pack(2, 0.0, 8, 0) + struct.pack("<2f", 1, 2) + b"image"]
SAMPLE_REC, SAMPLE_OFFSETS = framed_file(SAMPLE_PAYLOADS)


def peak_allocation(function, *args) -> int:
    """Bytes allocated at the peak while ``function(*args)`` ran (errors it raises are swallowed)."""
    tracemalloc.start()
    try:
        function(*args)
    except Exception:  # noqa: BLE001 -- only the memory is measured here
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


# --- record framing ------------------------------------------------------------------------


@given(payloads())
@FAST
def test_framing_round_trips_any_payload(payload):
    data = b"".join(bytes(piece) for piece in frame_record(payload))
    parsed, end = read_framed(data, 0)
    assert bytes(parsed) == payload and end == len(data)


def parse_all_framed(data: bytes) -> None:
    position = 0
    while position < len(data):
        try:
            payload, position = read_framed(data, position)
        except FramingError:
            return
        assert len(payload) <= len(data)


@given(fuzz_bytes(SAMPLE_REC))
@FAST
def test_framing_of_damaged_bytes_raises_only_framing_errors(data):
    parse_all_framed(data)


def test_a_huge_length_field_allocates_nothing_before_it_is_checked():
    header = PART_HEADER.pack(MAGIC, MAX_PART_LENGTH)  # 512 MB announced, 8 bytes present
    with pytest.raises(FramingError, match="announces 536870911 bytes but the data ends first"):
        read_framed(header, 0)
    assert peak_allocation(read_framed, header, 0) < 1 << 20


# --- index files ---------------------------------------------------------------------------

SAMPLE_IDX = idx_bytes(np.asarray(SAMPLE_OFFSETS))
SAMPLE_ROWS = np.array([index_row(o, len(p), 0) for o, p in zip(SAMPLE_OFFSETS, SAMPLE_PAYLOADS)],
                       dtype=RECORD_INDEX_DTYPE)
SAMPLE_RPI = rpi_bytes(SAMPLE_ROWS)


@given(st.one_of(st.text(max_size=200), fuzz_bytes(SAMPLE_IDX).map(lambda b: b.decode("latin-1"))))
@FAST
def test_idx_parsing_raises_only_value_errors_naming_the_line(text):
    try:
        keys, offsets = parse_idx(text)
    except ValueError as error:
        assert str(error).startswith("line ")
    else:
        assert len(keys) == len(offsets)


@given(fuzz_bytes(SAMPLE_IDX))
@FAST
def test_an_idx_beside_a_rec_is_checked_with_dataset_errors_only(tmp_path, data):
    (tmp_path / "a.idx").write_bytes(data)
    try:
        check_idx(str(tmp_path / "a.idx"), "a.rec", SAMPLE_ROWS)
    except DatasetError as error:
        assert str(error).startswith(str(tmp_path / "a.idx"))
    else:
        assert data == SAMPLE_IDX or parse_idx(data.decode("ascii"))[1].tolist() == SAMPLE_OFFSETS


@given(fuzz_bytes(SAMPLE_RPI))
@FAST
def test_a_damaged_rpi_is_refused_with_a_dataset_error(tmp_path, data):
    path = tmp_path / "a.rpi"
    path.write_bytes(data)
    try:
        rows = load_rpi(str(path))
    except DatasetError as error:
        assert str(error).startswith(str(path))
    else:
        assert rows.dtype == RECORD_INDEX_DTYPE and rows.ndim == 1


def test_an_rpi_claiming_a_huge_shape_allocates_nothing(tmp_path):
    header = {"descr": np.lib.format.dtype_to_descr(RECORD_INDEX_DTYPE), "fortran_order": False,
              "shape": (1 << 40,)}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    path = tmp_path / "huge.rpi"
    path.write_bytes(buffer.getvalue() + bytes(40))
    with pytest.raises(DatasetError, match="huge.rpi"):
        load_rpi(str(path))
    assert peak_allocation(load_rpi, str(path)) < 1 << 20


# --- the manifest --------------------------------------------------------------------------

SAMPLE_MANIFEST = mf.to_json(mf.Manifest(
    (mf.ShardFiles("shard-00000", 3, mf.FileInfo("shard-00000.rec", 120, 5), mf.FileInfo("shard-00000.idx", 9, 6),
                   mf.FileInfo("shard-00000.rpi", 188, 7)),),
    label_width=2, classes=("a", "b"), created={"seed": 0}, stats={"mean": [0.5, 0.5, 0.5]}))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def damaged_manifests(draw) -> str:
    """The sample manifest with one value somewhere replaced by any JSON value, or removed."""
    data = json.loads(json.dumps(SAMPLE_MANIFEST))
    node, path = data, []
    while isinstance(node, (dict, list)) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        path.append(key)
        node = node[key]
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if not path:
        return json.dumps(draw(json_values))
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return json.dumps(data)


def load_manifest_text(folder, text) -> None:
    (folder / mf.MANIFEST_NAME).write_text(text)
    try:
        manifest = mf.load(str(folder))
    except DatasetError as error:  # ManifestError, or IncompleteDatasetError
        assert str(error).startswith(str(folder)) and "\n" not in str(error)
        return
    assert all(shard.records >= 0 and shard.rec.bytes >= 0 for shard in manifest.shards)
    assert manifest.label_width >= 1 and (manifest.stats is None or isinstance(manifest.stats, dict))


@given(st.one_of(damaged_manifests(), st.text(max_size=300), json_values.map(json.dumps),
                 fuzz_bytes(json.dumps(SAMPLE_MANIFEST).encode()).map(lambda b: b.decode("latin-1"))))
@FAST
def test_a_damaged_manifest_is_refused_with_a_manifest_error(tmp_path, text):
    load_manifest_text(tmp_path, text)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"format": "recpack", "version": 1e400}',
                                  json.dumps({**SAMPLE_MANIFEST, "num_records": 1e400})])
def test_manifests_that_break_the_json_reader_are_refused(tmp_path, text):
    load_manifest_text(tmp_path, text)
    with pytest.raises(DatasetError):
        mf.load(str(tmp_path))


# --- the list-file parser ------------------------------------------------------------------

SAMPLE_LIST = "# root: /data\na/1.jpg\t0\nb/2.jpg\t1\n3\t1\t0\tc/3.jpg\nd e.jpg 2\n".encode()


@given(st.one_of(fuzz_bytes(SAMPLE_LIST), st.text(max_size=300).map(str.encode)))
@FAST
def test_a_damaged_list_is_refused_with_one_line_list_errors(tmp_path, data):
    path = tmp_path / "list.txt"
    path.write_bytes(data)
    try:
        source = read_list(str(path), root=str(tmp_path))
    except ListFileError as error:
        assert str(error).startswith(f"{path}:") and "\n" not in str(error)
    except RecpackError as error:
        assert str(path) in str(error) and "\n" not in str(error)
    else:
        assert len(source) > 0


# --- the MXNet .rec scanner ----------------------------------------------------------------


def scan_bytes(folder, data: bytes, skip_damage: bool = False):
    path = folder / "f.rec"
    path.write_bytes(data)
    return scan_rec(str(path), chunk_bytes=64, skip_damage=skip_damage)  # small chunks: records cross refills


@given(st.lists(payloads(), max_size=6))
@FAST
def test_the_scanner_indexes_any_well_formed_rec(tmp_path, records):
    data, offsets = framed_file(records)
    scan = scan_bytes(tmp_path, data)
    assert scan.rows["offset"].tolist() == offsets and scan.rows["length"].tolist() == [len(p) for p in records]


@given(fuzz_bytes(SAMPLE_REC))
@FAST
def test_the_scanner_refuses_damaged_bytes_with_dataset_errors_naming_file_and_byte(tmp_path, data):
    try:
        scan = scan_bytes(tmp_path, data)
    except DatasetError as error:
        assert str(error).startswith(f"{tmp_path / 'f.rec'}: byte ")
    else:
        assert int(scan.rows["length"].sum()) <= len(data)


def assert_skipping_scan_is_sound(data: bytes, scan) -> None:
    """Every indexed record is well formed where the scan says; damage stretches are ordered and hold none."""
    spans = []
    for row in scan.rows:
        payload, end = read_framed(data, int(row["offset"]))
        assert len(payload) == row["length"] and crc32c.crc32c(payload) == row["crc32c"]
        spans.append((int(row["offset"]), end))
    stretches = [(damage.start, damage.end) for damage in scan.damage]
    assert stretches == sorted(stretches) and all(start < end <= len(data) for start, end in stretches)
    for start, end in stretches:
        assert not any(start < s_end and s_start < end for s_start, s_end in spans)


@given(fuzz_bytes(SAMPLE_REC))
@FAST
def test_a_scan_skipping_damage_never_fails_and_indexes_only_whole_records(tmp_path, data):
    scan = scan_bytes(tmp_path, data, skip_damage=True)
    assert_skipping_scan_is_sound(data, scan)
    assert (scan.bytes, scan.crc32c) == (len(data), crc32c.crc32c(data))


@given(st.lists(payloads(), min_size=2, max_size=6), st.data())
@FAST
def test_a_scan_skipping_damage_loses_only_the_damaged_record(tmp_path, records, draw):
    """One record's first magic destroyed: the scan resynchronises on the next record and keeps all the others."""
    data, offsets = framed_file(records)
    victim = draw.draw(st.integers(0, len(records) - 1))
    damaged = bytearray(data)
    damaged[offsets[victim] : offsets[victim] + 4] = draw.draw(st.sampled_from([b"\0" * 4, b"\xff" * 4, b"RIFF"]))
    scan = scan_bytes(tmp_path, bytes(damaged), skip_damage=True)
    assert_skipping_scan_is_sound(bytes(damaged), scan)
    assert scan.rows["offset"].tolist() == offsets[:victim] + offsets[victim + 1 :]
    end = offsets[victim + 1] if victim + 1 < len(offsets) else len(data)
    assert [(d.start, d.end) for d in scan.damage] == [(offsets[victim], end)]
    assert str(scan.damage[0]).startswith(f"bytes {offsets[victim]}-{end} skipped (byte {offsets[victim]}: bad magic")


def test_the_scanner_does_not_allocate_what_a_length_field_announces(tmp_path):
    path = tmp_path / "f.rec"
    path.write_bytes(PART_HEADER.pack(MAGIC, MAX_PART_LENGTH) + bytes(8))
    with pytest.raises(DatasetError, match="the part announces 536870911 bytes but the file ends at byte 16"):
        scan_rec(str(path))
    assert peak_allocation(scan_rec, str(path)) < 32 << 20  # the scan's own 4 MB chunk, not 512 MB


# --- many more examples: pytest -m slow ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_every_parser_on_many_more_damaged_inputs(tmp_path):
    @given(fuzz_bytes(SAMPLE_REC))
    @SLOW
    def framing_and_scan(data):
        parse_all_framed(data)
        try:
            scan_bytes(tmp_path, data)
        except DatasetError:
            pass
        assert_skipping_scan_is_sound(data, scan_bytes(tmp_path, data, skip_damage=True))

    @given(fuzz_bytes(SAMPLE_RPI))
    @SLOW
    def rpi(data):
        (tmp_path / "a.rpi").write_bytes(data)
        try:
            load_rpi(str(tmp_path / "a.rpi"))
        except DatasetError:
            pass

    @given(st.one_of(damaged_manifests(), fuzz_bytes(json.dumps(SAMPLE_MANIFEST).encode()).map(
        lambda b: b.decode("latin-1"))))
    @SLOW
    def manifest(text):
        load_manifest_text(tmp_path, text)

    for check in (framing_and_scan, rpi, manifest):
        check()
