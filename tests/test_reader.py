"""ShardReader: whichever way a record is read, a damaged one is named by shard, record and file offset."""

import random

import pytest

from recpack.format import framing
from recpack.errors import CorruptRecordError
from recpack.read.shard_reader import ShardReader
from recpack.pack.writer import ShardWriter, StagingBuffers

RECORDS = 40


@pytest.fixture
def shard(tmp_path):
    """A shard of RECORDS records of 3-6 KB each: far more than one read chunk and one mmap granule."""
    rng = random.Random(7)
    with ShardWriter(str(tmp_path), "shard-00000", StagingBuffers()) as writer:
        for _ in range(RECORDS):
            writer.write_raw(rng.randbytes(rng.randrange(3000, 6000)).replace(framing.MAGIC_BYTES, b"\0" * 4))
    reader = ShardReader(str(tmp_path / "shard-00000.rec"), str(tmp_path / "shard-00000.rpi"), "shard-00000")
    return reader


def _read(reader: ShardReader, way: str, record: int) -> None:
    """Read ``record`` the given way, from far enough away that the buffer does not start at file byte 0."""
    if way == "sequential":  # RecordDataset's fallback and recpack verify
        for _ in reader.iter_records(chunk_bytes=8192):
            pass
    elif way == "mapped":  # RecordDataset's runs
        first = record - 3
        assert int(reader.rows[first]["offset"]) >= 4096
        for payload in reader.read_run(first, record + 1):
            if isinstance(payload, CorruptRecordError):
                raise payload
    else:  # recpack get
        reader.read(record)


def _patch(path: str, at: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(at)
        handle.write(data)


def _damage(reader: ShardReader, how: str) -> tuple[int, str]:
    """Damage the shard file; the record hit and the problem the reader must report (without its offset)."""
    last = RECORDS - 1
    offset = int(reader.rows[last]["offset"])
    if how == "truncated by 1000 bytes":
        with open(reader.rec_path, "r+b") as handle:
            handle.truncate(handle.seek(0, 2) - 1000)
        return last, "part at file byte {} announces"
    if how == "truncated in a part header":
        with open(reader.rec_path, "r+b") as handle:
            handle.truncate(offset + 3)
        return last, "truncated part header at file byte {}"
    record = RECORDS - 5
    offset = int(reader.rows[record]["offset"])
    if how == "bad magic":
        _patch(reader.rec_path, offset, b"\0" * 4)
        return record, "bad magic 0x00000000 at file byte {}"
    length = int(reader.rows[record]["length"])
    _patch(reader.rec_path, offset + 4, framing.PART_HEADER.pack(0, framing.encode_lrec(framing.CFLAG_MIDDLE, length))[4:])
    return record, f"unexpected continuation flag {framing.CFLAG_MIDDLE} at file byte {{}}"


@pytest.mark.parametrize("way", ["sequential", "mapped", "one"])
@pytest.mark.parametrize("how", ["truncated by 1000 bytes", "truncated in a part header", "bad magic", "continuation flag"])
def test_framing_errors_give_the_file_offset_of_the_damage(shard, way, how):
    record, problem = _damage(shard, how)
    offset = int(shard.rows[record]["offset"])
    assert offset > 8192  # not at the start of any buffer the reader uses, so only a file offset matches
    with pytest.raises(CorruptRecordError) as caught:
        _read(shard, way, record)
    assert caught.value.record == record
    assert str(caught.value).startswith(f"shard-00000: record {record}: {problem.format(offset)}")
