"""dataset.idx: one MXNet index over all shards (what DALI needs), written at pack and import, checked by verify."""

from __future__ import annotations

import os

import numpy as np
import pytest

import corpus
from recpack.errors import DatasetError
from recpack.format import framing
from recpack.format.index_files import DATASET_INDEX_NAME, dataset_idx_bytes, parse_idx
from recpack.pack.importer import import_rec
from recpack.pack.packer import PackOptions, pack
from recpack.pack.sources import open_source
from recpack.read.opening import dali_inputs, open_shards
from recpack.read.verify import verify_dataset


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("dsidx")
    corpus.make_small_jpegs(root / "images" / "a", 23, size=(40, 32), seed=3)
    pack(open_source(str(root / "images")), str(root / "out"), PackOptions(shards=5, workers=1), show_progress=False)
    return str(root / "out")


def records_through_the_dataset_index(dataset: str) -> list[bytes]:
    """Every payload, read as DALI does: offsets into the concatenation of the listed .rec files."""
    recs, index = dali_inputs(dataset)
    joined = b"".join(open(path, "rb").read() for path in recs)
    keys, offsets = parse_idx(open(index).read())
    assert keys.tolist() == list(range(len(keys)))
    return [bytes(framing.read_framed(joined, int(offset))[0]) for offset in offsets]


def shard_payloads(dataset: str) -> list[bytes]:
    _, readers = open_shards(dataset)
    return [bytes(reader.read(index)) for reader in readers for index in range(len(reader))]


def test_pack_writes_an_index_whose_offsets_run_across_the_shards(packed):
    assert records_through_the_dataset_index(packed) == shard_payloads(packed)
    assert list(verify_dataset(packed, show_progress=False)) == []


def test_import_writes_one_too_and_leaves_empty_rec_files_out_of_the_paths(packed, tmp_path):
    recs, _ = dali_inputs(packed)
    (tmp_path / "empty.rec").write_bytes(b"")
    import_rec([recs[0], str(tmp_path / "empty.rec"), *recs[1:]], str(tmp_path / "imported"), show_progress=False)
    imported, index = dali_inputs(str(tmp_path / "imported"))
    assert len(imported) == len(recs) and os.path.basename(index) == DATASET_INDEX_NAME
    assert records_through_the_dataset_index(str(tmp_path / "imported")) == shard_payloads(packed)
    assert list(verify_dataset(str(tmp_path / "imported"), show_progress=False)) == []


def test_verify_names_a_damaged_dataset_index_and_accepts_a_dataset_without_one(packed, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(packed, copy)
    index = copy / DATASET_INDEX_NAME
    lines = index.read_text().splitlines()
    index.write_text("\n".join(lines[:3] + lines[4:]) + "\n")  # one record missing
    assert [str(p) for p in verify_dataset(str(copy), show_progress=False)] == [
        f"{DATASET_INDEX_NAME}: disagrees with the shards' offsets (damaged or stale: it must list every record "
        "of every shard, in manifest order)"]
    index.unlink()  # as a dataset packed before recpack wrote one
    assert list(verify_dataset(str(copy), show_progress=False)) == []
    with pytest.raises(DatasetError, match="no dataset.idx"):
        dali_inputs(str(copy))


def test_dataset_index_bytes_move_each_shard_by_the_sizes_before_it():
    text = dataset_idx_bytes([np.array([0, 10]), np.array([], np.uint64), np.array([0, 7])], [20, 0, 15]).decode()
    assert text == "0\t0\n1\t10\n2\t20\n3\t27\n"
