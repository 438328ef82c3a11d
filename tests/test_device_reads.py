"""Reading a disk-order list's files from their block device: the plan (pure), FIEMAP, the reads, the fallbacks.

The reads need root and an ext4 whose device can be opened: tests that need them use a
small ext4 image on a loop device (``ext4_on_loop``), and are skipped, saying why, where
that cannot be set up.
"""

import ctypes
import hashlib
import os
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from recpack.format import manifest as mf
from recpack.pack import device_reads
from recpack.pack.archive import open_input
from recpack.pack.device_reads import DeviceReader
from recpack.pack.extents import (DATA_INLINE, DELALLOC, ENCODED, LAST, MERGED, SHARED, UNKNOWN, UNWRITTEN, Extent,
                                  Piece, fiemap, pieces_of, plan_reads)
from recpack.pack.layout import disk_order, inode_order, physical_order
from recpack.pack.packer import pack
from recpack.pack.plan import PackOptions

KIB = 1024


# --- the plan: pure ---------------------------------------------------------------------------


def covered(reads):
    return [(offset, offset + length) for offset, length in reads]


pieces_strategy = st.lists(st.tuples(st.integers(0, 1 << 26), st.integers(1, 3 << 20)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(pieces_strategy, st.sampled_from([512, 4096]), st.sampled_from([0, 4096, 1 << 20]),
       st.sampled_from([4096, 512 * KIB, 1280 * KIB, 2 << 20]))
def test_reads_cover_every_piece_aligned_ascending_and_bounded(spans, align, max_gap, max_read):
    pieces = [Piece(i, 0, physical, length) for i, (physical, length) in enumerate(spans)]
    reads = plan_reads(pieces, align, max_gap, max_read)
    for offset, length in reads:
        assert offset % align == 0 and length % align == 0 and 0 < length <= max_read
    ranges = covered(reads)
    assert all(end <= start for (_, end), (start, _) in zip(ranges, ranges[1:]))  # ascending, not overlapping
    for piece in pieces:  # every byte of every piece lies in one of the reads
        position = piece.physical
        while position < piece.physical + piece.length:
            hit = next((end for start, end in ranges if start <= position < end), None)
            assert hit is not None, (piece, ranges)
            position = hit


def test_neighbours_share_requests_and_a_long_gap_splits_them():
    files = [Piece(i, 0, (1 << 30) + i * 110 * KIB, 110 * KIB) for i in range(100)]  # 11 MB side by side
    reads = plan_reads(files, 4096, 1 << 20, 1280 * KIB)
    assert len(reads) == -(-100 * 110 * KIB // (1280 * KIB))  # one request per 1.25 MiB, not one per file
    apart = [Piece(0, 0, 0, 100 * KIB), Piece(1, 0, 100 * KIB + (1 << 20) + 8192, 100 * KIB)]
    assert len(plan_reads(apart, 4096, 1 << 20, 2 << 20)) == 2  # a gap over max_gap: two requests
    near = [Piece(0, 0, 0, 100 * KIB), Piece(1, 0, 100 * KIB + 512 * KIB, 100 * KIB)]
    assert plan_reads(near, 4096, 1 << 20, 2 << 20) == [(0, 712 * KIB)]  # read through the gap
    assert plan_reads([], 4096, 1 << 20, 2 << 20) == []


def test_pieces_of_a_file_need_plain_extents_without_holes():
    size = 10_000
    whole = [Extent(0, 4096 * 100, 4096, 0), Extent(4096, 4096 * 900, 8192, LAST)]
    assert pieces_of(3, whole, size) == [Piece(3, 0, 4096 * 100, 4096), Piece(3, 4096, 4096 * 900, size - 4096)]
    assert pieces_of(3, [Extent(0, 0, 16384, LAST | MERGED | SHARED)], size) == [Piece(3, 0, 0, size)]
    for flag in (DELALLOC, UNWRITTEN, DATA_INLINE, ENCODED, UNKNOWN):
        assert pieces_of(0, [Extent(0, 4096, 16384, LAST | flag)], size) is None, flag
    assert pieces_of(0, [Extent(0, 4096, 4096, 0)], size) is None  # more extents than were asked for
    assert pieces_of(0, [Extent(0, 4096, 4096, 0), Extent(8192, 0, 4096, LAST)], size) is None  # a hole
    assert pieces_of(0, [Extent(0, 4096, 8192, LAST)], size) is None  # ends before the file does
    assert pieces_of(0, [], size) is None and pieces_of(0, whole, 0) is None


# --- FIEMAP and the order, on real files -----------------------------------------------------


def written(path, data: bytes, sync: bool):
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        if sync:
            os.fsync(handle.fileno())
    return path


def extents_or_skip(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return fiemap(fd)
    except OSError as error:
        pytest.skip(f"no FIEMAP on {path}'s filesystem ({error.strerror})")
    finally:
        os.close(fd)


def test_fiemap_of_a_synced_file_covers_it_and_of_an_unsynced_one_is_not_read_from_the_device(tmp_path):
    data = os.urandom(300_000)
    extents = extents_or_skip(written(tmp_path / "synced.bin", data, sync=True))
    assert pieces_of(0, extents, len(data)) is not None, extents
    assert sum(piece.length for piece in pieces_of(0, extents, len(data))) == len(data)
    fresh = extents_or_skip(written(tmp_path / "fresh.bin", data, sync=False))
    assert pieces_of(0, fresh, len(data)) is None or not any(extent.flags & DELALLOC for extent in fresh)
    if fresh and any(extent.flags & DELALLOC for extent in fresh):  # ext4: allocated at writeback only
        assert pieces_of(0, fresh, len(data)) is None


def test_physical_order_sorts_by_first_extent_and_keeps_unmappable_files_first(tmp_path):
    paths = [str(written(tmp_path / f"{i:03d}.bin", os.urandom(20_000), sync=True)) for i in range(40)][::-1]
    paths.append(str(tmp_path / "missing.bin"))
    extents_or_skip(paths[0])
    order = physical_order(paths)
    assert order is not None and sorted(order.tolist()) == list(range(len(paths)))
    assert order[0] == len(paths) - 1
    firsts = []
    for index in order[1:]:
        fd = os.open(paths[index], os.O_RDONLY)
        firsts.append(fiemap(fd, 1)[0].physical)
        os.close(fd)
    assert firsts == sorted(firsts)
    assert disk_order(paths).tolist() == order.tolist()


def test_without_fiemap_the_order_is_by_inode(tmp_path, monkeypatch):
    paths = [str(written(tmp_path / f"{i}.bin", b"x" * 100, sync=False)) for i in range(5)]

    def refuse(fd, count=32):
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr("recpack.pack.layout.fiemap", refuse)
    assert physical_order(paths) is None
    assert disk_order(paths).tolist() == inode_order(paths).tolist()


# --- device reads: an ext4 on a loop device ---------------------------------------------------


def _run(*command):
    return subprocess.run(list(map(str, command)), check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def ext4_on_loop(tmp_path_factory):
    """A 96 MB ext4 mounted from an image on a loop device (root only), for reads of its device."""
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4") or not shutil.which("losetup"):
        pytest.skip("reading a block device needs root, mkfs.ext4 and losetup")
    folder = tmp_path_factory.mktemp("loop")
    image, mount = folder / "ext4.img", folder / "mnt"
    mount.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(96 << 20)
    try:
        _run("mkfs.ext4", "-q", "-F", image)
        device = _run("losetup", "--find", "--show", "--direct-io=on", image)
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"cannot set up a loop device here: {getattr(error, 'stderr', '') or error}")
    try:
        try:
            _run("mount", device, mount)
        except subprocess.CalledProcessError as error:
            pytest.skip(f"cannot mount an ext4 here: {error.stderr}")
        try:
            yield mount
        finally:
            subprocess.run(["umount", str(mount)], check=False, capture_output=True)
    finally:
        subprocess.run(["losetup", "-d", device], check=False, capture_output=True)


def cold(*paths):
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def device_files(folder, count, size=50_000, seed=0):
    folder.mkdir(exist_ok=True)
    rng = __import__("random").Random(seed)
    paths = [str(written(folder / f"{i:04d}.bin", rng.randbytes(size + rng.randrange(9000)), sync=True))
             for i in range(count)]
    cold(*paths)
    return paths


def buffer_vm_flags(reader: DeviceReader) -> list[str]:
    """The VmFlags (/proc/self/smaps) of the mapping that holds the reader's buffer."""
    address = ctypes.addressof(ctypes.c_char.from_buffer(reader._buffer))
    mapping = None
    with open("/proc/self/smaps") as handle:
        for line in handle:
            head = line.split()[0]
            if "-" in head and all(c in "0123456789abcdef-" for c in head):
                low, high = (int(part, 16) for part in head.split("-"))
                mapping = low <= address < high
            elif mapping and line.startswith("VmFlags:"):
                return line.split()[1:]
    raise AssertionError("the buffer's mapping is not in /proc/self/smaps")


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="Linux only")
def test_the_read_buffer_is_not_inherited_by_the_workers_a_pack_forks():
    """Inherited, the buffer is shared copy-on-write: the next read into it breaks its huge page into 4 KiB
    copies, and a 2 MiB request becomes four (measured: 347 requests for 1,500 files instead of 134)."""
    reader = DeviceReader()
    try:
        flags = buffer_vm_flags(reader)
        assert "dc" in flags  # MADV_DONTFORK: "do not copy"
        assert "hg" in flags  # MADV_HUGEPAGE
    finally:
        reader.close()


def test_device_reads_give_the_files_bytes(ext4_on_loop):
    paths = device_files(ext4_on_loop / "plain", 120)
    order = disk_order(paths).tolist()
    with DeviceReader() as reader:
        got = dict(reader.read_all((index, paths[index]) for index in order))
    assert sorted(got) == list(range(len(paths)))
    assert all(got[index] is not None for index in got), "every cold, synced file comes from the device"
    for index, path in enumerate(paths):
        with open(path, "rb") as handle:
            assert got[index] == handle.read()


def test_cached_unsynced_missing_and_non_ext4_files_are_left_to_ordinary_reads(ext4_on_loop):
    folder = ext4_on_loop / "fallbacks"
    cached, cold_one = device_files(folder, 2)
    with open(cached, "rb") as handle:
        handle.read()  # in the page cache: clean, but a plain read is cheaper and the cache may be ahead
    unsynced = str(written(folder / "unsynced.bin", os.urandom(40_000), sync=False))  # delalloc, dirty
    empty = str(written(folder / "empty.bin", b"", sync=True))
    elsewhere = []  # a memory filesystem: no device, and no FIEMAP offsets on one
    if os.path.isdir("/dev/shm"):
        elsewhere.append(str(written(f"/dev/shm/recpack-test-{os.getpid()}.bin", b"z" * 5000, sync=False)))
    try:
        with DeviceReader() as reader:
            assert reader.inspect(cold_one) is not None
            for path in (cached, unsynced, empty, str(folder / "missing.bin"), str(folder), *elsewhere):
                assert reader.inspect(path) is None, path
            answers = dict(reader.read_all(enumerate([cold_one, cached, unsynced, empty])))
        assert answers[0] is not None and answers[1] is None and answers[2] is None and answers[3] is None
    finally:
        for path in elsewhere:
            os.unlink(path)


def test_a_file_changed_after_it_was_looked_at_is_not_taken_from_the_device(ext4_on_loop):
    path, = device_files(ext4_on_loop / "changed", 1)
    with DeviceReader() as reader:
        found = reader.inspect(path)
        assert found is not None
        with open(path, "r+b") as handle:  # rewritten in place: same size, new bytes, still only in the cache
            handle.write(b"\xff" * 100)
        assert reader.read([found]) == [None]
        cold(path)
        os.utime(path, ns=(found.status.st_atime_ns, found.status.st_mtime_ns))  # mtime put back: ctime tells
        assert reader.read([found]) == [None]


def test_a_device_that_cannot_be_opened_means_ordinary_reads(ext4_on_loop, monkeypatch):
    path, = device_files(ext4_on_loop / "refused", 1)
    real_open = os.open

    def no_devices(name, flags, *args, **kwargs):
        if str(name).startswith("/dev/"):
            raise PermissionError(1, "Operation not permitted", name)
        return real_open(name, flags, *args, **kwargs)

    monkeypatch.setattr(device_reads.os, "open", no_devices)
    with DeviceReader() as reader:
        assert reader.inspect(path) is None


def digests(out) -> dict[str, str]:
    return {name: hashlib.sha256((out / name).read_bytes()).hexdigest()
            for name in sorted(os.listdir(out)) if name.startswith("shard-")}


def test_a_disk_order_pack_read_from_the_device_writes_the_bytes_of_list_order(ext4_on_loop, photo_dir, tmp_path,
                                                                               monkeypatch):
    images = ext4_on_loop / "photos"
    shutil.copytree(photo_dir, images)
    mask = images / "mask.png"
    Image.fromarray((np.arange(64 * 48) % 5).astype(np.uint8).reshape(48, 64), "L").save(mask)
    lines = []
    for number, name in enumerate(("cat", "dog")):
        for path in sorted((images / name).iterdir()):  # masks read by the workers, one missing: a bad input
            lines.append(f"{path}\t{number}\t{mask if path.name != 'small_0007.jpg' else images / 'none.png'}")
    (tmp_path / "list.txt").write_text("".join(line + "\n" for line in lines))
    os.sync()
    cold(*[line.split("\t")[0] for line in lines])
    from_device = []
    real_read = DeviceReader.read

    def counting(self, found):
        answers = real_read(self, found)
        from_device.extend(answer for answer in answers if answer is not None)
        return answers

    monkeypatch.setattr(DeviceReader, "read", counting)
    outs = {}
    for order in ("disk", "list"):
        outs[order] = tmp_path / f"out-{order}"
        pack(open_input(str(tmp_path / "list.txt")), str(outs[order]),
             PackOptions(shards=5, seed=3, workers=2, order=order, spill_memory=50_000), show_progress=False)
    assert len(from_device) == len(lines), "the disk-order pack read every file from the device"
    assert digests(outs["disk"]) == digests(outs["list"])
    assert sum(name.endswith(".rec") for name in digests(outs["list"])) == 5
    assert (outs["disk"] / mf.REPORT_NAME).read_text() == (outs["list"] / mf.REPORT_NAME).read_text()
    assert "none.png: no such file" in (outs["disk"] / mf.REPORT_NAME).read_text()
