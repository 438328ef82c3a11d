"""``recpack import``: make a dataset over MXNet .rec files that stay where they are, untouched.

Many public datasets ship only as ``.rec`` (+ ``.idx``), and MXNet itself no longer
imports beside numpy >= 1.24.  An import scans each file once (``format.recscan``) and
writes down what a scan on open would otherwise rebuild every time: a ``.rpi`` per file
and a manifest whose entries point at the originals.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from tqdm import tqdm

from .._version import __version__
from ..errors import DatasetError
from ..format import manifest as mf
from ..format.index_files import IDX_SUFFIX, REC_SUFFIX, RECORD_INDEX_SUFFIX, idx_bytes, rpi_bytes
from ..format.recscan import SCAN_PROGRESS_FROM_BYTES, scan_with_idx, shard_stems
from .writer import write_dataset_index


def _rec_files(paths: list[str]) -> list[str]:
    """The .rec files named, a folder standing for the .rec files in it (sorted)."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            found += sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(REC_SUFFIX))
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise DatasetError(f"{path}: no such file")
    if not found:
        raise DatasetError(f"{', '.join(paths)}: no .rec files")
    return found


def _refuse_empty(rec_paths: list[str]) -> None:
    """Refuse an import that would hold no records, before anything is written.

    RecordDataset refuses such a dataset, so info and verify must never see
    one.  A .rec of 0 bytes is the only kind that scans to no records (any
    byte starts a part, and every part belongs to a record or fails the
    scan), so the sizes tell without a scan.  An empty .rec beside others is
    kept: an empty shard, as a pack can make.
    """
    if all(os.path.getsize(path) == 0 for path in rec_paths):
        holds = "holds" if len(rec_paths) == 1 else "each hold"
        raise DatasetError(f"{', '.join(rec_paths)}: {holds} no records (0 bytes); nothing to import")


def import_rec(rec_paths: list[str], out_dir: str, show_progress: bool = True) -> mf.Manifest:
    """Make OUT a recpack dataset over existing .rec files, which stay where they are, untouched.

    OUT gets a ``.rpi`` per .rec and the manifest (written last), whose
    entries name the originals by paths relative to OUT, with their sizes and
    CRC32C.  A .rec without an .idx gets one generated in OUT (keys 0..n-1),
    so every shard keeps its three files and MXNet can read the pair too.
    """
    rec_paths = _rec_files(list(rec_paths))
    _refuse_empty(rec_paths)
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(os.path.join(out_dir, mf.MANIFEST_NAME)):
        raise DatasetError(f"{out_dir}: already holds a dataset ({mf.MANIFEST_NAME}); choose another folder")
    here = os.path.realpath(out_dir)
    relative = lambda p: os.path.relpath(os.path.realpath(p), here)  # noqa: E731  (realpath: '..' through symlinks)
    shards, width = [], 1
    for rec_path, stem in zip(rec_paths, shard_stems(rec_paths)):
        size = os.path.getsize(rec_path)
        with tqdm(total=size, unit="B", unit_scale=True, desc=f"scan {os.path.basename(rec_path)}",
                  disable=not show_progress or size < SCAN_PROGRESS_FROM_BYTES) as bar:
            scan, idx = scan_with_idx(rec_path, bar.update)
        # the .rpi first: from then on, until the manifest, readers see an interrupted recpack write
        rpi_info = mf.write_file(os.path.join(out_dir, stem + RECORD_INDEX_SUFFIX), rpi_bytes(scan.rows))
        if idx is not None:
            idx_info = mf.FileInfo(relative(idx), *mf.file_crc32c(idx))
        else:
            idx_info = mf.write_file(os.path.join(out_dir, stem + IDX_SUFFIX), idx_bytes(scan.rows["offset"]))
        rec_info = mf.FileInfo(relative(rec_path), scan.bytes, scan.crc32c)
        shards.append(mf.ShardFiles(stem, len(scan.rows), rec_info, idx_info, rpi_info))
        width = max(width, scan.label_width)
    created = {
        "source": [os.path.realpath(p) for p in rec_paths],
        "imported": True,
        "recpack_version": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    manifest = mf.Manifest(tuple(shards), width, created=created)
    write_dataset_index(out_dir, shards)  # DALI's one index over all the .rec files
    mf.save(out_dir, manifest)
    return manifest
