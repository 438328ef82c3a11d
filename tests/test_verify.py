"""recpack verify: besides the shards, the key index that ``recpack get`` reads, and datasets with no records."""

import shutil

import lmdb
import pytest
from conftest import run_cli

from recpack.format import framing, keyindex
from recpack.format import manifest as mf
from recpack.pack.packer import PackOptions, pack
from recpack.pack.sources import open_source


@pytest.fixture(scope="module")
def packed_once(photo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed") / "out"
    pack(open_source(str(photo_dir)), str(out), PackOptions(shards=3, workers=1), show_progress=False)
    return out


@pytest.fixture
def packed(packed_once, tmp_path):
    """A copy of a sound 60-record packed dataset, to damage."""
    return shutil.copytree(packed_once, tmp_path / "out")


def failed_verify(out) -> str:
    """verify's one-line complaint: exit status 1, no traceback."""
    done = run_cli("verify", out, "--quiet", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("recpack: corrupt: ")
    return done.stderr


def write_key_index(path, keys: int) -> None:
    env = lmdb.open(str(path), subdir=True, map_size=1 << 20)
    with env.begin(write=True) as txn:
        for key in range(keys):
            txn.put(str(key).encode(), bytes(16))
    env.close()


def test_a_sound_dataset_passes(packed):
    assert "every checksum matches" in run_cli("verify", packed, "--quiet").stdout


def test_a_missing_key_index_fails(packed):
    shutil.rmtree(packed / "keys.lmdb")
    assert failed_verify(packed) == "recpack: corrupt: keys.lmdb: missing (recpack get needs this key index)\n"


def test_an_unreadable_key_index_fails_and_get_says_so_in_one_line(packed):
    (packed / "keys.lmdb" / "data.mdb").write_bytes(b"not lmdb" * 1000)
    assert f"{packed / 'keys.lmdb'}: unreadable key index (" in failed_verify(packed)
    done = run_cli("get", packed, "dog/small_0003.jpg", "-o", packed / "x.jpg", check=False)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"{packed / 'keys.lmdb'}: unreadable key index" in done.stderr


def test_a_truncated_key_index_fails_verify_and_get_without_a_crash(packed):
    """LMDB maps its file: reading past a truncated end would be a SIGBUS (the bus error a user saw)."""
    data = packed / "keys.lmdb" / "data.mdb"
    with open(data, "r+b") as handle:
        handle.truncate(8192)  # the two meta pages survive, the tree does not
    message = f"{data}: truncated key index (8192 bytes, its header says "
    assert message in failed_verify(packed)
    done = run_cli("get", packed, "dog/small_0003.jpg", "-o", packed / "x.jpg", check=False)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and message in done.stderr


@pytest.mark.parametrize("keys", [0, 61])
def test_a_key_index_with_an_implausible_count_fails(packed, keys):
    """More keys than records cannot be this dataset's index; none at all cannot either, when there are records."""
    shutil.rmtree(packed / "keys.lmdb")
    write_key_index(packed / "keys.lmdb", keys)
    assert failed_verify(packed) == f"recpack: corrupt: keys.lmdb: {keys} keys for 60 records (not this dataset's key index)\n"


def test_verify_does_not_write_into_the_key_index(packed):
    """Opened read-only and without LMDB's lock file, so verify works on data it may not write to."""
    (packed / "keys.lmdb" / "lock.mdb").unlink(missing_ok=True)
    data = packed / "keys.lmdb" / "data.mdb"
    before = data.stat().st_mtime_ns
    assert "every checksum matches" in run_cli("verify", packed, "--quiet").stdout
    assert sorted(path.name for path in (packed / "keys.lmdb").iterdir()) == ["data.mdb"]
    assert data.stat().st_mtime_ns == before


def test_a_key_listed_twice_keeps_one_entry_and_passes(photo_dir, tmp_path):
    image = photo_dir / "cat" / "small_0000.jpg"
    listing = tmp_path / "list.txt"
    listing.write_text(f"0\t0\t{image}\n1\t0\t{photo_dir / 'dog' / 'small_0000.jpg'}\n2\t0\t{image}\n")
    run_cli("pack", listing, tmp_path / "out", "--shards", "1", "--quiet")
    assert keyindex.count(str(tmp_path / "out")) == 2
    assert "ok: 3 records" in run_cli("verify", tmp_path / "out", "--quiet").stdout


def test_an_imported_dataset_needs_no_key_index(tmp_path):
    (tmp_path / "a.rec").write_bytes(b"".join(bytes(piece) for piece in framing.frame_record(b"payload")))
    run_cli("import", tmp_path / "a.rec", tmp_path / "out", "--quiet")
    assert not (tmp_path / "out" / "keys.lmdb").exists()
    assert "every checksum matches" in run_cli("verify", tmp_path / "out", "--quiet").stdout
    write_key_index(tmp_path / "out" / "keys.lmdb", 2)  # one there is what get reads: checked all the same
    assert "keys.lmdb: 2 keys for 1 records" in failed_verify(tmp_path / "out")


def test_a_dataset_with_no_records_fails(tmp_path):
    """RecordDataset refuses it; verify must not call it ok (an import made such folders before it refused)."""
    out = tmp_path / "out"
    out.mkdir()
    mf.save(str(out), mf.Manifest((), created={"imported": True}))
    assert failed_verify(out) == "recpack: corrupt: recpack.json: the dataset holds no records\n"
