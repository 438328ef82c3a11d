"""Open a dataset of any origin: a recpack folder, an MXNet ``.rec`` file, or a folder of them;
or a recpack dataset at a URL (``storage``), read through ``remote_reader``.

A folder with ``recpack.json`` is opened through it.  Otherwise its ``.rec`` files are
scanned now (one sequential read each, ``format.recscan``) and their index is kept in
memory only: nothing is written beside data that may be read-only or shared.
"""

from __future__ import annotations

import os
import warnings

from tqdm import tqdm

from ..errors import DatasetError
from ..format import manifest as mf
from ..format.index_files import DATASET_INDEX_NAME, REC_SUFFIX
from ..format.recscan import SCAN_PROGRESS_FROM_BYTES, scan_with_idx, shard_stems
from ..storage.datasets import manifest_of
from ..storage.store import StorageOptions, open_store
from ..storage.urls import is_url, location
from .remote_reader import RemoteShardReader, remote_readers
from .shard_reader import ShardReader

_IN_MEMORY = mf.FileInfo("", 0, 0)  # the idx/rpi entry of a shard scanned on open: no file exists


def shard_reader(dataset_dir: str, shard: mf.ShardFiles) -> ShardReader:
    """The reader of one shard a manifest lists (the one place that joins its names to the folder or URL)."""
    if is_url(dataset_dir):
        return RemoteShardReader(open_store(dataset_dir), shard)
    join = os.path.join
    return ShardReader(join(dataset_dir, shard.rec.name), join(dataset_dir, shard.rpi.name), shard.stem,
                       records=shard.records)


def _foreign_recs(folder: str) -> list[str]:
    """A manifest-less folder's .rec files, or [] when it holds what an interrupted recpack pack leaves."""
    names = os.listdir(folder)
    if mf.pack_was_interrupted(names):
        return []
    return sorted(os.path.join(folder, name) for name in names if name.endswith(REC_SUFFIX))


def _scan_in_memory(path: str, rec_paths: list[str], skip_damage: bool) -> tuple[mf.Manifest, list[ShardReader]]:
    """Index .rec files by scanning them; damage is an error, or (``skip_damage``) a warning per stretch passed over.

    What was skipped is also kept in the manifest's ``created["skipped"]``, one line per stretch.
    """
    shards, readers, width, skipped = [], [], 1, []
    for rec_path, stem in zip(rec_paths, shard_stems(rec_paths)):
        size = os.path.getsize(rec_path)
        with tqdm(total=size, unit="B", unit_scale=True, desc=f"scan {os.path.basename(rec_path)}",
                  disable=size < SCAN_PROGRESS_FROM_BYTES) as bar:
            scan, _ = scan_with_idx(rec_path, bar.update, skip_damage=skip_damage)
        for damage in scan.damage:
            skipped.append(f"{rec_path}: {damage}")
            warnings.warn(f"recpack: skipped damage in {skipped[-1]}", stacklevel=3)
        rec_info = mf.FileInfo(rec_path, scan.bytes, scan.crc32c)
        shards.append(mf.ShardFiles(stem, len(scan.rows), rec_info, _IN_MEMORY, _IN_MEMORY))
        readers.append(ShardReader(rec_path, None, rec_path, index_rows=scan.rows))
        width = max(width, scan.label_width)
    created = {"source": path, "scanned": True, **({"skipped": skipped} if skipped else {})}
    return mf.Manifest(tuple(shards), width, created=created), readers


def dali_inputs(dataset_dir: str) -> tuple[list[str], str]:
    """(``.rec`` paths in shard order, ``dataset.idx``): what DALI's ``readers.mxnet`` takes as ``path`` and ``index_path``.

    Empty shards are left out: they add nothing to the offsets, and DALI
    would place the next shard's records in them.
    """
    manifest = mf.load(dataset_dir)
    index = os.path.join(dataset_dir, DATASET_INDEX_NAME)
    if not os.path.exists(index):
        raise DatasetError(f"{dataset_dir}: no {DATASET_INDEX_NAME} (packed by an older recpack: pack or import again)")
    return [os.path.join(dataset_dir, shard.rec.name) for shard in manifest.shards if shard.rec.bytes], index


def open_shards(path: str, skip_damage: bool = False,
                storage: StorageOptions | None = None) -> tuple[mf.Manifest, list[ShardReader]]:
    """The manifest and one reader per shard; a clear error when ``path`` is neither kind of dataset.

    ``skip_damage``: a damaged .rec without a recpack index is read up to the damage and
    on from the next record found after it (``recscan``), with a warning, instead of refused.
    A URL must hold a recpack dataset (its manifest); ``storage`` says how it is read.
    """
    where = location(path)
    if where.is_remote:
        store = open_store(where, storage)
        manifest = manifest_of(store)
        return manifest, remote_readers(store, manifest.shards)
    path = where.root
    if os.path.isfile(path):
        rec_paths = [path]
    elif os.path.isdir(path) and not os.path.exists(os.path.join(path, mf.MANIFEST_NAME)):
        rec_paths = _foreign_recs(path)
    else:
        rec_paths = []
    if not rec_paths:
        manifest = mf.load(path)  # a recpack dataset, or its error saying why it is not one
        return manifest, [shard_reader(path, shard) for shard in manifest.shards]
    return _scan_in_memory(path, rec_paths, skip_damage)
