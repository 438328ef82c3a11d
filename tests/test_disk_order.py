"""Packing in disk order (spill, then write) gives the bytes of a pack in list order; tar archives as sources."""

import hashlib
import io
import os
import random
import signal
import subprocess
import sys
import tarfile
import time

import corpus
import process_resources as pr
import pytest
from conftest import run_cli

from recpack.errors import PackError, RecpackError
from recpack.format import manifest as mf
from recpack.measure.pagecache import resident_fraction
from recpack.pack import spill
from recpack.pack.archive import open_input
from recpack.pack.gather import shard_tasks
from recpack.pack.layout import cached_fraction, inode_order, on_spinning_disk
from recpack.pack.packer import pack, reads_in_disk_order
from recpack.pack.plan import PackOptions, shuffle_keys, split_evenly
from recpack.pack.prepare import PrepareOptions
from recpack.pack.sources import open_source


def digests(out) -> dict[str, str]:
    return {name: hashlib.sha256((out / name).read_bytes()).hexdigest()
            for name in sorted(os.listdir(out)) if name.startswith("shard-")}


def manifest_without_provenance(out) -> dict:
    data = mf.to_json(mf.load(str(out)))
    data.pop("created")
    return data


def pack_both_ways(source_path, tmp_path, **options):
    """Packs in list order, in disk order with the spill in memory, and with it in a folder (--spill-dir)."""
    outs = []
    small = {"spill_memory": 20_000}  # small buckets: many of them
    for name, order, extra in (("list", "list", {}), ("disk", "disk", small),
                               ("disk-spill-dir", "disk", {**small, "spill_dir": str(tmp_path / "spills")})):
        out = tmp_path / f"out-{name}"
        pack(open_input(str(source_path)), str(out), PackOptions(order=order, **options, **extra), show_progress=False)
        outs.append(out)
    assert not (tmp_path / "spills").exists() or not os.listdir(tmp_path / "spills")  # removed once packed
    return outs


def mixed_list(tmp_path, photo_dir, hostile, masks=False):
    """Good photos, a few bad and converted inputs, two labels each: every path through prepare."""
    lines = [f"{photo_dir}/{c}/small_{i:04d}.jpg\t{n}\t{i / 4:g}" for n, c in enumerate(("cat", "dog")) for i in range(30)]
    lines += [f"{hostile[name]}\t1\t0.5" for name in ("empty", "truncated", "png_as_jpg", "gray_jpg", "cmyk_jpg")]
    path = tmp_path / "list.txt"
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize("shards,workers", [(1, 1), (4, 2), (7, 2)])
def test_disk_order_writes_the_bytes_of_list_order(photo_dir, hostile, tmp_path, shards, workers):
    listing = mixed_list(tmp_path, photo_dir, hostile)
    by_list, by_disk, by_spill_dir = pack_both_ways(listing, tmp_path, shards=shards, workers=workers, seed=5)
    for other in (by_disk, by_spill_dir):
        assert digests(by_list) == digests(other)
        assert manifest_without_provenance(by_list) == manifest_without_provenance(other)
        assert (by_list / mf.REPORT_NAME).read_text() == (other / mf.REPORT_NAME).read_text()
        assert not (other / ".recpack-pack").exists()
    assert len((by_disk / mf.REPORT_NAME).read_text().splitlines()) == 3  # header, empty, truncated
    assert run_cli("get", by_disk, f"{photo_dir}/dog/small_0003.jpg", "-o", tmp_path / "x.jpg").returncode == 0
    assert (tmp_path / "x.jpg").read_bytes() == (photo_dir / "dog" / "small_0003.jpg").read_bytes()


def test_disk_order_with_resize_and_header_checks_too(photo_dir, tmp_path):
    for prepare in (PrepareOptions(resize=32), PrepareOptions(check="header")):
        root = tmp_path / prepare.check / str(prepare.resize)
        root.mkdir(parents=True)
        by_list, by_disk, by_spill_dir = pack_both_ways(photo_dir, root, shards=3, prepare=prepare)
        assert digests(by_list) == digests(by_disk) == digests(by_spill_dir)


def test_buckets_are_key_ranges_in_key_order():
    keys = shuffle_keys(3, range(10_000))
    for buckets in (1, 2, 7, 1000):
        of = spill.bucket_of(keys, buckets)
        assert of.min() >= 0 and of.max() < buckets
        order = keys.argsort()
        assert (of[order][1:] >= of[order][:-1]).all()  # sorted keys never go back a bucket


def test_shard_tasks_cover_every_rank_once_from_exactly_the_buckets_that_hold_it():
    counts = [5, 0, 12, 1, 0, 0, 9, 3]
    firsts = [sum(counts[:b]) for b in range(len(counts))]
    for shards in (1, 3, 7, 30):
        for done in (set(), {0}, set(range(1, shards, 2))):
            tasks = shard_tasks(counts, shards, done)
            assert [task.shard for task in tasks] == [s for s in range(shards) if s not in done]
            for task, (start, stop) in zip(tasks, (span for s, span in enumerate(split_evenly(30, shards))
                                                   if s not in done)):
                assert (task.start, task.stop) == (start, stop)
                holding = [b for b in range(len(counts)) if counts[b] and firsts[b] < stop
                           and firsts[b] + counts[b] > start]
                assert [bucket for bucket, _, _ in task.buckets] == holding
                assert all((first, count) == (firsts[b], counts[b]) for b, first, count in task.buckets)
    assert shard_tasks(counts, 4, {0, 1, 2, 3}) == []


def test_a_spill_is_kept_in_memory_only_below_half_the_available_memory_and_without_spill_dir():
    gb = 1 << 30
    assert spill.kept_in_memory(1 * gb, 8 * gb, None, memory_files=True)
    assert not spill.kept_in_memory(4 * gb, 8 * gb, None, memory_files=True)  # half: on disk
    assert not spill.kept_in_memory(1 * gb, 8 * gb, "/ssd/tmp", memory_files=True)  # a folder was asked for
    assert not spill.kept_in_memory(1 * gb, 8 * gb, None, memory_files=False)  # no memfd_create here
    assert not spill.kept_in_memory(1, 0, None, memory_files=True)  # MemAvailable unknown
    for estimate in (0, 1, gb, 3 * gb, 5 * gb):  # the disk spill stays cached exactly when it would fit
        assert spill.fits_in_memory(estimate, 8 * gb) == spill.kept_in_memory(estimate, 8 * gb, None, True)


def random_frames(rng, count, start):
    return [spill.Frame(rng.getrandbits(64), start + i, start + i, -1, (float(i),), f"k{start + i}",
                        rng.randbytes(rng.randrange(0, 300_000))) for i in range(count)]


@pytest.mark.parametrize("memory", [True, False])
def test_an_append_of_more_frames_than_one_writev_takes_keeps_them_all_in_order(tmp_path, memory):
    if memory and not spill.MEMORY_FILES:
        pytest.skip("no memfd_create")
    store = spill.MemorySpill.create(1) if memory else spill.DiskSpill.create(str(tmp_path / "spill"), 1)
    try:
        rng = random.Random(3)
        frames = [spill.Frame(rng.getrandbits(64), i, i, -1, (), f"k{i}", rng.randbytes(rng.randrange(1, 50)),
                              b"m" * (i % 3)) for i in range(1500)]  # masks on two in three: 2 or 3 pieces each
        store.append(0, [spill.encode(frame) for frame in frames])
        _, read = store.read_bucket(0)
        assert sorted((f.index, f.source_key, bytes(f.image), bytes(f.mask)) for f in read) == [
            (f.index, f.source_key, f.image, f.mask) for f in frames]
    finally:
        store.close()


@pytest.mark.skipif(not spill.MEMORY_FILES, reason="no memfd_create")
def test_forked_workers_appending_to_one_memory_bucket_leave_whole_frames():
    store = spill.MemorySpill.create(2)
    try:
        children = []
        for child in range(3):  # as the scatter's workers: forked after the store, writing through its fds
            pid = os.fork()
            if pid == 0:
                try:
                    rng = random.Random(child)
                    for round_ in range(40):
                        frames = random_frames(rng, rng.randrange(1, 6), child * 10_000 + round_ * 10)
                        store.append(round_ % 2, [spill.encode(f) for f in frames])
                finally:
                    os._exit(0)
            children.append(pid)
        assert all(os.waitpid(pid, 0)[1] == 0 for pid in children)
        expected = {}
        for child in range(3):
            rng = random.Random(child)
            for round_ in range(40):
                for frame in random_frames(rng, rng.randrange(1, 6), child * 10_000 + round_ * 10):
                    expected[frame.index] = (round_ % 2, frame.key, hashlib.sha256(frame.image).hexdigest())
        got = {}
        for bucket in range(2):
            data, frames = store.read_bucket(bucket)
            for frame in frames:
                got[frame.index] = (bucket, frame.key, hashlib.sha256(frame.image).hexdigest())
            del data, frames, frame
            store.release(bucket)
            assert store.read_bucket(bucket) == (None, [])  # released: its memory is free
        assert got == expected
        assert not [name for name in os.listdir("/dev/shm") if "recpack" in name]
    finally:
        store.close()


def test_a_spill_that_fits_is_held_in_memory_else_written_to_the_work_folder(photo_dir, tmp_path, monkeypatch):
    from recpack.pack import packer

    made = []
    for kind in (spill.MemorySpill, spill.DiskSpill):
        create = kind.create.__func__
        monkeypatch.setattr(kind, "create", classmethod(lambda cls, *a, _c=create: made.append(cls.__name__) or _c(cls, *a)))
    options = PackOptions(shards=3, order="disk", spill_memory=20_000)
    pack(open_source(str(photo_dir)), str(tmp_path / "memory"), options, show_progress=False)
    monkeypatch.setattr(packer, "_available_memory", lambda: 0)  # nothing fits: the spill goes to OUT/.recpack-pack
    pack(open_source(str(photo_dir)), str(tmp_path / "disk"), options, show_progress=False)
    assert made == (["MemorySpill", "DiskSpill"] if spill.MEMORY_FILES else ["DiskSpill", "DiskSpill"])
    assert digests(tmp_path / "memory") == digests(tmp_path / "disk")
    assert not (tmp_path / "disk" / ".recpack-pack").exists()


def test_inode_order_is_a_permutation_that_sorts_by_inode(photo_dir):
    paths = [str(path) for path in sorted(photo_dir.rglob("*.jpg"), reverse=True)] + ["/no/such/file.jpg"]
    order = inode_order(paths)
    assert sorted(order.tolist()) == list(range(len(paths)))
    assert order[0] == len(paths) - 1  # a file that cannot be found keeps its place at the front
    inodes = [os.stat(paths[i]).st_ino for i in order[1:]]
    assert inodes == sorted(inodes)


def test_auto_reads_uncached_lists_on_spinning_disks_in_disk_order(photo_dir, tmp_path):
    source = open_source(str(photo_dir))
    for path in source.paths():
        with open(path, "rb") as handle:
            handle.read()
    assert cached_fraction(source.paths()) == 1.0
    assert not reads_in_disk_order(source, PackOptions())
    for path in source.paths():
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    if resident_fraction(list(source.paths())) > 0.1:  # mincore: asking does not read
        pytest.skip("this filesystem keeps files cached after DONTNEED")
    assert reads_in_disk_order(source, PackOptions()) == on_spinning_disk(source.paths()[0])
    assert reads_in_disk_order(source, PackOptions(order="disk")) and not reads_in_disk_order(source, PackOptions(order="list"))


# --- tar archives -------------------------------------------------------------------------


def add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def per_class_tars(photo_dir, folder):
    """One tar per class, images at the top, as ImageNet-21k's inner tars are."""
    folder.mkdir()
    for name in ("cat", "dog"):
        with tarfile.open(folder / f"{name}.tar", "w") as archive:
            for path in sorted((photo_dir / name).iterdir()):
                add_bytes(archive, path.name, path.read_bytes())
    return folder


def test_a_folder_of_per_class_tars_a_tgz_of_them_and_a_tar_of_class_folders_pack_alike(photo_dir, tmp_path):
    folder = per_class_tars(photo_dir, tmp_path / "tars")
    with tarfile.open(tmp_path / "all.tgz", "w:gz") as outer:
        for name in ("cat", "dog"):
            outer.add(folder / f"{name}.tar", arcname=f"{name}.tar")
    with tarfile.open(tmp_path / "folders.tar", "w") as archive:
        archive.add(tmp_path / "tars" / "cat.tar", arcname="README.tar.txt")  # not an image: skipped
        for name in ("cat", "dog"):
            for path in sorted((photo_dir / name).iterdir()):
                add_bytes(archive, f"train/{name}/{path.name}", path.read_bytes())
    outs = []
    for source in (folder, tmp_path / "all.tgz", tmp_path / "folders.tar"):
        out = tmp_path / f"out-{source.name}"
        result = run_cli("pack", source, out, "--shards", "3", "--quiet")
        assert "packed 60 images into 3 shards" in result.stdout
        outs.append(out)
        manifest = mf.load(str(out))
        assert manifest.classes == ("cat", "dog") and manifest.created["source"] == str(source)
    assert digests(outs[0]) == digests(outs[1]) == digests(outs[2])
    assert run_cli("verify", outs[1], "--quiet").returncode == 0
    image = run_cli("get", outs[1], "all.tgz/dog.tar/small_0004.jpg", "-o", tmp_path / "got.jpg")
    assert image.returncode == 0 and (tmp_path / "got.jpg").read_bytes() == (photo_dir / "dog" / "small_0004.jpg").read_bytes()


def test_list_of_an_archive_names_members_with_labels_and_is_refused_as_a_pack_source(photo_dir, tmp_path):
    folder = per_class_tars(photo_dir, tmp_path / "tars")
    listing = run_cli("list", folder).stdout.splitlines()
    assert listing[0] == f"# archive: {folder}" and len(listing) == 61
    assert "cat.tar/small_0000.jpg\t0" in listing and "dog.tar/small_0029.jpg\t1" in listing
    (tmp_path / "l.txt").write_text("\n".join(listing) + "\n")
    refused = run_cli("pack", tmp_path / "l.txt", tmp_path / "out", check=False)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "pack the archive itself" in refused.stderr


def test_damaged_archives_and_members_without_a_class_are_one_line_errors(photo_dir, tmp_path):
    good = (photo_dir / "cat" / "small_0000.jpg").read_bytes()
    with tarfile.open(tmp_path / "flat.tar", "w") as archive:
        add_bytes(archive, "a.jpg", good)
    with tarfile.open(tmp_path / "ok.tar", "w") as archive:
        for index in range(4):
            add_bytes(archive, f"c/{index}.jpg", good)
    (tmp_path / "cut.tar").write_bytes((tmp_path / "ok.tar").read_bytes()[:1300])
    (tmp_path / "cut.tar.gz").write_bytes(b"\x1f\x8b" + os.urandom(200))
    for name, expected in (("flat.tar", "member a.jpg has no class"), ("cut.tar", "damaged or not a tar archive"),
                           ("cut.tar.gz", "damaged or not a tar archive")):
        done = run_cli("pack", tmp_path / name, tmp_path / f"out-{name}", "--shards", "1", "--quiet", check=False)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith(f"recpack: error: {name}") and expected in done.stderr, done.stderr
        assert not (tmp_path / f"out-{name}" / mf.MANIFEST_NAME).exists()
    with pytest.raises(RecpackError, match="--root applies to list files"):
        open_input(str(tmp_path / "ok.tar"), root=str(tmp_path))


def test_more_shards_than_an_archive_holds_is_refused(photo_dir, tmp_path):
    folder = per_class_tars(photo_dir, tmp_path / "tars")
    with pytest.raises(PackError, match="exceeds the number of images"):
        pack(open_input(str(folder)), str(tmp_path / "out"), PackOptions(shards=61), show_progress=False)


# --- crash safety ---------------------------------------------------------------------------


def _wait_for(condition, process, limit=120.0) -> bool:
    """Poll until ``condition()`` holds or the process ends (False then)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            return True
        time.sleep(0.005)
    return False


def rec_identity(path) -> tuple[int, int]:
    return path.stat().st_ino, path.stat().st_mtime_ns


def finished_shards(out) -> dict[str, tuple[int, int]]:
    """The noted shards' .rec files, by inode and mtime: a rerun that keeps them leaves both as they are."""
    work = out / ".recpack-pack"
    stems = [note.name.removesuffix(".done.json") for note in work.glob("*.done.json")] if work.exists() else []
    return {stem: rec_identity(out / f"{stem}.rec") for stem in stems if (out / f"{stem}.rec").exists()}


@pytest.mark.parametrize("where", ["memory", "spill-dir"])
def test_a_disk_order_pack_killed_at_any_moment_reruns_to_the_same_bytes(tmp_path, where):
    """In memory, the spill dies with the pack: a rerun reads the sources again and keeps the finished shards.
    On disk (forced here with --spill-dir), a rerun after the first pass goes straight to the second."""
    corpus.make_small_jpegs(tmp_path / "imgs" / "a", 150, size=(96, 72), seed=1)
    corpus.make_small_jpegs(tmp_path / "imgs" / "b", 150, size=(96, 72), seed=2)
    spill_root = tmp_path / "spills"
    command = ["pack", str(tmp_path / "imgs"), None, "--shards", "9", "--order", "disk", "--spill-memory", "1",
               "--workers", "2", "--quiet", *(["--spill-dir", str(spill_root)] if where == "spill-dir" else [])]
    reference = tmp_path / "reference"
    run_cli(*command[:2], reference, *command[3:])
    work = lambda out: out / ".recpack-pack"  # noqa: E731
    shard_files = lambda out: out.exists() and any(n.startswith("shard-") for n in os.listdir(out))  # noqa: E731
    if where == "memory":
        spilling = lambda out, pid: pr.memory_spill_bytes(pid) > 0 and not shard_files(out)  # noqa: E731
        gathering = lambda out, pid: shard_files(out) and not any(work(out).glob("*.done.json"))  # noqa: E731
    else:
        spilling = lambda out, pid: (any(f.stat().st_size for f in spill_root.glob("*/*.spill"))  # noqa: E731
                                     and not (work(out) / "scatter.json").exists())
        gathering = lambda out, pid: (work(out) / "scatter.json").exists()  # noqa: E731
    moments = {  # when to kill: inside each pass for sure, then at a few random instants
        "scatter": spilling,
        "gather, before any shard": gathering,
        "gather, shards done": lambda out, pid: any(work(out).glob("*.done.json")) if work(out).exists() else False,
    }
    rng = random.Random(7)
    trials = list(moments.items()) + [(f"at {delay:.2f} s", delay) for delay in (rng.uniform(0.3, 2.5) for _ in range(3))]
    phases, kept_any = set(), False
    for trial, (name, moment) in enumerate(trials):
        out = tmp_path / f"out-{trial}"
        process = subprocess.Popen([sys.executable, "-m", "recpack", *command[:2], str(out), *command[3:]],
                                   start_new_session=True)
        if callable(moment):
            caught = _wait_for(lambda: moment(out, process.pid), process)
            assert caught, f"the pack ended before the moment '{name}'"
        else:
            time.sleep(moment)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if not (out / mf.MANIFEST_NAME).exists():  # else it finished before the kill
            refused = run_cli("verify", out, check=False)
            assert refused.returncode == 1 and ("incomplete dataset" in refused.stderr or not out.exists())
            in_gather = (work(out) / "scatter.json").exists() if where == "spill-dir" else shard_files(out)
            phases.add("gather" if in_gather else "scatter")
            if where == "memory":
                assert not (work(out) / "scatter.json").exists() and not (work(out) / "spill").exists()
            kept = finished_shards(out)
            kept_any = kept_any or bool(kept)
            run_cli(*command[:2], out, *command[3:])
            assert {stem: rec_identity(out / f"{stem}.rec") for stem in kept} == kept  # not written again
        assert digests(out) == digests(reference), f"killed {name}"
    assert phases == {"scatter", "gather"}, phases
    assert kept_any  # some rerun had finished shards to keep
    assert not [name for name in os.listdir("/dev/shm") if "recpack" in name]


def test_a_rerun_that_only_gathers_says_it_read_no_input(tmp_path):
    """After the first pass, a rerun gathers from the kept spill: the inputs' rate is the interrupted run's,
    so the rerun's summary line does not quote it as its own."""
    corpus.make_small_jpegs(tmp_path / "imgs" / "a", 150, size=(96, 72), seed=3)  # as many as the kill test: its
    corpus.make_small_jpegs(tmp_path / "imgs" / "b", 150, size=(96, 72), seed=4)  # second pass lasts long enough
    out = tmp_path / "out"
    command = ["pack", str(tmp_path / "imgs"), str(out), "--shards", "6", "--order", "disk", "--workers", "2",
               "--spill-memory", "1", "--spill-dir", str(tmp_path / "spills")]
    process = subprocess.Popen([sys.executable, "-m", "recpack", *command, "--quiet"], start_new_session=True,
                               stdout=subprocess.DEVNULL)
    caught = _wait_for(lambda: (out / ".recpack-pack" / "scatter.json").exists(), process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert caught, "the pack ended before its first pass was saved"
    summary = run_cli(*command, "--quiet").stdout
    assert "packed 300 images into 6 shards" in summary
    assert "no input read by this run" in summary and "images/s" not in summary
    assert "images/s" in run_cli(*command[:2], str(tmp_path / "again"), *command[3:], "--quiet").stdout


def test_spill_that_cannot_fit_is_refused_before_anything_is_read(photo_dir, tmp_path, monkeypatch):
    class Tiny:
        f_bavail, f_frsize = 1, 4096

    from recpack.pack import packer

    monkeypatch.setattr(spill.os, "statvfs", lambda path: Tiny())
    with pytest.raises(PackError, match="GB needed for the shards"):  # a spill in memory: the shards need room
        pack(open_source(str(photo_dir)), str(tmp_path / "out"), PackOptions(shards=2, order="disk"), show_progress=False)
    monkeypatch.setattr(packer, "_available_memory", lambda: 0)
    with pytest.raises(PackError, match="GB needed for spill files"):
        pack(open_source(str(photo_dir)), str(tmp_path / "out"), PackOptions(shards=2, order="disk"), show_progress=False)
    assert not (tmp_path / "out" / ".recpack-pack" / "spill").exists()  # refused before the spill was made
