"""Endurance: thousands of steps over a small dataset, in this process's threads and in DataLoader
workers: peak RSS flat after the first epoch, and descriptors, threads, processes and shared memory
back where they were once iteration ends or is abandoned.  An epoch under a memory limit smaller
than the dataset.

Each loop runs in a child process (``reading_child.py``), which reports what it measured.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import corpus
from recpack.format.framing import frame_record
from recpack.format.schema import IR_HEADER
from recpack.pack.packer import PackOptions, pack
from recpack.pack.sources import open_source

pytestmark = [pytest.mark.timeout(600), pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")]

CHILD = Path(__file__).with_name("reading_child.py")
STEPS = 3000
RSS_GROWTH = 1.10  # the bound: peak RSS within 10% of the first epoch's


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """400 tiny JPEGs in 5 shards: 25 batches of 16 an epoch."""
    root = tmp_path_factory.mktemp("endure")
    for label in range(4):
        corpus.make_small_jpegs(root / "images" / f"c{label}", 100, size=(40, 32), seed=label)
    pack(open_source(str(root / "images")), str(root / "out"), PackOptions(shards=5, workers=2), show_progress=False)
    return root / "out"


def child(*args, timeout=500) -> dict:
    result = subprocess.run([sys.executable, str(CHILD), *map(str, args)], capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["threads", "workers"])
def test_thousands_of_steps_keep_peak_memory_flat_and_give_everything_back(small, mode):
    found = child("endure", small, mode, STEPS)
    assert found["steps"] >= STEPS and found["epochs"] >= STEPS // 25
    for first, last in zip(found["first"], found["last"]):  # this process, then each worker
        assert last <= first * RSS_GROWTH, (mode, found["first"], found["last"])
    assert found["leaks"] == {}, found["leaks"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["threads", "workers"])
def test_many_more_steps(small, mode):
    found = child("endure", small, mode, 40_000, timeout=3000)
    for first, last in zip(found["first"], found["last"]):
        assert last <= first * RSS_GROWTH, (mode, found["first"], found["last"])
    assert found["leaks"] == {}


@pytest.mark.parametrize("mode", ["threads", "workers"])
def test_an_iteration_ended_or_abandoned_gives_everything_back(small, mode):
    """No warm-up: the shards' descriptors and index maps, the threads and workers go when the epoch ends
    or when the loop is broken out of."""
    found = child("ends", small, mode)
    assert found == {"over": {}, "abandoned": {}}


def jpeg_with_comments(image: bytes, padding: int) -> bytes:
    """The JPEG with ``padding`` bytes of COM segments after SOI: a big record that decodes as fast as a small one."""
    segments, left = [], padding
    while left > 0:
        size = min(left, 65533)
        segments.append(b"\xff\xfe" + (size + 2).to_bytes(2, "big") + bytes(size))
        left -= size
    return image[:2] + b"".join(segments) + image[2:]


@pytest.fixture(scope="module")
def big_rec(tmp_path_factory):
    """An MXNet .rec of 1,200 records of ~256 KB: 300 MB."""
    folder = tmp_path_factory.mktemp("big")
    image = corpus.make_small_jpegs(folder / "one", 1, size=(40, 32), seed=7)[0].read_bytes()
    big = jpeg_with_comments(image, 256 << 10)
    path = folder / "big.rec"
    with open(path, "wb") as handle:
        for record in range(1200):
            for piece in frame_record(IR_HEADER.pack(0, float(record % 10), record, 0) + big):
                handle.write(piece)
    return path


def test_an_epoch_completes_under_a_memory_limit_smaller_than_the_dataset(big_rec):
    dataset_mb = big_rec.stat().st_size >> 20
    headroom = 128  # MB the process may add to its address space, threads, maps and buffers included
    assert dataset_mb > 2 * headroom
    found = child("limited", big_rec, headroom)
    assert found["records"] == 1200
