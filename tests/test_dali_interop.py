"""DALI's readers.mxnet reads every record of a many-shard recpack dataset once, through dataset.idx.

DALI takes many .rec paths but a single index, whose offsets run across the
files' concatenation: recpack writes that index (``dataset.idx``) at pack and
import time.  DALI 2.4.0 runs in its own venv (tools/setup_dali_venv.sh, built
on first use, CPU only) and is driven through tests/dali_probe.py.  Where the
venv cannot be built (no PyPI, no room) these tests are skipped with the
reason; opt out explicitly with ``-m "not dali"``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

import corpus
from recpack.format import manifest as mf
from recpack.format.schema import unpack_payload
from recpack.pack.importer import import_rec
from recpack.pack.packer import PackOptions, pack
from recpack.pack.sources import open_source
from recpack.read.opening import dali_inputs, open_shards

pytestmark = pytest.mark.dali

REPO = Path(__file__).resolve().parent.parent
SETUP_SCRIPT = REPO / "tools" / "setup_dali_venv.sh"
DALI_VENV = REPO / "benchmarks" / ".venv-dali"
PROBE = Path(__file__).resolve().with_name("dali_probe.py")


@pytest.fixture(scope="session")
def dali_python() -> str:
    done = subprocess.run(["bash", str(SETUP_SCRIPT), str(DALI_VENV)], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        pytest.skip(f"the DALI venv could not be built ({SETUP_SCRIPT}: {done.stderr.strip()[-300:]})")
    return str(DALI_VENV / "bin" / "python")


def dali_read(python: str, index: str, recs: list[str]) -> list[dict]:
    done = subprocess.run([python, str(PROBE), "read", index, *recs], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)["result"]


def recpack_records(dataset: str) -> list[tuple[str, list[float]]]:
    """(image SHA-256, labels) of every record, in shard order, as recpack reads them."""
    _, readers = open_shards(dataset)
    out = []
    for reader in readers:
        for index in range(len(reader)):
            payload = unpack_payload(reader.read(index))
            out.append((hashlib.sha256(payload.image).hexdigest(), payload.labels.tolist()))
    return out


def as_pairs(records: list[dict]) -> list[tuple[str, list[float]]]:
    return [(r["image_sha256"], r["labels"]) for r in records]


@pytest.fixture(scope="module")
def sixteen_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("dali")
    for label in range(3):
        corpus.make_small_jpegs(root / "images" / f"c{label}", 20, size=(48, 40), seed=label)
    pack(open_source(str(root / "images")), str(root / "out"), PackOptions(shards=16, workers=2), show_progress=False)
    return str(root / "out")


def test_dali_reads_every_record_once_through_the_dataset_index(sixteen_shards, dali_python):
    recs, index = dali_inputs(sixteen_shards)
    assert len(recs) == 16
    assert as_pairs(dali_read(dali_python, index, recs)) == recpack_records(sixteen_shards)


def test_a_shard_index_alone_gives_dali_only_that_shard(sixteen_shards, dali_python):
    """Why the dataset index exists: with one shard's .idx DALI sees that shard's records and no others."""
    recs, _ = dali_inputs(sixteen_shards)
    first = recs[0][: -len(".rec")] + ".idx"
    in_first = mf.load(sixteen_shards).shards[0].records
    assert len(dali_read(dali_python, first, recs)) == in_first < len(recpack_records(sixteen_shards)) / 8


def test_dali_reads_an_imported_dataset_whose_empty_rec_is_left_out(sixteen_shards, dali_python, tmp_path):
    recs, _ = dali_inputs(sixteen_shards)
    empty = tmp_path / "empty.rec"
    empty.write_bytes(b"")
    import_rec([recs[0], str(empty), *recs[1:4]], str(tmp_path / "imported"), show_progress=False)
    imported_recs, index = dali_inputs(str(tmp_path / "imported"))
    assert len(imported_recs) == 4  # DALI cannot map an empty file: it is not passed
    assert as_pairs(dali_read(dali_python, index, imported_recs)) == recpack_records(str(tmp_path / "imported"))
