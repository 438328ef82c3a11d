"""ShardWriter: staged (O_DIRECT where possible) writes give exactly the RecordIO bytes of its records."""

import errno
import os
import random

import crc32c
import pytest

from recpack import format as fmt
from recpack import writer as writer_module
from recpack.reader import ShardReader
from recpack.writer import ShardWriter, StagingBuffers


def _payloads() -> list[bytes]:
    """Enough bytes to fill several staging blocks, in records of uneven sizes, some holding the magic."""
    rng = random.Random(5)
    sizes = [rng.randrange(1, 3 << 20) for _ in range(24)] + [1, 2, 3, 4097]
    payloads = [rng.randbytes(size) for size in sizes]
    payloads[3] = payloads[3][:400] + fmt.MAGIC_BYTES + payloads[3][404:]  # aligned: a multi-part record
    return payloads


def _write(directory, payloads):
    with ShardWriter(str(directory), "shard-00000", StagingBuffers()) as shard:
        for payload in payloads:
            shard.write([payload])
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
    expected = b"".join(bytes(piece) for payload in payloads for piece in fmt.frame_record(payload))
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
                shard.write([payload])
            raise RuntimeError("worker failed mid-shard")
    assert os.listdir(tmp_path) == []
