"""Resume that cannot replay the wrong records: a state carries its setup, and another setup is refused.

Each field of ``state_dict`` that decides which records come next is changed alone, and
``load_state_dict`` must refuse with a message naming that field and both values; what
cannot change the order (workers, threads, decoding) must keep working.
"""

import shutil

import pytest

import corpus
from recpack.errors import RecpackError
from recpack.pack.packer import PackOptions, pack
from recpack.pack.sources import open_source
from recpack.read.dataset import Partition, ReadOptions, RecordDataset

BASE = dict(augment=None, batch_size=8, seed=3, drop_last=False, shuffle=True,
            read=ReadOptions(shuffle_buffer=8, window=8), partition=Partition(0, 3, "pad"))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """One dataset, a copy of it elsewhere, and a repack with the same shard sizes but another order."""
    root = tmp_path_factory.mktemp("resume")
    corpus.make_small_jpegs(root / "images" / "a", 40, size=(40, 32), seed=5)
    for name, seed in (("one", 0), ("repacked", 1)):
        pack(open_source(str(root / "images")), str(root / name), PackOptions(shards=3, seed=seed, workers=1),
             show_progress=False)
    shutil.copytree(root / "one", root / "copy")
    return root


def dataset(root, name="one", **changes):
    return RecordDataset(str(root / name), **{**BASE, **changes})


def delivered(ds):
    """The batches an iteration delivers, each record named by its JPEG bytes (raw mode: augment=None)."""
    return [tuple(hash(bytes(image)) for image in images) for images, _ in ds]


def saved_state(root, **changes):
    ds = dataset(root, **changes)
    ds.set_epoch(2)
    return ds.state_dict(batches_seen=1, num_workers=2)


def test_the_state_carries_everything_that_decides_the_order(datasets):
    state = saved_state(datasets)
    assert {key: state[key] for key in ("version", "epoch", "seed", "shuffle", "window", "group", "batch_size",
                                        "drop_last", "rank", "world", "uneven", "unit")} == {
        "version": 2, "epoch": 2, "seed": 3, "shuffle": True, "window": 8, "group": 8, "batch_size": 8,
        "drop_last": False, "rank": 0, "world": 3, "uneven": "pad", "unit": 8,
    }
    identity = state["dataset"]
    assert (identity["records"], identity["shards"]) == (40, 3) and len(identity["fingerprint"]) == 16
    assert sum(state["consumed"].values()) == 1


REFUSED = [
    ("seed", dict(seed=4), "seed 3, this dataset has 4"),
    ("shuffle", dict(shuffle=False), "shuffle True, this dataset has False"),
    ("window", dict(read=ReadOptions(shuffle_buffer=8, window=16)), "read.window 8, this dataset has 16"),
    ("shuffle buffer", dict(read=ReadOptions(shuffle_buffer=16, window=8)),
     "shuffle buffer (read.shuffle_buffer rounded up to whole batches) 8, this dataset has 16"),
    ("batch size", dict(batch_size=4), "batch_size 8, this dataset has 4"),
    ("drop_last", dict(drop_last=True), "drop_last False, this dataset has True"),
    ("rank", dict(partition=Partition(1, 3, "pad")), "rank 0, this dataset has 1"),
    ("world size", dict(partition=Partition(0, 4, "pad")), "world size 3, this dataset has 4"),
    ("pad or drop", dict(partition=Partition(0, 3, "drop")), "partition.uneven 'pad', this dataset has 'drop'"),
]


@pytest.mark.parametrize("field, change, words", REFUSED, ids=[case[0] for case in REFUSED])
def test_a_state_from_another_setup_is_refused_naming_the_difference(datasets, field, change, words):
    state = saved_state(datasets)
    other = dataset(datasets, **change)
    with pytest.raises(RecpackError) as refused:
        other.load_state_dict(state)
    assert str(refused.value) == (f"state was saved with {words}: "
                                  "resuming would not deliver the rest of that epoch")
    assert other.epoch == 0 and other._resume == {}  # nothing of the refused state was taken


def test_a_state_from_another_dataset_with_the_same_shard_sizes_is_refused(datasets):
    state = saved_state(datasets)
    repacked = dataset(datasets, "repacked")
    assert [s.records for s in repacked.manifest.shards] == [s.records for s in dataset(datasets).manifest.shards]
    with pytest.raises(RecpackError, match=r"^state was saved with dataset 40 records in 3 shards \(fingerprint "
                                           r"[0-9a-f]{16}\), this dataset has 40 records in 3 shards \(fingerprint "):
        repacked.load_state_dict(state)


def test_a_moved_dataset_and_harmless_changes_resume_exactly(datasets):
    """Another folder, DataLoader workers, threads, decoding and CRC checks do not change which records come next."""
    first = dataset(datasets)
    first.set_epoch(2)
    whole = delivered(first)
    state = first.state_dict(batches_seen=1, num_workers=0)
    moved = dataset(datasets, "copy", augment=None, read=ReadOptions(shuffle_buffer=8, window=8, threads=1,
                                                                    decode_depth=2, verify=False))
    moved.load_state_dict(state)
    assert moved.epoch == 2
    assert [len(batch) for batch in whole] == [8, 6]  # rank 0 of 3: 14 records (40 padded to 42)
    assert delivered(moved) == whole[1:]


def test_window_without_shuffle_and_drop_last_per_sample_are_harmless(datasets):
    unshuffled = saved_state(datasets, shuffle=False)
    dataset(datasets, shuffle=False, read=ReadOptions(shuffle_buffer=8, window=32)).load_state_dict(unshuffled)
    per_sample = dataset(datasets, batch_size=None)
    state = per_sample.state_dict(batches_seen=1, num_workers=0, loader_batch_size=4)
    assert state["drop_last"] is None and state["batch_size"] is None
    dataset(datasets, batch_size=None, drop_last=True).load_state_dict(state)


def test_a_state_without_its_setup_is_refused(datasets):
    old = {"epoch": 1, "seed": 3, "unit": 8, "consumed": {"0": 1}}  # what recpack wrote before the setup fields
    with pytest.raises(RecpackError) as refused:
        dataset(datasets).load_state_dict(old)
    assert str(refused.value) == ("state has version None, this recpack reads version 2: a state without its setup "
                                  "cannot be checked against this one; start the epoch afresh (set_epoch)")


def test_every_refused_field_is_one_that_changes_the_records_that_come_next(datasets):
    """The refusals are not arbitrary: under each changed setup, the epoch's records or batches differ."""
    def rest(ds):
        ds.set_epoch(2)
        return delivered(ds)

    baseline = rest(dataset(datasets))
    for field, change, _ in REFUSED:
        assert rest(dataset(datasets, **change)) != baseline, field
