"""ShardWriter: staged (O_DIRECT where possible) writes give exactly the RecordIO bytes of its records."""

import errno
import os
import random

import crc32c
import pytest

from recpack.format import framing
from recpack.pack import writer as writer_module
from recpack.read.shard_reader import ShardReader
from recpack.pack.writer import ShardWriter, StagingBuffers


def _payloads() -> list[bytes]:
    """Enough bytes to fill several staging blocks, in records of uneven sizes, some holding the magic."""
    rng = random.Random(5)
    sizes = [rng.randrange(1, 3 << 20) for _ in range(24)] + [1, 2, 3, 4097]
    payloads = [rng.randbytes(size) for size in sizes]
    payloads[3] = payloads[3][:400] + framing.MAGIC_BYTES + payloads[3][404:]  # aligned: a multi-part record
    return payloads


def _write(directory, payloads):
    with ShardWriter(str(directory), "shard-00000", StagingBuffers()) as shard:
        for payload in payloads:
            shard.write_raw(payload)
    return shard.files


@pytest.fixture(params=["direct", "refused"])
def open_mode(request, monkeypatch):
    """Run once as the filesystem allows, once as if it refused O_DIRECT (tmpfs on older kernels)."""
    refused = []
    if request.param == "refused":
        real_open = os.open

        def refuse_direct(path, flags, *args):
            if flags & getattr(os, "O_DIRECT", 0):
                refused.append(path)
                raise OSError(errno.EINVAL, "Invalid argument", path)
            return real_open(path, flags, *args)

        monkeypatch.setattr(writer_module.os, "open", refuse_direct)
    yield request.param
    assert bool(refused) == (request.param == "refused")


def test_shard_bytes_are_the_framed_records_whatever_the_block_boundaries(tmp_path, open_mode):
    payloads = _payloads()
    files = _write(tmp_path, payloads)
    expected = b"".join(bytes(piece) for payload in payloads for piece in framing.frame_record(payload))
    assert sum(len(p) for p in payloads) > 3 * writer_module._RecordFile.BLOCK
    data = (tmp_path / "shard-00000.rec").read_bytes()
    assert data == expected  # no O_DIRECT padding left at the end
    assert (files.rec.bytes, files.rec.crc32c) == (len(expected), crc32c.crc32c(expected))
    reader = ShardReader(str(tmp_path / "shard-00000.rec"), str(tmp_path / "shard-00000.rpi"), "shard-00000")
    assert [bytes(reader.read(i)) for i in range(len(payloads))] == payloads
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_a_failed_shard_leaves_no_files(tmp_path, open_mode):
    with pytest.raises(RuntimeError):
        with ShardWriter(str(tmp_path), "shard-00000", StagingBuffers()) as shard:
            for payload in _payloads()[:8]:
                shard.write_raw(payload)
            raise RuntimeError("worker failed mid-shard")
    assert os.listdir(tmp_path) == []


def test_records_placed_in_the_buffer_give_the_same_shard_as_written_ones(tmp_path, open_mode):
    """Reserve/commit where the record fits the current buffer, write where it does not; one abandoned slot."""
    payloads = _payloads()
    (tmp_path / "written").mkdir()
    expected = _write(tmp_path / "written", payloads)
    placed = []
    with ShardWriter(str(tmp_path), "shard-00000", StagingBuffers()) as shard:
        shard.reserve(b"stale", 1000).image[:] = b"x" * 1000  # filled, never committed: must leave no trace
        for index, payload in enumerate(payloads):
            slot = shard.reserve(payload[:3], len(payload) - 3) if len(payload) >= 3 else None
            if slot is None:
                shard.write_raw(payload)
                continue
            slot.image[:] = payload[3:]
            shard.commit(slot)
            placed.append(index)
    assert len(placed) >= len(payloads) // 2 and 3 in placed  # the path was taken, by the record holding the magic too
    for suffix in (".rec", ".idx", ".rpi"):
        assert (tmp_path / f"shard-00000{suffix}").read_bytes() == (tmp_path / "written" / f"shard-00000{suffix}").read_bytes()
    assert (shard.files.rec, shard.files.rpi) == (expected.rec, expected.rpi)


def test_a_record_that_would_straddle_two_buffers_gets_no_slot(tmp_path):
    block = writer_module._RecordFile.BLOCK
    with ShardWriter(str(tmp_path), "shard-00000", StagingBuffers()) as shard:
        shard.write_raw(bytes(block // 2))
        assert shard.reserve(b"", block // 2) is None  # with its 8-byte part header it does not fit
        assert len(shard.reserve(b"", block // 2 - 16).image) == block // 2 - 16
