"""Faults in a dataset at rest: truncated shards, flipped bytes, index files lost or swapped, a manifest
that disagrees with the files, a stale key index, a damaged MXNet ``.rec``.

``recpack verify`` must name each problem; the reader must raise a clear error (default) or
skip and count (``on_error="skip"``), never deliver a corrupt record, never hang.
"""

import json
import os
import shutil
import warnings

import lmdb
import numpy as np
import pytest

import corpus
from conftest import run_cli
from recpack.errors import CorruptRecordError, DatasetError, RecpackError
from recpack.format import keyindex
from recpack.format import manifest as mf
from recpack.format.framing import frame_record
from recpack.format.schema import IR_HEADER
from recpack.pack.packer import PackOptions, pack
from recpack.pack.sources import open_source
from recpack.read.dataset import ReadOptions, RecordDataset

pytestmark = pytest.mark.timeout(120)

SHARDS = 4


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """42 small JPEGs in 4 shards (11, 11, 10, 10), and a second pack of the same images in another order."""
    root = tmp_path_factory.mktemp("atrest")
    corpus.make_small_jpegs(root / "images" / "a", 42, size=(48, 32), seed=3)
    for name, seed in (("clean", 0), ("other", 5)):
        pack(open_source(str(root / "images")), str(root / name), PackOptions(shards=SHARDS, seed=seed, workers=1),
             show_progress=False)
    return root


def images_of(dataset) -> set[bytes]:
    """The JPEG bytes of every record of a sound dataset."""
    return {bytes(image) for images, _ in RecordDataset(str(dataset), batch_size=8, augment=None) for image in images}


def shard_file(folder, shard: int, suffix: str):
    return folder / f"shard-{shard:05d}{suffix}"


def rows(folder, shard: int) -> np.ndarray:
    return np.load(shard_file(folder, shard, ".rpi"))


def flip(path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x5A]))


def edit_manifest(folder, change) -> None:
    data = json.loads((folder / mf.MANIFEST_NAME).read_text())
    change(data)
    data["num_records"] = sum(shard["records"] for shard in data["shards"])
    (folder / mf.MANIFEST_NAME).write_text(json.dumps(data))


def truncate(folder, root):
    path = shard_file(folder, 1, ".rec")
    os.truncate(path, int(rows(folder, 1)[7]["offset"]) + 30)  # mid-record 7 of 11


def flip_payload(folder, root):
    flip(shard_file(folder, 2, ".rec"), int(rows(folder, 2)[4]["offset"]) + 8 + 40)


def flip_header(folder, root):
    flip(shard_file(folder, 2, ".rec"), int(rows(folder, 2)[5]["offset"]) + 1)  # the magic of record 5


def flip_length(folder, root):
    flip(shard_file(folder, 0, ".rec"), int(rows(folder, 0)[2]["offset"]) + 5)  # the length word of record 2


def lose(suffix):
    return lambda folder, root: os.unlink(shard_file(folder, 3, suffix))


def swap(suffix, first=0, second=3):
    def change(folder, root):
        a, b = shard_file(folder, first, suffix), shard_file(folder, second, suffix)
        a.rename(folder / "t")
        b.rename(a)
        (folder / "t").rename(b)
    return change


def fewer_records_in_manifest(folder, root):
    edit_manifest(folder, lambda data: data["shards"][1].update(records=10))


def more_records_in_manifest(folder, root):
    edit_manifest(folder, lambda data: data["shards"][1].update(records=12))


def other_bytes_in_manifest(folder, root):
    edit_manifest(folder, lambda data: data["shards"][2]["files"]["rec"].update(crc32c="0badf00d"))


def stale_key_index(folder, root):
    """The key index of another pack of the same images: as many keys, other places."""
    shutil.rmtree(folder / mf.KEY_INDEX_NAME)
    shutil.copytree(root / "other" / mf.KEY_INDEX_NAME, folder / mf.KEY_INDEX_NAME)


def scrambled_rpi_offsets(folder, root):
    data = rows(folder, 2)
    data["offset"] = data["offset"][::-1].copy()
    with open(shard_file(folder, 2, ".rpi"), "wb") as handle:
        np.save(handle, data)


# damage -> (what verify says, how the default reader fails: an error type and words, or None if it reads all)
DAMAGE = {
    "truncated shard": (truncate, "shard-00001.rec: ", (CorruptRecordError, "shard-00001: record ")),
    "flipped payload byte": (flip_payload, "shard-00002.rec: record 4: CRC32C mismatch",
                             (CorruptRecordError, "shard-00002: record 4: CRC32C mismatch")),
    "flipped magic": (flip_header, "shard-00002.rec: record 5: bad magic",
                      (CorruptRecordError, "shard-00002: record 5: bad magic")),
    "flipped length": (flip_length, "shard-00000.rec: record 2: ", (CorruptRecordError, "shard-00000: record 2: ")),
    ".idx lost": (lose(".idx"), "shard-00003.idx: missing file", None),
    ".rpi lost": (lose(".rpi"), "shard-00003.rpi: missing file", (DatasetError, "shard-00003.rpi")),
    ".rec lost": (lose(".rec"), "shard-00003.rec: missing file", (DatasetError, "shard-00003")),
    ".idx swapped": (swap(".idx"), "shard-00000.idx: ", None),
    ".rpi swapped, other count": (swap(".rpi"), "shard-00000.rpi: ", (DatasetError, "shard-0000")),
    ".rpi swapped, same count": (swap(".rpi", 2, 3), "shard-00002.rpi: ", (CorruptRecordError, "shard-0000")),
    ".rpi offsets scrambled": (scrambled_rpi_offsets, "shard-00002.rpi: CRC32C mismatch",
                               (DatasetError, "shard-00002.rpi: record 0 of the record index overlaps the next")),
    "manifest: fewer records": (fewer_records_in_manifest, "shard-00001.rpi: 11 records, the manifest says 10",
                                (DatasetError, "shard-00001.rpi: 11 records, the manifest says 10")),
    "manifest: more records": (more_records_in_manifest, "shard-00001.rpi: 11 records, the manifest says 12",
                               (DatasetError, "shard-00001.rpi: 11 records, the manifest says 12")),
    "manifest: other checksum": (other_bytes_in_manifest, "shard-00002.rec: CRC32C of the file mismatch", None),
    "stale key index": (stale_key_index, "keys.lmdb: stale", None),
}


@pytest.fixture(params=sorted(DAMAGE))
def damaged(request, packed, tmp_path):
    name = request.param
    folder = tmp_path / "damaged"
    shutil.copytree(packed / "clean", folder)
    DAMAGE[name][0](folder, packed)
    return name, folder


def test_verify_names_the_problem_in_one_line(damaged):
    name, folder = damaged
    result = run_cli("verify", folder, "--quiet", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("recpack: corrupt: ") for line in lines), result.stderr
    assert any(DAMAGE[name][1] in line for line in lines), (name, result.stderr)


def read_all(folder, on_error: str) -> tuple[list[bytes], list[str]]:
    """Every image the reader delivers, and the warnings it gave."""
    dataset = RecordDataset(str(folder), batch_size=8, augment=None, on_error=on_error,
                            read=ReadOptions(shuffle_buffer=8, window=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        delivered = [bytes(image) for images, _ in dataset for image in images]
    return delivered, [str(w.message) for w in caught]


def test_the_default_reader_raises_a_clear_error_or_delivers_only_sound_records(damaged, packed):
    name, folder = damaged
    failure = DAMAGE[name][2]
    if failure is None:
        delivered, _ = read_all(folder, "raise")
        assert sorted(delivered) == sorted(images_of(packed / "clean"))
        return
    kind, words = failure
    with pytest.raises(RecpackError) as raised:
        read_all(folder, "raise")
    assert isinstance(raised.value, kind) and words in str(raised.value), (name, repr(raised.value))
    assert "\n" not in str(raised.value)


def test_the_skipping_reader_delivers_sound_records_and_counts_the_rest(damaged, packed):
    name, folder = damaged
    sound = images_of(packed / "clean")
    failure = DAMAGE[name][2]
    if failure is not None and failure[0] is not CorruptRecordError:  # the shard cannot be read at all
        with pytest.raises(failure[0]):
            read_all(folder, "skip")
        return
    delivered, said = read_all(folder, "skip")
    skipped = [message for message in said if message.startswith("recpack: skipped shard-")]
    assert set(delivered) <= sound  # never a corrupt record
    assert len(delivered) + len(skipped) == len(sound), (name, said)
    assert len(skipped) == len(said)  # every warning is one skipped record, named


def test_skipping_in_dataloader_workers_delivers_every_sound_record_and_no_other(packed, tmp_path):
    """(The warnings are the workers': each worker prints its own.)"""
    from torch.utils.data import DataLoader

    folder = tmp_path / "damaged"
    shutil.copytree(packed / "clean", folder)
    flip_payload(folder, packed)
    dataset = RecordDataset(str(folder), batch_size=8, augment=None, on_error="skip")
    delivered = [bytes(i) for images, _ in DataLoader(dataset, batch_size=None, num_workers=2) for i in images]
    assert set(delivered) <= images_of(packed / "clean") and len(delivered) == 41


def test_get_refuses_a_stale_key_index_instead_of_returning_another_image(packed, tmp_path):
    folder = tmp_path / "stale"
    shutil.copytree(packed / "clean", folder)
    stale_key_index(folder, packed)
    key = sorted((packed / "images" / "a").iterdir())[0].relative_to(packed / "images")
    result = run_cli("get", folder, str(key), "-o", tmp_path / "out.jpg", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"recpack: error: {folder / mf.KEY_INDEX_NAME}: ") and "stale" in result.stderr


@pytest.mark.parametrize("record", [8, 10])  # cut before a middle record, and before the last
def test_get_of_a_record_a_truncated_shard_lost_is_one_line(packed, tmp_path, record):
    folder = tmp_path / "cut"
    shutil.copytree(packed / "clean", folder)
    truncate(folder, packed)  # mid-record 7 of shard 1
    key = next(key for key, shard, index, _ in keyindex.entries(str(folder)) if (shard, index) == (1, record))
    result = run_cli("get", folder, key, "-o", tmp_path / "out.jpg", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"recpack: error: shard-00001: record {record}: ") and result.stderr.count("\n") == 1


def test_get_refuses_a_key_index_pointing_past_the_shards(packed, tmp_path):
    folder = tmp_path / "short"
    shutil.copytree(packed / "clean", folder)
    env = lmdb.open(str(folder / mf.KEY_INDEX_NAME), map_size=1 << 20, subdir=True)
    with env.begin(write=True) as txn:
        key, value = next((k, v) for k, v in txn.cursor() if not k.startswith(b"\0"))  # a key, not a shard's entry
        txn.put(key, (9).to_bytes(4, "little") + value[4:])  # shard 9 of 4
    env.close()
    record = int.from_bytes(value[4:8], "little")
    result = run_cli("get", folder, key.decode(), "-o", tmp_path / "out.jpg", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr == (f"recpack: error: {folder / mf.KEY_INDEX_NAME}: stale: key {key.decode()!r} points at "
                             f"shard 9 record {record}, which the dataset does not hold; recpack verify checks every "
                             "entry\n")
    verify = run_cli("verify", folder, "--quiet", check=False)
    assert verify.stderr == (f"recpack: corrupt: {mf.KEY_INDEX_NAME}: stale: key {key.decode()!r} points at shard 9 "
                             f"record {record}, which the dataset does not hold\n")


# --- an MXNet .rec without recpack's index ---------------------------------------------------


def write_rec(path, count: int) -> list[int]:
    offsets, pieces, offset = [], [], 0
    for record in range(count):
        payload = IR_HEADER.pack(0, float(record), record, 0) + corpus_jpeg(record)
        offsets.append(offset)
        framed = b"".join(bytes(piece) for piece in frame_record(payload))
        pieces.append(framed)
        offset += len(framed)
    path.write_bytes(b"".join(pieces))
    return offsets


_JPEGS: dict[int, bytes] = {}


def corpus_jpeg(index: int) -> bytes:
    if not _JPEGS:
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as folder:
            for number, path in enumerate(corpus.make_small_jpegs(Path(folder), 12, size=(40, 30), seed=9)):
                _JPEGS[number] = path.read_bytes()
    return _JPEGS[index % len(_JPEGS)]


def test_a_damaged_rec_is_refused_by_default_and_read_around_the_damage_when_skipping(tmp_path):
    path = tmp_path / "train.rec"
    offsets = write_rec(path, 12)
    data = bytearray(path.read_bytes())
    data[offsets[5] : offsets[5] + 4] = b"\0\0\0\0"  # record 5's magic
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=f"^{path}: byte {offsets[5]}: bad magic 0x00000000"):
        RecordDataset(str(path), batch_size=4)
    with pytest.warns(UserWarning, match=f"recpack: skipped damage in {path}: bytes {offsets[5]}-{offsets[6]} "
                                         f"skipped \\(byte {offsets[5]}: bad magic 0x00000000"):
        dataset = RecordDataset(str(path), batch_size=4, augment=None, on_error="skip", shuffle=False)
    labels = [int(label) for _, batch in dataset for label in batch]
    assert labels == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert dataset.manifest.created["skipped"] == [
        f"{path}: bytes {offsets[5]}-{offsets[6]} skipped (byte {offsets[5]}: bad magic 0x00000000 "
        "(not RecordIO, or a damaged part))"]


def test_a_truncated_rec_is_read_up_to_the_damage_when_skipping(tmp_path):
    path = tmp_path / "train.rec"
    offsets = write_rec(path, 8)
    os.truncate(path, offsets[6] + 20)
    with pytest.warns(UserWarning, match=f"bytes {offsets[6]}-{offsets[6] + 20} skipped"):
        dataset = RecordDataset(str(path), batch_size=4, augment=None, on_error="skip", shuffle=False)
    assert [int(label) for _, batch in dataset for label in batch] == [0, 1, 2, 3, 4, 5]
