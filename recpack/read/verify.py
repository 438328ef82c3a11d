"""``recpack verify``: check every file size, every checksum and the framing of every record.

A dataset at a URL is checked the same way through its store (``storage``),
except its key index, which only a local copy can open: there it must exist.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import crc32c
from tqdm import tqdm

from ..errors import CorruptRecordError, DatasetError, StorageError
from ..format import keyindex
from ..format import manifest as mf
from ..format.index_files import DATASET_INDEX_NAME, dataset_idx_bytes, parse_idx
from ..storage.datasets import manifest_of
from ..storage.store import Store, open_store
from .opening import shard_reader


@dataclass(frozen=True)
class Problem:
    message: str  # one line naming the file or record

    def __str__(self) -> str:
        return self.message


def _small_file_problem(store: Store, info) -> str | None:
    if not store.exists(info.name):
        return f"{info.name}: missing file"
    data = store.read(info.name)
    size, crc = len(data), crc32c.crc32c(data)
    if size != info.bytes:
        return f"{info.name}: {size} bytes, the manifest says {info.bytes} (truncated or replaced)"
    if crc != info.crc32c:
        return f"{info.name}: CRC32C mismatch"
    return None


def verify_shard(dataset_dir: str, shard: mf.ShardFiles, progress: tqdm | None = None) -> Problem | None:
    """The first problem found in one shard, or None when it is intact."""
    store = open_store(dataset_dir)
    for info in (shard.idx, shard.rpi):
        problem = _small_file_problem(store, info)
        if problem:
            return Problem(problem)
    if not store.exists(shard.rec.name):
        return Problem(f"{shard.rec.name}: missing file")
    size = store.size(shard.rec.name)
    if size != shard.rec.bytes:
        return Problem(f"{shard.rec.name}: {size} bytes, the manifest says {shard.rec.bytes} (truncated or replaced)")
    reader = shard_reader(dataset_dir, shard)
    try:
        if len(reader) != shard.records:
            return Problem(f"{shard.rpi.name}: {len(reader)} records, the manifest says {shard.records}")
        _, idx_offsets = parse_idx(bytes(store.read(shard.idx.name)).decode("ascii"))
        if len(idx_offsets) != len(reader) or (idx_offsets != reader.rows["offset"]).any():
            return Problem(f"{shard.idx.name}: offsets disagree with {shard.rpi.name}")
    except (DatasetError, ValueError) as error:  # UnicodeDecodeError too: a ValueError
        return Problem(str(error))
    crc = 0

    def on_chunk(chunk: bytes) -> None:
        nonlocal crc
        crc = crc32c.crc32c(chunk, crc)
        if progress is not None:
            progress.update(len(chunk))

    try:
        for _ in reader.iter_records(verify=True, on_chunk=on_chunk):
            pass
    except CorruptRecordError as error:
        return Problem(f"{shard.rec.name}: record {error.record}: {error.problem}")
    if crc != shard.rec.crc32c:
        return Problem(f"{shard.rec.name}: CRC32C of the file mismatch (bytes between records changed)")
    return None


def verify_key_index(dataset_dir: str, manifest: mf.Manifest) -> Problem | None:
    """The key index's problem, if the dataset should have one (see ``keyindex.expected``) or has one.

    ``recpack get`` needs it to open read-only, and it maps each distinct
    source key to one record: a key listed twice keeps one entry, so a sound
    index holds at most one entry per record, and at least one when there are
    records.  Every entry must point where a record of this dataset starts,
    in shards the index saw with this dataset's bytes (``key_entry_problem``).
    """
    name = mf.KEY_INDEX_NAME
    store = open_store(dataset_dir)
    if store.location.is_remote:  # LMDB opens local files only: that it was uploaded is what can be checked
        present = store.exists(f"{name}/data.mdb")
        return Problem(f"{name}: missing (recpack get needs this key index)") if keyindex.expected(manifest) \
            and not present else None
    if not os.path.exists(os.path.join(dataset_dir, name)):
        return Problem(f"{name}: missing (recpack get needs this key index)") if keyindex.expected(manifest) else None
    try:
        seen = keyindex.shard_files(dataset_dir)
        problem = next(filter(None, (_stale_shard(manifest, shard, files) for shard, files in sorted(seen.items()))),
                       None)
        rows = _RowsOf(dataset_dir, manifest)
        entries = 0
        for key, shard, record, offset in keyindex.entries(dataset_dir):
            problem = problem or key_entry_problem(manifest, key, shard, record, offset, rows)
            if problem:
                break
            entries += 1
    except DatasetError as error:
        return Problem(str(error))
    if problem:
        return Problem(f"{name}: stale: {problem}")
    records = manifest.num_records
    if entries > records or (records and not entries):
        return Problem(f"{name}: {entries} keys for {records} records (not this dataset's key index)")
    return None


class _RowsOf:
    """Each shard's record index, loaded once when first asked for."""

    def __init__(self, dataset_dir: str, manifest: mf.Manifest):
        self.dataset_dir, self.manifest, self.loaded = dataset_dir, manifest, {}

    def __call__(self, shard: int):
        if shard not in self.loaded:
            self.loaded[shard] = shard_reader(self.dataset_dir, self.manifest.shards[shard]).rows
        return self.loaded[shard]


def _stale_shard(manifest: mf.Manifest, shard: int, files: tuple[int, int]) -> str | None:
    """Why the index's record of a shard's .rec (bytes, CRC32C) is not this dataset's, or None."""
    if shard >= manifest.num_shards:
        return f"it names shard {shard}, and the dataset has {manifest.num_shards}"
    rec = manifest.shards[shard].rec
    if files != (rec.bytes, rec.crc32c):
        return (f"it was written with {manifest.shards[shard].stem} of {files[0]} bytes (CRC32C {files[1]:08x}), "
                f"the manifest's has {rec.bytes} (CRC32C {rec.crc32c:08x})")
    return None


def key_entry_problem(manifest: mf.Manifest, key: str, shard: int, record: int, offset: int, rows) -> str | None:
    """Why a key's entry cannot be this dataset's, or None: it points past the shards or records, or at a
    byte where its record does not start.  ``rows(shard)`` gives a shard's record index."""
    if shard >= manifest.num_shards or record >= manifest.shards[shard].records:
        return f"key {key!r} points at shard {shard} record {record}, which the dataset does not hold"
    start = int(rows(shard)[record]["offset"])
    if start != offset:
        return (f"key {key!r} points at byte {offset} of {manifest.shards[shard].stem}, "
                f"where its record {record} starts at byte {start}")
    return None


def keyed_payload(dataset_dir: str, manifest: mf.Manifest, key: str, found: tuple[int, int, int]):
    """The record a key index entry points at (``keyindex.lookup``), refused if the index is stale."""
    shard, record, offset = found
    seen = keyindex.shard_files(dataset_dir).get(shard)
    problem = (_stale_shard(manifest, shard, seen) if seen is not None else None) or key_entry_problem(
        manifest, key, shard, record, offset, lambda number: shard_reader(dataset_dir, manifest.shards[number]).rows)
    if problem:
        raise DatasetError(f"{os.path.join(dataset_dir, mf.KEY_INDEX_NAME)}: stale: {problem}; "
                           "recpack verify checks every entry")
    return shard_reader(dataset_dir, manifest.shards[shard]).read_payload(record)


def verify_dataset_index(dataset_dir: str, manifest: mf.Manifest) -> Problem | None:
    """The problem of ``dataset.idx`` (DALI's index over all shards), if there is one: rebuilt from the shards, compared.

    A dataset packed before recpack wrote it has none, which is no problem.
    """
    store = open_store(dataset_dir)
    if not store.exists(DATASET_INDEX_NAME):
        return None
    try:
        offsets = [shard_reader(dataset_dir, shard).rows["offset"] for shard in manifest.shards]
    except (DatasetError, StorageError):
        return None  # the shard's own check names its record index
    expected = dataset_idx_bytes(offsets, [shard.rec.bytes for shard in manifest.shards])
    if bytes(store.read(DATASET_INDEX_NAME)) != expected:
        return Problem(f"{DATASET_INDEX_NAME}: disagrees with the shards' offsets (damaged or stale: "
                       "it must list every record of every shard, in manifest order)")
    return None


def verify_dataset(dataset_dir: str, show_progress: bool = True) -> Iterator[Problem]:
    """Every problem in the dataset: no records at all, each damaged shard, the dataset index, the key index."""
    manifest = manifest_of(open_store(dataset_dir))
    if manifest.num_records == 0:  # what RecordDataset refuses; no recpack command writes one now
        yield Problem(f"{mf.MANIFEST_NAME}: the dataset holds no records")
    total = sum(shard.rec.bytes for shard in manifest.shards)
    with tqdm(total=total, unit="B", unit_scale=True, desc="verify", disable=not show_progress) as bar:
        for shard in manifest.shards:
            before = bar.n
            problem = verify_shard(dataset_dir, shard, bar)
            bar.update(before + shard.rec.bytes - bar.n)
            if problem is not None:
                yield problem
    for problem in (verify_dataset_index(dataset_dir, manifest), verify_key_index(dataset_dir, manifest)):
        if problem is not None:
            yield problem
