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
import pytest
from conftest import run_cli

from recpack.errors import PackError, RecpackError
from recpack.format import manifest as mf
from recpack.measure.pagecache import resident_fraction
from recpack.pack import spill
from recpack.pack.archive import open_input
from recpack.pack.layout import cached_fraction, inode_order, on_spinning_disk
from recpack.pack.packer import pack, reads_in_disk_order
from recpack.pack.plan import PackOptions, shuffle_keys
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
    outs = []
    for order, extra in (("list", {}), ("disk", {"spill_memory": 20_000})):  # small buckets: many of them
        out = tmp_path / f"out-{order}"
        pack(open_input(str(source_path)), str(out), PackOptions(order=order, **options, **extra), show_progress=False)
        outs.append(out)
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
    by_list, by_disk = pack_both_ways(listing, tmp_path, shards=shards, workers=workers, seed=5)
    assert digests(by_list) == digests(by_disk)
    assert manifest_without_provenance(by_list) == manifest_without_provenance(by_disk)
    assert (by_list / mf.REPORT_NAME).read_text() == (by_disk / mf.REPORT_NAME).read_text()
    assert len((by_disk / mf.REPORT_NAME).read_text().splitlines()) == 3  # header, empty, truncated
    assert not (by_disk / ".recpack-pack").exists()
    assert run_cli("get", by_disk, f"{photo_dir}/dog/small_0003.jpg", "-o", tmp_path / "x.jpg").returncode == 0
    assert (tmp_path / "x.jpg").read_bytes() == (photo_dir / "dog" / "small_0003.jpg").read_bytes()


def test_disk_order_with_resize_and_header_checks_too(photo_dir, tmp_path):
    for prepare in (PrepareOptions(resize=32), PrepareOptions(check="header")):
        root = tmp_path / prepare.check / str(prepare.resize)
        root.mkdir(parents=True)
        by_list, by_disk = pack_both_ways(photo_dir, root, shards=3, prepare=prepare)
        assert digests(by_list) == digests(by_disk)


def test_buckets_are_key_ranges_in_key_order():
    keys = shuffle_keys(3, range(10_000))
    for buckets in (1, 2, 7, 1000):
        of = spill.bucket_of(keys, buckets)
        assert of.min() >= 0 and of.max() < buckets
        order = keys.argsort()
        assert (of[order][1:] >= of[order][:-1]).all()  # sorted keys never go back a bucket


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


def test_a_disk_order_pack_killed_at_any_moment_reruns_to_the_same_bytes(tmp_path):
    corpus.make_small_jpegs(tmp_path / "imgs" / "a", 150, size=(96, 72), seed=1)
    corpus.make_small_jpegs(tmp_path / "imgs" / "b", 150, size=(96, 72), seed=2)
    command = ["pack", str(tmp_path / "imgs"), None, "--shards", "9", "--order", "disk", "--spill-memory", "1",
               "--workers", "2", "--quiet"]
    reference = tmp_path / "reference"
    run_cli(*command[:2], reference, *command[3:])
    work = lambda out: out / ".recpack-pack"  # noqa: E731
    moments = {  # when to kill: inside each pass for sure, then at a few random instants
        "scatter": lambda out: any(f.stat().st_size for f in (work(out) / "spill").glob("*.spill"))
        if (work(out) / "spill").exists() and not (work(out) / "scatter.json").exists() else False,
        "gather, before any shard": lambda out: (work(out) / "scatter.json").exists(),
        "gather, shards done": lambda out: any(work(out).glob("*.done.json")) if work(out).exists() else False,
    }
    rng = random.Random(7)
    trials = list(moments.items()) + [(f"at {delay:.2f} s", delay) for delay in (rng.uniform(0.3, 2.5) for _ in range(3))]
    phases = set()
    for trial, (name, moment) in enumerate(trials):
        out = tmp_path / f"out-{trial}"
        process = subprocess.Popen([sys.executable, "-m", "recpack", *command[:2], str(out), *command[3:]],
                                   start_new_session=True)
        if callable(moment):
            caught = _wait_for(lambda: moment(out), process)
            assert caught, f"the pack ended before the moment '{name}'"
        else:
            time.sleep(moment)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if not (out / mf.MANIFEST_NAME).exists():  # else it finished before the kill
            refused = run_cli("verify", out, check=False)
            assert refused.returncode == 1 and ("incomplete dataset" in refused.stderr or not out.exists())
            phases.add("gather" if (work(out) / "scatter.json").exists() else "scatter")
            run_cli(*command[:2], out, *command[3:])
        assert digests(out) == digests(reference), f"killed {name}"
    assert phases == {"scatter", "gather"}, phases


def test_spill_that_cannot_fit_is_refused_before_anything_is_read(photo_dir, tmp_path, monkeypatch):
    class Tiny:
        f_bavail, f_frsize = 1, 4096

    monkeypatch.setattr(spill.os, "statvfs", lambda path: Tiny())
    with pytest.raises(PackError, match="GB needed for spill files"):
        pack(open_source(str(photo_dir)), str(tmp_path / "out"), PackOptions(shards=2, order="disk"), show_progress=False)
