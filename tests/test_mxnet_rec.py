"""Foreign .rec files: scanned into an index, read by RecordDataset, imported with ``recpack import``.

The core runs on .rec files framed by hand with ``recpack.format`` (no MXNet
needed); the tests marked ``mxnet`` repeat the round trip on files written by
MXNet's own ``MXIndexedRecordIO`` + ``recordio.pack`` (as im2rec --pass-through
does), including multi-label headers and multi-part records.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil

import crc32c
import numpy as np
import pytest
from conftest import run_cli
from test_mxnet_interop import framing_cases, mxnet_python, noise_jpeg, probe, with_magic_segment  # noqa: F401

from recpack.format import framing, schema, index_files
from recpack.read.dataset import RecordDataset
from recpack.read.decode import Augment
from recpack.errors import DatasetError, IncompleteDatasetError
from recpack.format.recscan import scan_rec
from recpack.pack.importer import import_rec
from recpack.pack.writer import ShardWriter


def records(count: int, width: int, seed: int = 0) -> list[tuple[list[float], int, bytes]]:
    """(labels, id, jpeg); record 2 carries the magic at aligned offsets, so it is stored in several parts."""
    out = []
    for index in range(count):
        jpeg = noise_jpeg(seed * 100 + index, 16 + 4 * index, 20)
        if index == 2:
            jpeg = with_magic_segment(jpeg)
        labels = [float(index % 4)] if width == 1 else [index + 0.25 * j for j in range(width)]
        out.append((labels, 1000 + index, jpeg))
    return out


def write_rec(path, payloads: list[bytes], idx: bool = True) -> None:
    """Frame payloads with recpack.format, as any RecordIO writer would; optionally an MXNet .idx."""
    data, offsets = bytearray(), []
    for payload in payloads:
        offsets.append(len(data))
        data += b"".join(bytes(piece) for piece in framing.frame_record(payload))
    path.write_bytes(bytes(data))
    if idx:
        path.with_suffix(".idx").write_bytes(index_files.idx_bytes(offsets))


def write_records(path, items, idx: bool = True) -> None:
    write_rec(path, [b"".join(schema.pack_payload(schema.Payload(labels, rid, jpeg))) for labels, rid, jpeg in items], idx)


def raw_samples(path) -> list[tuple[bytes, list[float]]]:
    """Every (image bytes, labels) RecordDataset yields in raw mode, in file order."""
    ds = RecordDataset(str(path), augment=None, shuffle=False)
    return [(bytes(image), np.atleast_1d(label.numpy()).astype(np.float32).tolist()) for image, label in ds]


def expected_samples(items) -> list[tuple[bytes, list[float]]]:
    return [(jpeg, np.asarray(labels, np.float32).tolist()) for labels, _, jpeg in items]


# --- scanning -----------------------------------------------------------------------------


def test_scan_reproduces_the_index_recpack_writes(tmp_path):
    items = records(9, 3)
    with ShardWriter(str(tmp_path), "shard") as writer:
        for labels, rid, jpeg in items:
            writer.write(schema.Payload(labels, rid, jpeg))
    scan = scan_rec(str(tmp_path / "shard.rec"))
    assert scan.rows.tobytes() == np.load(tmp_path / "shard.rpi").tobytes()
    assert (scan.bytes, scan.crc32c) == (writer.files.rec.bytes, writer.files.rec.crc32c)
    assert scan.label_width == 3
    data = (tmp_path / "shard.rec").read_bytes()
    _, lrec = framing.PART_HEADER.unpack_from(data, int(scan.rows["offset"][2]))
    assert framing.decode_lrec(lrec)[0] == framing.CFLAG_FIRST


@pytest.mark.parametrize("chunk", [8, 64, 1000, 1 << 20])
def test_scan_is_the_same_for_any_chunk_size(tmp_path, chunk):
    payloads = framing_cases()
    write_rec(tmp_path / "edge.rec", payloads)
    scan = scan_rec(str(tmp_path / "edge.rec"), chunk_bytes=chunk)
    data = (tmp_path / "edge.rec").read_bytes()
    assert scan.rows["offset"].tolist() == index_files.parse_idx((tmp_path / "edge.idx").read_text())[1].tolist()
    assert scan.rows["length"].tolist() == [len(p) for p in payloads]
    assert scan.rows["crc32c"].tolist() == [crc32c.crc32c(p) for p in payloads]
    assert (scan.bytes, scan.crc32c) == (len(data), crc32c.crc32c(data))


def one_line_error(path, **kwargs) -> str:
    with pytest.raises(DatasetError) as caught:
        scan_rec(str(path), **kwargs)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: byte ")
    return message


def test_damaged_files_fail_naming_file_and_offset(tmp_path):
    items = records(5, 1)
    write_records(tmp_path / "good.rec", items)
    data = (tmp_path / "good.rec").read_bytes()
    offsets = scan_rec(str(tmp_path / "good.rec")).rows["offset"].tolist()
    bad = tmp_path / "bad.rec"
    cases = {
        offsets[4] + 3: f"byte {offsets[4]}: truncated: the file ends inside a part header",
        offsets[4] + 20: f"byte {offsets[4]}: truncated: the part announces",
        len(data) - 1: f"byte {offsets[4]}: truncated: the part announces",  # the last padding byte is missing
    }
    first_part_length = framing.decode_lrec(framing.PART_HEADER.unpack_from(data, offsets[2])[1])[1]
    second_part = offsets[2] + 8 + first_part_length + framing.padding(first_part_length)
    cases[second_part] = f"byte {second_part}: truncated: the record that starts at byte {offsets[2]} has no last part"
    for cut, expected in cases.items():
        bad.write_bytes(data[:cut])
        assert expected in one_line_error(bad, chunk_bytes=64)
    bad.write_bytes(data[: offsets[3]] + b"\0" * 8 + data[offsets[3] + 8 :])
    assert f"byte {offsets[3]}: bad magic 0x00000000" in one_line_error(bad)
    bad.write_bytes(data[: offsets[2]] + data[second_part:])  # parts after the first, alone
    assert f"byte {offsets[2]}: continuation part (flag 2) without a first part" in one_line_error(bad)


def test_an_idx_that_disagrees_is_refused(tmp_path):
    write_records(tmp_path / "a.rec", records(4, 1))
    idx = tmp_path / "a.idx"
    lines = idx.read_text().splitlines()
    idx.write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(DatasetError, match=r"a\.idx: lists 3 records, .*a\.rec holds 4"):
        RecordDataset(str(tmp_path / "a.rec"), augment=None)
    idx.write_text("\n".join(lines[:3] + ["3\t7"]) + "\n")
    with pytest.raises(DatasetError, match=r"a\.idx: entry 4 \(key 3\) says byte 7, but record 3 of .* starts at byte"):
        import_rec([str(tmp_path / "a.rec")], str(tmp_path / "out"), show_progress=False)


# --- RecordDataset on .rec files ----------------------------------------------------------


@pytest.mark.parametrize("width", [1, 3])
@pytest.mark.parametrize("with_idx", [True, False], ids=["idx", "no-idx"])
def test_dataset_reads_a_rec_file_and_a_folder_of_them(tmp_path, width, with_idx):
    first, second = records(6, width, seed=1), records(5, width, seed=2)
    write_records(tmp_path / "a.rec", first, idx=with_idx)
    write_records(tmp_path / "b.rec", second, idx=with_idx)
    before = sorted(os.listdir(tmp_path))
    assert raw_samples(tmp_path / "a.rec") == expected_samples(first)
    assert raw_samples(tmp_path) == expected_samples(first + second)
    assert sorted(os.listdir(tmp_path)) == before, "nothing is cached beside the data"
    ds = pickle.loads(pickle.dumps(RecordDataset(str(tmp_path), augment=None, shuffle=False)))  # as to a worker
    assert ds.manifest.label_width == width and ds.manifest.num_records == 11
    assert [bytes(image) for image, _ in ds] == [jpeg for _, _, jpeg in first + second]


def test_records_with_fewer_labels_are_padded_to_the_widest(tmp_path):
    items = [([1.0, 2.0, 3.0], 0, noise_jpeg(1, 16, 16)), ([4.0], 1, noise_jpeg(2, 16, 16)),
             ([5.0, 6.0], 2, noise_jpeg(3, 16, 16))]
    write_records(tmp_path / "a.rec", items)
    expected = [[1, 2, 3], [4, -1, -1], [5, 6, -1]]
    assert [labels for _, labels in raw_samples(tmp_path / "a.rec")] == expected
    ds = RecordDataset(str(tmp_path / "a.rec"), batch_size=3, shuffle=False, augment=Augment(size=8, train=False))
    ((images, labels),) = list(ds)
    assert images.shape == (3, 3, 8, 8) and labels.tolist() == expected


def test_scanned_records_are_still_verified(tmp_path):
    items = records(4, 1)
    write_records(tmp_path / "a.rec", items)
    ds = RecordDataset(str(tmp_path / "a.rec"), augment=None, shuffle=False)
    data = bytearray((tmp_path / "a.rec").read_bytes())
    data[-40] ^= 0xFF  # inside the last image, after the scan
    (tmp_path / "a.rec").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"a\.rec: record 3: CRC32C mismatch"):
        list(ds)


def test_a_manifestless_recpack_folder_is_still_incomplete(tmp_path):
    write_records(tmp_path / "shard-00000.rec", records(2, 1))
    (tmp_path / "shard-00000.rpi").write_bytes(b"")
    with pytest.raises(IncompleteDatasetError, match="incomplete dataset"):
        RecordDataset(str(tmp_path))


# --- recpack import ---------------------------------------------------------------------


def fingerprint(path) -> tuple:
    if path.is_dir():
        return tuple((child.name, fingerprint(child)) for child in sorted(path.iterdir()))
    stat = os.stat(path)
    return hashlib.sha256(path.read_bytes()).hexdigest(), stat.st_size, stat.st_mtime_ns


def check_import(recs: list, out, items) -> dict:
    """Import through the CLI; verify, info and RecordDataset must then agree, and the .rec files be untouched."""
    before = {rec: fingerprint(rec) for rec in recs}
    run_cli("import", *recs, out, "--quiet")
    assert {rec: fingerprint(rec) for rec in recs} == before
    assert "every checksum matches" in run_cli("verify", out, "--quiet").stdout
    info = json.loads(run_cli("info", "--json", out).stdout)
    assert info["num_records"] == len(items) and info["created"]["imported"] is True
    assert raw_samples(out) == expected_samples(items)
    return json.loads((out / "recpack.json").read_text())


def test_import_indexes_rec_files_in_place(tmp_path):
    recs = tmp_path / "recs"
    recs.mkdir()
    first, second = records(6, 3, seed=1), records(5, 3, seed=2)
    write_records(recs / "a.rec", first)
    write_records(recs / "b.rec", second, idx=False)
    out = tmp_path / "out"
    manifest = check_import([recs / "a.rec", recs / "b.rec"], out, first + second)
    a, b = manifest["shards"]
    assert (a["files"]["rec"]["name"], a["files"]["idx"]["name"], a["files"]["rpi"]["name"]) == (
        "../recs/a.rec", "../recs/a.idx", "a.rpi")
    assert (b["files"]["rec"]["name"], b["files"]["idx"]["name"]) == ("../recs/b.rec", "b.idx")
    assert sorted(os.listdir(out)) == ["a.rpi", "b.idx", "b.rpi", "dataset.idx", "recpack.json"]
    assert manifest["label_width"] == 3 and "made from" not in run_cli("info", out).stdout  # no pack provenance

    again = run_cli("import", recs / "a.rec", out, check=False)
    assert again.returncode == 1 and "already holds a dataset" in again.stderr

    data = bytearray((recs / "b.rec").read_bytes())
    data[-40] ^= 0xFF
    (recs / "b.rec").write_bytes(bytes(data))
    damaged = run_cli("verify", out, "--quiet", check=False)
    assert damaged.returncode == 1 and "../recs/b.rec: record 4: CRC32C mismatch" in damaged.stderr


def test_import_of_a_truncated_rec_is_one_line(tmp_path):
    write_records(tmp_path / "a.rec", records(3, 1))
    data = (tmp_path / "a.rec").read_bytes()
    (tmp_path / "a.rec").write_bytes(data[:-100])
    (tmp_path / "a.idx").unlink()
    done = run_cli("import", tmp_path / "a.rec", tmp_path / "out", "--quiet", check=False)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and f"{tmp_path / 'a.rec'}: byte " in done.stderr
    assert "truncated" in done.stderr


def test_import_of_only_empty_recs_is_refused_before_writing(tmp_path):
    """RecordDataset refuses a dataset without records, so import must not make one that info and verify pass."""
    (tmp_path / "empty.rec").write_bytes(b"")
    done = run_cli("import", tmp_path / "empty.rec", tmp_path / "out", "--quiet", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr == f"recpack: error: {tmp_path / 'empty.rec'}: holds no records (0 bytes); nothing to import\n"
    assert not (tmp_path / "out").exists()
    folder = tmp_path / "recs"
    folder.mkdir()
    (folder / "a.rec").write_bytes(b"")
    (folder / "b.rec").write_bytes(b"")
    done = run_cli("import", folder, tmp_path / "out", "--quiet", check=False)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert f"{folder / 'a.rec'}, {folder / 'b.rec'}: each hold no records" in done.stderr
    assert not (tmp_path / "out").exists()


def test_an_empty_rec_beside_others_imports_as_an_empty_shard(tmp_path):
    items = records(3, 1)
    write_records(tmp_path / "a.rec", items)
    (tmp_path / "b.rec").write_bytes(b"")
    manifest = check_import([tmp_path / "a.rec", tmp_path / "b.rec"], tmp_path / "out", items)
    assert [shard["records"] for shard in manifest["shards"]] == [3, 0]


# --- the same with files MXNet wrote ------------------------------------------------------


def mxnet_write(python: str, rec, items) -> list[bytes]:
    """Have MXNet write ``items`` (labels, id, jpeg) with MXIndexedRecordIO + recordio.pack."""
    request = [{"label": labels, "id": rid, "image": jpeg.hex()} for labels, rid, jpeg in items]
    payloads = probe(python, "write", rec, rec.with_suffix(".idx"), stdin=json.dumps(request))
    return [bytes.fromhex(p) for p in payloads]


@pytest.mark.mxnet
@pytest.mark.parametrize("width", [1, 3])
def test_rec_files_written_by_mxnet(mxnet_python, tmp_path, width):  # noqa: F811
    recs = tmp_path / "recs"
    recs.mkdir()
    # flag 0 (one label in the header) for width 1, else a float vector: flag = width, as im2rec --pack-label
    first, second = records(7, width, seed=3), records(6, width, seed=4)
    payloads = mxnet_write(mxnet_python, recs / "train.rec", first) + mxnet_write(mxnet_python, recs / "val.rec", second)

    scans = [scan_rec(str(recs / name)) for name in ("train.rec", "val.rec")]
    rows = np.concatenate([scan.rows for scan in scans])
    assert rows["length"].tolist() == [len(p) for p in payloads]
    assert rows["crc32c"].tolist() == [crc32c.crc32c(p) for p in payloads]
    assert scans[0].rows["offset"].tolist() == index_files.parse_idx((recs / "train.idx").read_text())[1].tolist()
    assert all(scan.label_width == width for scan in scans)
    data = (recs / "train.rec").read_bytes()
    cflags = [framing.decode_lrec(framing.PART_HEADER.unpack_from(data, o)[1])[0] for o in scans[0].rows["offset"].tolist()]
    assert cflags.count(framing.CFLAG_FIRST) == 1, "MXNet should have cut the crafted record into parts"

    assert raw_samples(recs / "train.rec") == expected_samples(first)
    assert raw_samples(recs) == expected_samples(first + second)
    check_import([recs / "train.rec", recs / "val.rec"], tmp_path / "out", first + second)

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(recs / "val.rec", bare / "val.rec")
    assert raw_samples(bare / "val.rec") == expected_samples(second)
    check_import([bare], tmp_path / "out-bare", second)
    assert (tmp_path / "out-bare" / "val.idx").read_text() == (recs / "val.idx").read_text()
