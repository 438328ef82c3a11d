"""RecordDataset as a training loop uses it: partitioning, order, resume, decoding, errors."""

import itertools
import os
import warnings
import weakref

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import corpus
import recpack.read.batches as batches_module
import recpack.read.dataset as dataset_module
from recpack.format import manifest as mf
from recpack.read.dataset import Partition, ReadOptions, RecordDataset
from recpack.read.decode import Augment
from recpack.errors import CorruptRecordError, IncompleteDatasetError, RecpackError
from recpack.pack.packer import PackOptions, pack
from recpack.pack.sources import open_source

RECORDS = 95


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    for label in range(3):
        corpus.make_small_jpegs(root / "images" / f"c{label}", [40, 30, 25][label], size=(72, 56), seed=label)
    pack(open_source(str(root / "images")), str(root / "out"), PackOptions(shards=7, workers=2), show_progress=False)
    return root / "out"


class FakeWorker:
    def __init__(self, id, num_workers):
        self.id, self.num_workers = id, num_workers


def worker_batches(ds, worker, workers, monkeypatch):
    """What DataLoader worker ``worker`` of ``workers`` would yield, without starting processes."""
    monkeypatch.setattr(dataset_module, "get_worker_info", lambda: FakeWorker(worker, workers))
    try:
        return list(ds)
    finally:
        monkeypatch.setattr(dataset_module, "get_worker_info", lambda: None)


def ids(batches):
    """Record ids (list line numbers) in raw mode: the label tensor is replaced by ids below."""
    return [int(i) for _, labels in batches for i in labels]


@pytest.fixture
def tagged(monkeypatch):
    """Make labels carry the record id (IRHeader id = list line) in every test that asks."""
    original = batches_module.unpack_payload

    def tag(payload, trailing=()):
        parsed = original(payload, trailing)
        return type(parsed)(np.array([parsed.record_id], np.float32), parsed.record_id, parsed.image, parsed.mask)

    monkeypatch.setattr(batches_module, "unpack_payload", tag)


def all_ids():
    return set(range(1, RECORDS + 1))


@pytest.mark.parametrize("world, workers, batch, uneven", [
    (1, 1, 8, "pad"), (1, 3, 8, "pad"), (2, 2, 16, "pad"), (3, 2, 5, "drop"),
    (4, 3, 4, "pad"), (8, 2, 3, "pad"), (10, 1, 2, "drop"), (2, 5, 64, "pad"),
])
def test_every_record_once_across_ranks_and_workers(packed, tagged, monkeypatch, world, workers, batch, uneven):
    seen, batches_per_rank = [], []
    for rank in range(world):
        ds = RecordDataset(str(packed), augment=None, batch_size=batch, shuffle=True, seed=3,
                           partition=Partition(rank, world, uneven), read=ReadOptions(shuffle_buffer=12, window=5))
        rank_batches = [b for w in range(workers) for b in worker_batches(ds, w, workers, monkeypatch)]
        assert len(rank_batches) == len(ds)
        batches_per_rank.append(len(rank_batches))
        seen += ids(rank_batches)
    assert len(set(batches_per_rank)) == 1
    if uneven == "pad":
        assert set(seen) == all_ids() and len(seen) == world * -(-RECORDS // world)
    else:
        assert len(seen) == len(set(seen)) == RECORDS - RECORDS % world


def test_fewer_shards_than_consumers_still_splits_exactly(packed, tagged, monkeypatch):
    seen = []
    for rank in range(4):
        ds = RecordDataset(str(packed), augment=None, batch_size=None, partition=Partition(rank, 4, "drop"),
                           read=ReadOptions(shuffle_buffer=4))
        seen += [int(label) for w in range(3) for _, label in worker_batches(ds, w, 3, monkeypatch)]
    assert len(seen) == len(set(seen)) == 92  # 7 shards, 12 consumers


def test_order_depends_on_seed_and_epoch_only(packed, tagged):
    def order(seed, epoch):
        ds = RecordDataset(str(packed), augment=None, batch_size=10, seed=seed)
        ds.set_epoch(epoch)
        return ids(ds)

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1) and order(1, 0) != order(2, 0)
    assert sorted(order(1, 1)) == sorted(all_ids())
    unshuffled = RecordDataset(str(packed), augment=None, batch_size=10, shuffle=False)
    assert ids(unshuffled) == ids(unshuffled)


@pytest.mark.parametrize("before, after, batch", [(2, 2, 8), (2, 3, 8), (3, 1, 4), (0, 2, 8), (1, 4, 16)])
def test_resume_mid_epoch_delivers_exactly_the_rest(packed, tagged, monkeypatch, before, after, batch):
    ds = RecordDataset(str(packed), augment=None, batch_size=batch, seed=9, read=ReadOptions(shuffle_buffer=16))
    ds.set_epoch(4)
    workers = max(before, 1)
    streams = [iter(worker_batches(ds, w, workers, monkeypatch)) for w in range(workers)]
    delivered = []
    for stream in itertools.cycle(streams):  # the DataLoader's round robin, stopped part-way
        if len(delivered) == 5:
            break
        delivered += [b for b in itertools.islice(stream, 1)]
    state = ds.state_dict(batches_seen=5, num_workers=before)
    resumed = RecordDataset(str(packed), augment=None, batch_size=batch, seed=9, read=ReadOptions(shuffle_buffer=16))
    resumed.load_state_dict(state)
    rest = [b for w in range(max(after, 1)) for b in worker_batches(resumed, w, max(after, 1), monkeypatch)]
    first, second = ids(delivered), ids(rest)
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(all_ids())


def test_resume_in_per_sample_mode_with_dataloader_batches(packed, tagged, monkeypatch):
    ds = RecordDataset(str(packed), augment=None, batch_size=None, read=ReadOptions(shuffle_buffer=8))
    samples = worker_batches(ds, 0, 1, monkeypatch)
    state = ds.state_dict(batches_seen=3, num_workers=0, loader_batch_size=4)
    resumed = RecordDataset(str(packed), augment=None, batch_size=None, read=ReadOptions(shuffle_buffer=8))
    resumed.load_state_dict(state)
    rest = [int(label) for _, label in resumed]
    assert rest == [int(label) for _, label in samples[12:]]


def test_dataloader_workers_batched_mode(packed):
    ds = RecordDataset(str(packed), batch_size=16, augment=Augment(size=32))
    batches = list(DataLoader(ds, batch_size=None, num_workers=2))
    assert len(batches) == len(ds) and sum(len(images) for images, _ in batches) == RECORDS
    images, labels = batches[0]
    assert images.shape[1:] == (3, 32, 32) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert set(torch.cat([labels for _, labels in batches]).tolist()) == {0, 1, 2}


def _shared_before_sending(batch):
    """Runs in the worker, before DataLoader pickles the batch: is it already in shared memory?"""
    images, labels = batch
    return images, labels, images.is_shared()


def test_worker_batches_are_built_in_shared_memory_and_match_the_threads_mode(packed):
    evaluation = dict(batch_size=16, augment=Augment(size=32, train=False), shuffle=False)
    loader = DataLoader(RecordDataset(str(packed), **evaluation), batch_size=None, num_workers=1,
                        collate_fn=_shared_before_sending)
    received = list(loader)
    assert all(shared for _, _, shared in received)  # no copy into shared memory when sent
    in_process = list(RecordDataset(str(packed), **evaluation))
    assert len(received) == len(in_process)
    for (images, labels, _), (expected_images, expected_labels) in zip(received, in_process):
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


def test_a_batch_the_consumer_dropped_is_freed_before_the_next_buffer_is_made(packed, monkeypatch):
    """What a DataLoader worker needs: its finished batch has left, so only one buffer may exist at a time."""
    made, alive_when_made = [], []

    def recording_buffer(shape):
        alive_when_made.append(sum(ref() is not None for ref in made))
        array = np.empty(shape, np.uint8)
        made.append(weakref.ref(array))
        return array

    monkeypatch.setattr(batches_module, "private_buffer", recording_buffer)
    ds = RecordDataset(str(packed), batch_size=16, augment=Augment(size=32), read=ReadOptions(threads=1, decode_depth=1))
    for images, _ in ds:  # each batch is dropped when the loop takes the next
        del images
    assert len(made) == len(ds) > 2
    assert alive_when_made == [0] * len(made)


def test_dataloader_per_sample_mode_with_default_collate(packed):
    ds = RecordDataset(str(packed), augment=Augment(size=24, train=False), normalize=True)
    batches = list(DataLoader(ds, batch_size=10, num_workers=2))
    images, labels = batches[0]
    assert images.shape == (10, 3, 24, 24) and images.dtype == torch.float32 and labels.shape == (10,)
    assert len(ds) == RECORDS and sum(len(b[0]) for b in batches) == RECORDS
    assert -3 < float(images.mean()) < 3


def test_evaluation_is_deterministic_and_training_is_not(packed):
    def first_image(augment, epoch=0):
        ds = RecordDataset(str(packed), batch_size=RECORDS, augment=augment, shuffle=False)
        ds.set_epoch(epoch)
        return next(iter(ds))[0]

    evaluation = Augment(size=32, train=False)
    assert torch.equal(first_image(evaluation), first_image(evaluation, epoch=1))
    training = Augment(size=32)
    assert torch.equal(first_image(training), first_image(training))
    assert not torch.equal(first_image(training), first_image(training, epoch=1))


def test_transform_hook_runs_on_each_image(packed):
    ds = RecordDataset(str(packed), batch_size=8, augment=Augment(size=16), transform=lambda hwc: 255 - hwc * 0)
    images, _ = next(iter(ds))
    assert (images == 255).all()


def test_missing_or_incomplete_dataset_fails_at_construction(tmp_path):
    with pytest.raises(IncompleteDatasetError, match="no such dataset folder"):
        RecordDataset(str(tmp_path / "nothing"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "shard-00000.rec").write_bytes(b"")
    (tmp_path / "half" / mf.WORK_DIR_NAME).mkdir()  # what an interrupted pack leaves; bare .rec files are scanned
    with pytest.raises(IncompleteDatasetError, match="incomplete dataset"):
        RecordDataset(str(tmp_path / "half"))


@pytest.fixture
def corrupted(packed, tmp_path):
    """A copy of the dataset with one byte of one image flipped."""
    import shutil

    copy = tmp_path / "corrupt"
    shutil.copytree(packed, copy)
    shard = mf.load(str(copy)).shards[2]
    rows = np.load(copy / shard.rpi.name)
    with open(copy / shard.rec.name, "r+b") as handle:
        handle.seek(int(rows[3]["offset"]) + 8 + 40)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    return copy


def test_corrupt_record_raises_naming_shard_and_record(corrupted):
    ds = RecordDataset(str(corrupted), batch_size=8, augment=Augment(size=16))
    with pytest.raises(CorruptRecordError, match="shard-00002: record 3: CRC32C mismatch"):
        list(ds)


def test_corrupt_record_can_be_skipped(corrupted):
    ds = RecordDataset(str(corrupted), batch_size=8, augment=Augment(size=16), on_error="skip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        total = sum(len(images) for images, _ in ds)
    assert total == RECORDS - 1
    assert any("shard-00002: record 3" in str(w.message) for w in caught)


def test_worker_errors_reach_the_training_loop_with_their_traceback(corrupted):
    ds = RecordDataset(str(corrupted), batch_size=8, augment=Augment(size=16))
    with pytest.raises(CorruptRecordError) as caught:
        list(DataLoader(ds, batch_size=None, num_workers=2))
    assert "shard-00002: record 3" in str(caught.value)


def test_segmentation_masks_follow_the_image_geometry(tmp_path):
    """Left half red / label 1, right half blue / label 2: after any crop and flip they must still agree."""
    image = np.zeros((60, 80, 3), np.uint8)
    image[:, :40, 0], image[:, 40:, 2] = 255, 255
    mask = np.ones((60, 80), np.uint8)
    mask[:, 40:] = 2
    Image.fromarray(image).save(tmp_path / "img.jpg", quality=95)
    Image.fromarray(mask).save(tmp_path / "mask.png")
    lines = [f"{tmp_path}/img.jpg\t{tmp_path}/mask.png" for _ in range(20)]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    pack(open_source(str(tmp_path / "list.txt")), str(tmp_path / "out"), PackOptions(shards=2), show_progress=False)
    ds = RecordDataset(str(tmp_path / "out"), batch_size=20, augment=Augment(size=32))
    images, masks = next(iter(ds))
    assert masks.shape == (20, 32, 32)
    red = images[:, 0].numpy().astype(int) > images[:, 2].numpy().astype(int) + 100
    blue = images[:, 2].numpy().astype(int) > images[:, 0].numpy().astype(int) + 100
    assert (masks.numpy()[red] == 1).all() and (masks.numpy()[blue] == 2).all()
    assert red.sum() > 0 and blue.sum() > 0


def test_multi_label_records_yield_float_vectors(tmp_path):
    paths = corpus.make_small_jpegs(tmp_path / "img", 6)
    (tmp_path / "l.lst").write_text("".join(f"{i}\t{i % 2}\t1\t0.5\t{p}\n" for i, p in enumerate(paths)))
    pack(open_source(str(tmp_path / "l.lst")), str(tmp_path / "out"), PackOptions(shards=1), show_progress=False)
    images, labels = next(iter(RecordDataset(str(tmp_path / "out"), batch_size=6, augment=Augment(size=16))))
    assert labels.dtype == torch.float32 and labels.shape == (6, 3)
    assert sorted(labels[:, 0].tolist()) == [0, 0, 0, 1, 1, 1] and (labels[:, 2] == 0.5).all()


def test_grayscale_sources_come_out_with_three_channels(hostile, tmp_path):
    (tmp_path / "l.txt").write_text(f"{hostile['gray_jpg']}\t0\n{hostile['cmyk_jpg']}\t1\n")
    pack(open_source(str(tmp_path / "l.txt")), str(tmp_path / "out"), PackOptions(shards=1), show_progress=False)
    images, _ = next(iter(RecordDataset(str(tmp_path / "out"), batch_size=2, augment=Augment(size=16))))
    assert images.shape == (2, 3, 16, 16)


def test_rank_and_world_come_from_the_environment_unless_given(packed, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    from_env = RecordDataset(str(packed), augment=None)
    assert (from_env.rank, from_env.world) == (1, 3) and len(from_env) == 32
    given = RecordDataset(str(packed), augment=None, partition=Partition(0, 1))
    assert (given.rank, given.world) == (0, 1) and len(given) == RECORDS


def test_per_sample_resume_needs_the_loader_batch_size(packed):
    ds = RecordDataset(str(packed), augment=None, batch_size=None)
    with pytest.raises(RecpackError, match="loader_batch_size"):
        ds.state_dict(batches_seen=2, num_workers=2)
    with pytest.raises(RecpackError, match="must divide the shuffle buffer"):
        ds.state_dict(batches_seen=2, num_workers=2, loader_batch_size=10)
