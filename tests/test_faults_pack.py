"""Faults while writing a dataset: ``kill -9`` of ``recpack pack`` and ``recpack import`` at random
moments, one of the pack's worker processes killed, the disk filling up.

After each fault the folder must be a complete dataset that verifies, or be refused as
incomplete; and running the same command again must give exactly the dataset an
uninterrupted run gives (its manifest's date aside; the key index compared by content).
"""

import errno
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import lmdb
import numpy as np
import pytest

import corpus
import process_resources as pr
from recpack.errors import IncompleteDatasetError, PackError
from recpack.format import keyindex
from recpack.format import manifest as mf
from recpack.format.framing import frame_record
from recpack.format.index_files import idx_bytes
from recpack.format.schema import IR_HEADER
from recpack.pack import publish
from recpack.pack.packer import PackOptions, pack
from recpack.pack.sources import open_source
from recpack.read.opening import open_shards
from recpack.read.shard_reader import ShardReader
from recpack.read.verify import verify_dataset

pytestmark = pytest.mark.timeout(300)

KILL_TRIALS = 20  # of recpack pack; the issue asks for at least 20
IMPORT_TRIALS = 6
EXIT_SECONDS = 30  # a pack that lost a worker must say so well within this
# a kill is no power cut: what fsync adds is for those, and on a slow disk it would take most of each trial
NO_FSYNC = ("--no-fsync",)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """~100 tiny JPEGs in two classes, and one broken file (so the report of bad inputs has a row)."""
    root = tmp_path_factory.mktemp("faults") / "images"
    corpus.make_small_jpegs(root / "cat", 50, size=(48, 32), seed=1)
    corpus.make_small_jpegs(root / "dog", 50, size=(48, 32), seed=2)
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


def pack_command(source, out, order="list", workers=2, extra=()):
    return [sys.executable, "-m", "recpack", "pack", str(source), str(out), "--shards", "8",
            "--workers", str(workers), "--order", order, "--quiet", *extra]


def contents(folder) -> dict:
    """Everything a dataset folder holds, in a form two runs can be compared by.

    The manifest without its date, the key index as its sorted entries (LMDB's pages
    depend on the order shards finished in), every other file by its SHA-256.
    Leftovers (a work folder, temporary files) show up as entries of their own.
    """
    found = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name == mf.MANIFEST_NAME:
            with open(path) as handle:
                manifest = json.load(handle)
            manifest["created"].pop("date")
            found[name] = manifest
        elif name == mf.KEY_INDEX_NAME:
            env = lmdb.open(path, readonly=True, lock=False, subdir=True)
            with env.begin() as txn:
                found[name] = sorted(txn.cursor())
            env.close()
        elif os.path.isdir(path):
            found[name] = sorted(os.listdir(path))
        else:
            with open(path, "rb") as handle:
                found[name] = hashlib.sha256(handle.read()).hexdigest()
    return found


def phase_of(out) -> str:
    """How far a killed pack had got, from what it left."""
    if not os.path.isdir(out) or not os.listdir(out):
        return "not started"
    if os.path.exists(os.path.join(out, mf.MANIFEST_NAME)):
        return "published" + (" (work folder left)" if os.path.exists(os.path.join(out, mf.WORK_DIR_NAME)) else "")
    work = os.path.join(out, mf.WORK_DIR_NAME)
    notes = [n for n in os.listdir(work) if n.endswith(".done.json")] if os.path.isdir(work) else []
    return f"{len(notes)} shards noted" if notes else "started, no shard noted"


def assert_complete_or_refused(out) -> bool:
    """A killed run's folder: a dataset that verifies (True), or one every reader refuses as incomplete."""
    if os.path.exists(os.path.join(out, mf.MANIFEST_NAME)):
        assert [str(p) for p in verify_dataset(str(out), show_progress=False)] == []
        return True
    if os.path.isdir(out):
        with pytest.raises(IncompleteDatasetError):
            open_shards(str(out))  # what RecordDataset opens with
        said = "not a recpack dataset (no recpack.json)" if not os.listdir(out) else "incomplete dataset"
        with pytest.raises(IncompleteDatasetError, match=f"^{re.escape(f'{out}: {said}')}"):
            list(verify_dataset(str(out), show_progress=False))  # what recpack verify runs
    return False


def assert_nothing_half_published(out) -> None:
    """No manifest, and every shard under its final name is whole: each record reads back with its checksum.

    (Temporary files may remain: a worker stopped mid-shard leaves its ``.tmp``, which the rerun removes.)
    """
    assert not os.path.exists(out / mf.MANIFEST_NAME)
    for name in os.listdir(out):
        if name.endswith(".rec"):
            stem = name.removesuffix(".rec")
            reader = ShardReader(str(out / name), str(out / f"{stem}.rpi"), stem)
            assert sum(1 for _ in reader.iter_records(verify=True)) == len(reader) > 0


def wait_for(path, process, timeout=60.0) -> None:
    """Until ``path`` exists or the process ends."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)


def kill_group(process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # it had finished, and its group with it
        pass
    process.wait(timeout=EXIT_SECONDS)


def timed_run(command, marker) -> tuple[float, float]:
    """Seconds from start to ``marker``'s appearance, and from then to the end, of an uninterrupted run."""
    started = time.monotonic()
    process = subprocess.Popen(command, start_new_session=True)
    wait_for(marker, process)
    marked = time.monotonic()
    assert process.wait(timeout=120) == 0
    return marked - started, time.monotonic() - marked


@pytest.fixture(scope="module")
def clean_pack(source, tmp_path_factory):
    """An uninterrupted pack, and how long its stages take on this machine."""
    out = tmp_path_factory.mktemp("clean") / "out"
    before, work = timed_run(pack_command(source, out, extra=NO_FSYNC), out / mf.WORK_DIR_NAME / "plan.json")
    assert (out / mf.REPORT_NAME).read_text().count("\n") == 2  # the header and broken.jpg
    return out, before, work


def test_kill_9_of_pack_at_random_moments_then_the_same_command_gives_the_same_dataset(source, clean_pack, tmp_path):
    kill_trials(source, clean_pack, tmp_path, KILL_TRIALS, seed=18)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kill_9_of_pack_at_many_more_moments(source, clean_pack, tmp_path):
    kill_trials(source, clean_pack, tmp_path, 200, seed=1918)


def kill_trials(source, clean_pack, tmp_path, count: int, seed: int) -> None:
    clean, before, work = clean_pack
    expected = contents(clean)
    rng = random.Random(seed)
    phases = []
    for trial in range(count):
        out = tmp_path / f"trial{trial}"
        order = "disk" if trial % 4 == 3 else "list"  # disk order: spilled, then gathered into the same bytes
        spill_dir = ("--spill-dir", str(tmp_path / f"spill{trial}")) if trial % 8 == 7 else ()  # else in memory
        command = pack_command(source, out, order, extra=NO_FSYNC + spill_dir)
        process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        if trial % 5 == 0:  # now and then anywhere, startup included
            time.sleep(rng.uniform(0, before + work))
        else:  # mostly while the pack writes: from its plan's appearance to its end
            wait_for(out / mf.WORK_DIR_NAME / "plan.json", process)
            time.sleep(rng.uniform(0, work * 1.2))
        kill_group(process)
        phases.append(phase_of(out))
        was_complete = assert_complete_or_refused(out)
        rerun = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if was_complete:  # as after an uninterrupted run: the same command refuses to overwrite
            assert rerun.returncode == 1 and rerun.stderr == (
                f"recpack: error: {out}: already holds a complete dataset; pass --overwrite to replace it\n")
        else:
            assert rerun.returncode == 0, (phases[-1], rerun.stderr)
        assert contents(out) == expected, f"trial {trial}, killed at: {phases[-1]}"
        assert not spill_dir or not os.listdir(spill_dir[1])  # the spill is gone with the pack
        shutil.rmtree(out)
    print("pack kill trials:", phases)
    assert len({p for p in phases if "noted" in p or p.startswith("started")}) >= 2, phases  # mid-pack, not only ends


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except FileNotFoundError:
        return []


def working(out, order: str, pid: int) -> bool:
    """Whether the workers are at work: writing a shard (list order), or filling the spill (disk order:
    the memory files the pack process holds, or with --spill-dir its folder)."""
    if order == "list":
        return os.path.isdir(out) and any(n.endswith(".rec.tmp") for n in os.listdir(out))
    if order == "disk-spill-dir":
        return any(f.stat().st_size for f in (out.parent / "spill").glob("*/*.spill"))
    return pr.memory_spill_bytes(pid) > 0


@pytest.mark.skipif(sys.platform != "linux", reason="finds the workers through /proc")
@pytest.mark.parametrize("order, worker", [("list", 0), ("list", 1), ("disk", 0), ("disk-spill-dir", 1)])
def test_a_killed_worker_ends_the_pack_with_one_line_and_the_rerun_completes(source, clean_pack, tmp_path, order,
                                                                              worker):
    out = tmp_path / "out"
    extra = ("--spill-dir", str(tmp_path / "spill")) if order == "disk-spill-dir" else ()
    command = pack_command(source, out, order.removesuffix("-spill-dir"), extra=extra)
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        workers = children_of(process.pid)
        if len(workers) == 2 and working(out, order, process.pid):
            break
        time.sleep(0.001)
    else:
        pytest.fail("the pack ended before both workers were writing")
    os.kill(sorted(workers)[worker], signal.SIGKILL)
    try:
        _, stderr = process.communicate(timeout=EXIT_SECONDS)
    except subprocess.TimeoutExpired:
        kill_group(process)
        pytest.fail(f"the pack hung for {EXIT_SECONDS} s after one of its workers was killed")
    if process.returncode == 0:  # disk order reads all 101 inputs in one task: it may have been done already
        assert order.startswith("disk") and contents(out) == contents(clean_pack[0])
        return
    assert process.returncode == 1 and "Traceback" not in stderr
    assert stderr == ("recpack: error: a worker process died (killed by signal 9: out of memory, or kill -9); "
                      "the shards finished so far are kept: rerun the same command\n")
    assert not assert_complete_or_refused(out)
    assert not children_of(process.pid)
    assert subprocess.run(command, capture_output=True, timeout=120).returncode == 0
    assert contents(out) == contents(clean_pack[0])


def test_a_file_size_limit_fails_the_pack_in_one_line_and_a_rerun_resumes(source, clean_pack, tmp_path):
    """RLIMIT_FSIZE: a write past it fails with EFBIG, as a full disk fails with ENOSPC (no root needed)."""
    out = tmp_path / "out"
    command = pack_command(source, out, workers=1)
    limit = 12 << 10  # shards are ~25 KB: the first one fails
    failed = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert failed.stderr == (f"recpack: error: {out / 'shard-00000'}: cannot write (File too large); "
                             "the shards finished so far are kept: fix this and rerun the same command\n")
    assert not assert_complete_or_refused(out)
    assert_nothing_half_published(out)
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert contents(out) == contents(clean_pack[0])


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 1 MB mounted for the test (root only), unmounted after it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def free_bytes(folder) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def test_a_full_disk_fails_the_pack_in_one_line_and_a_rerun_after_freeing_space_resumes(source, clean_pack,
                                                                                         small_disk):
    """The disk fills at several points of the pack: in a worker's shard, or in the packer's own writes
    (resume notes, key index, report, manifest).  Each time: one line, no manifest, and the same
    command completes the dataset once space is freed."""
    out, filler = small_disk / "out", small_disk / "filler"
    command = pack_command(source, out, workers=1)
    before = free_bytes(small_disk)
    assert subprocess.run(command, capture_output=True, timeout=120).returncode == 0
    everything = before - free_bytes(small_disk)
    shards = sum(os.stat(out / name).st_blocks * 512 for name in os.listdir(out) if name.startswith("shard-"))
    shutil.rmtree(out)
    failed_in = set()
    rest = everything - shards  # notes, key index, report, manifest: the packer's own writes
    for room in (shards // 2, shards + rest // 3, everything - 4096):
        filler.write_bytes(bytes(free_bytes(small_disk) - room))
        failed = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert failed.returncode == 1, f"room for {room} of {everything} bytes: {failed.stderr}"
        assert "Traceback" not in failed.stderr and failed.stderr.count("\n") == 1
        where, _, rest = failed.stderr.removeprefix("recpack: error: ").partition(": cannot write (")
        assert where.startswith(str(out)) and rest.endswith(
            "); the shards finished so far are kept: fix this and rerun the same command\n"), failed.stderr
        failed_in.add("shard" if os.path.basename(where).startswith("shard-") else "packer")
        assert not assert_complete_or_refused(out)
        assert_nothing_half_published(out)
        filler.unlink()
        rerun = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        assert contents(out) == contents(clean_pack[0])
        shutil.rmtree(out)
    assert "shard" in failed_in  # the packer's own writes: below, where each can be made to fail in turn


class DiskFull:
    """Makes one of the packer's own writes fail as a full disk does (ENOSPC from write(), no file named)."""

    def __init__(self, monkeypatch, where: str):
        self.calls = 0
        if where.startswith("json"):  # the plan (1st), a shard's resume note (4th), the manifest (10th)
            fail_at, dump = int(where.split()[1]), mf.json.dump

            def failing_dump(data, handle, **options):
                self.calls += 1
                if self.calls == fail_at:
                    handle.write("{")  # half a file, as a write cut short leaves it
                    raise OSError(errno.ENOSPC, "No space left on device")
                dump(data, handle, **options)

            monkeypatch.setattr(mf.json, "dump", failing_dump)
        elif where == "key index":  # LMDB's own failure: its map full
            monkeypatch.setattr(keyindex, "_MAP_SIZE", 32 << 10)
        elif where == "report":
            def failing_open(path, mode="r", **options):
                handle = open(path, mode, **options)
                if "w" in mode:
                    handle.write = lambda text: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))
                return handle

            monkeypatch.setattr(publish, "open", failing_open, raising=False)


@pytest.mark.parametrize("where", ["json 1", "json 4", "json 10", "key index", "report"])
def test_a_full_disk_in_the_packers_own_writes_fails_in_one_line_and_a_rerun_completes(source, clean_pack, tmp_path,
                                                                                        monkeypatch, where):
    """The plan, a resume note, the manifest, the key index, the report of bad inputs: each failing write is
    one PackError naming its file, leaves no manifest (nor its temporary file), and the rerun completes."""
    out = tmp_path / "out"
    options = PackOptions(shards=8, workers=1, order="list", fsync=False)
    with monkeypatch.context() as patches:
        DiskFull(patches, where)
        with pytest.raises(OSError if where == "json 1" else PackError) as failed:
            pack(open_source(str(source)), str(out), options, show_progress=False)
    if where == "json 1":  # before any work: the OSError, which the CLI prints as one line, names the plan
        assert (failed.value.errno, failed.value.filename) == (errno.ENOSPC, f"{out}/{mf.WORK_DIR_NAME}/plan.json")
    else:
        message = str(failed.value)
        named = {"json 4": f"{out}/{mf.WORK_DIR_NAME}/shard-0000", "json 10": f"{out}/{mf.MANIFEST_NAME}",
                 "key index": f"{out}/{mf.KEY_INDEX_NAME}", "report": f"{out}"}
        assert message.startswith(named[where]) and "\n" not in message, message
        assert message.endswith("); the shards finished so far are kept: fix this and rerun the same command")
    assert not [name for name in os.listdir(out) if name.startswith(mf.MANIFEST_NAME)]
    assert_nothing_half_published(out)
    pack(open_source(str(source)), str(out), options, show_progress=False)
    assert contents(out) == contents(clean_pack[0])


# --- recpack import ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rec_files(tmp_path_factory):
    """Eight .rec files of 6,000 small records each, half with their .idx (the import writes the others').

    Many records make the import's scan long enough for kills to land in it."""
    folder = tmp_path_factory.mktemp("recs")
    for number in range(8):
        offsets, pieces, offset = [], [], 0
        for record in range(6_000):
            payload = IR_HEADER.pack(0, float(record % 7), record, 0) + bytes([number, record % 251]) * 3
            offsets.append(offset)
            framed = b"".join(bytes(piece) for piece in frame_record(payload))
            pieces.append(framed)
            offset += len(framed)
        (folder / f"part{number}.rec").write_bytes(b"".join(pieces))
        if number % 2:
            (folder / f"part{number}.idx").write_bytes(idx_bytes(np.asarray(offsets)))
    return folder


def test_kill_9_of_import_at_random_moments_then_the_same_command_gives_the_same_dataset(rec_files, tmp_path):
    def command(out):
        return [sys.executable, "-m", "recpack", "import", str(rec_files), str(out), "--quiet"]

    clean = tmp_path / "clean"
    before, work = timed_run(command(clean), clean)
    expected = contents(clean)
    rng = random.Random(7)
    phases = []
    for trial in range(IMPORT_TRIALS):
        out = tmp_path / f"trial{trial}"
        process = subprocess.Popen(command(out), start_new_session=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        wait_for(out, process)  # made once the arguments are checked, before the first scan
        time.sleep(rng.uniform(0, work * 1.2))
        kill_group(process)
        phases.append(phase_of(out))
        was_complete = assert_complete_or_refused(out)
        rerun = subprocess.run(command(out), capture_output=True, text=True, timeout=120)
        if was_complete:
            assert rerun.returncode == 1 and rerun.stderr == (
                f"recpack: error: {out}: already holds a dataset ({mf.MANIFEST_NAME}); choose another folder\n")
        else:
            assert rerun.returncode == 0, rerun.stderr
        assert contents(out) == expected, f"import trial {trial}"
    print("import kill trials:", phases)
