"""Adopt RecordIO files that recpack did not write (MXNet's im2rec, ``MXIndexedRecordIO``, ...).

Many public datasets ship only as ``.rec`` (+ ``.idx``), and MXNet itself no
longer imports beside numpy >= 1.24.  The framing is the one in ``format``,
so all a foreign file lacks is recpack's per-record index (``.rpi``) and a
manifest.  ``scan_rec`` rebuilds the index in one sequential pass (CRC32C of
every payload included, so reads are still verified); ``open_shards`` does
that in memory when ``RecordDataset`` is pointed at a ``.rec`` or at a folder
of them; ``import_rec`` writes it down once, beside a manifest that points at
the original files, which are never copied or rewritten.

An ``.idx`` beside a ``.rec`` is only cross-checked: it must list every
record, in file order (as MXNet's writers do).  recpack reads records in file
order, so an index that disagrees means the pair does not belong together.
"""

from __future__ import annotations

import io
import os
from array import array
from dataclasses import dataclass
from datetime import datetime, timezone

import crc32c
import numpy as np
from tqdm import tqdm

from . import __version__
from . import format as fmt
from . import manifest as mf
from .errors import DatasetError
from .reader import ShardReader
from .writer import FileInfo, ShardFiles, file_crc32c

SCAN_CHUNK_BYTES = 4 << 20  # stays in CPU cache between the file's CRC and the records': ~2.5x faster than 64 MB
PROGRESS_FROM_BYTES = 1 << 30  # scans of smaller files are quick enough to stay silent
_IN_MEMORY = FileInfo("", 0, 0)  # the idx/rpi entry of a shard scanned on open: no file exists


@dataclass(frozen=True)
class Scan:
    """What one pass over a .rec finds."""

    rows: np.ndarray  # RECORD_INDEX_DTYPE, in file order
    bytes: int  # of the whole file
    crc32c: int  # of the whole file
    label_width: int  # the most labels an IRHeader announces (flag 0 counts as 1)


class _Chunks:
    """A window onto the file, refilled with large reads; keeps the whole-file CRC as it goes."""

    def __init__(self, handle, chunk_bytes: int, bar: tqdm):
        self.handle, self.bar = handle, bar
        self.buffer = bytearray(chunk_bytes)
        self.view = memoryview(self.buffer)
        self.base = self.pos = self.filled = 0  # file offset of buffer[0]; parse position; valid bytes
        self.crc = 0

    def ensure(self, need: int) -> bool:
        """Make buffer[pos:pos+need] valid if the file has that many bytes left."""
        if self.filled - self.pos >= need:
            return True
        rest = self.filled - self.pos
        if need > len(self.buffer):
            self.view.release()
            self.buffer = bytearray(self.buffer[self.pos : self.filled]) + bytearray(need - rest)
            self.view = memoryview(self.buffer)
        else:
            self.view[:rest] = self.view[self.pos : self.filled]
        self.base, self.pos, self.filled = self.base + self.pos, 0, rest
        while self.filled < need:
            count = self.handle.readinto(self.view[self.filled :])
            if not count:
                return False
            self.crc = crc32c.crc32c(self.view[self.filled : self.filled + count], self.crc)
            self.filled += count
            self.bar.update(count)
        return True


def scan_rec(path: str, chunk_bytes: int = SCAN_CHUNK_BYTES, progress: bool | None = None) -> Scan:
    """Walk a .rec's framing from start to end and index every record.

    Raises DatasetError naming the file and the byte offset of the first
    framing problem (bad magic, truncation, a broken multi-part record).
    ``progress=None`` shows a bar for files of 1 GiB and more.
    """
    size = os.path.getsize(path)
    offsets, lengths, crcs = array("Q"), array("I"), array("I")
    width = 1
    start = length = crc = flag = -1  # the record being assembled; start -1: none

    def fail(at: int, problem: str) -> DatasetError:
        return DatasetError(f"{path}: byte {at}: {problem}")

    show = size >= PROGRESS_FROM_BYTES if progress is None else progress
    with open(path, "rb", buffering=0) as handle, tqdm(
        total=size, unit="B", unit_scale=True, desc=f"scan {os.path.basename(path)}", disable=not show
    ) as bar:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        chunks = _Chunks(handle, chunk_bytes, bar)
        while True:
            if not chunks.ensure(fmt.PART_HEADER.size):
                if chunks.filled == chunks.pos and start < 0:
                    break
                at = chunks.base + chunks.pos
                raise fail(at, "truncated: the file ends inside a part header" if chunks.filled > chunks.pos
                           else f"truncated: the record that starts at byte {start} has no last part")
            at = chunks.base + chunks.pos
            magic, lrec = fmt.PART_HEADER.unpack_from(chunks.buffer, chunks.pos)
            if magic != fmt.MAGIC:
                raise fail(at, f"bad magic 0x{magic:08x} (not RecordIO, or a damaged part)")
            cflag, part = fmt.decode_lrec(lrec)
            stored = fmt.PART_HEADER.size + part + fmt.padding(part)
            if not chunks.ensure(stored):
                raise fail(at, f"truncated: the part announces {part} bytes but the file ends at byte {size}")
            data = chunks.view[chunks.pos + fmt.PART_HEADER.size : chunks.pos + fmt.PART_HEADER.size + part]
            if cflag in (fmt.CFLAG_WHOLE, fmt.CFLAG_FIRST):
                if start >= 0:
                    raise fail(at, f"the record that starts at byte {start} has no last part")
                start, length, crc = at, part, crc32c.crc32c(data)
                flag = fmt.IR_HEADER.unpack_from(data)[0] if part >= fmt.IR_HEADER.size else 0
            elif cflag in (fmt.CFLAG_MIDDLE, fmt.CFLAG_LAST):
                if start < 0:
                    raise fail(at, f"continuation part (flag {cflag}) without a first part")
                length += 4 + part
                crc = crc32c.crc32c(data, crc32c.crc32c(fmt.MAGIC_BYTES, crc))
            else:
                raise fail(at, f"invalid continuation flag {cflag}")
            del data  # drop the view: the next ensure() may replace the buffer
            chunks.pos += stored
            if cflag in (fmt.CFLAG_WHOLE, fmt.CFLAG_LAST):
                offsets.append(start)
                lengths.append(length)
                crcs.append(crc)
                if fmt.IR_HEADER.size + 4 * flag <= length:  # else not an IRHeader: decoding will say so
                    width = max(width, flag)
                start = -1
        chunks.view.release()
    rows = np.zeros(len(offsets), dtype=fmt.RECORD_INDEX_DTYPE)
    rows["offset"], rows["length"], rows["crc32c"] = offsets, lengths, crcs
    return Scan(rows, size, chunks.crc, width)


def check_idx(idx_path: str, rec_path: str, rows: np.ndarray) -> None:
    """Raise DatasetError unless the .idx lists every record of the scan, in file order, under distinct keys."""
    try:
        with open(idx_path, encoding="ascii") as handle:
            keys, offsets = fmt.parse_idx(handle.read())
    except (OSError, ValueError) as error:
        raise DatasetError(f"{idx_path}: unreadable ({error})") from None
    if len(np.unique(keys)) != len(keys):
        raise DatasetError(f"{idx_path}: keys repeat")
    if len(offsets) != len(rows):
        raise DatasetError(f"{idx_path}: lists {len(offsets)} records, {rec_path} holds {len(rows)}")
    wrong = np.flatnonzero(offsets != rows["offset"])
    if len(wrong):
        entry = int(wrong[0])
        raise DatasetError(
            f"{idx_path}: entry {entry + 1} (key {keys[entry]}) says byte {offsets[entry]}, "
            f"but record {entry} of {rec_path} starts at byte {rows['offset'][entry]}"
        )


def _idx_beside(rec_path: str) -> str | None:
    idx = os.path.splitext(rec_path)[0] + fmt.IDX_SUFFIX
    return idx if os.path.isfile(idx) else None


def _rec_files(paths: list[str]) -> list[str]:
    """The .rec files named, a folder standing for the .rec files in it (sorted)."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            found += sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(fmt.REC_SUFFIX))
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise DatasetError(f"{path}: no such file")
    if not found:
        raise DatasetError(f"{', '.join(paths)}: no .rec files")
    return found


def _stems(rec_paths: list[str]) -> list[str]:
    """Shard names from the file names, made distinct (``train``, ``train-2``) where folders repeat one."""
    stems: list[str] = []
    for path in rec_paths:
        base = stem = os.path.splitext(os.path.basename(path))[0]
        number = 1
        while stem in stems:
            number += 1
            stem = f"{base}-{number}"
        stems.append(stem)
    return stems


def _scan_shard(rec_path: str, progress: bool | None) -> tuple[Scan, str | None]:
    scan = scan_rec(rec_path, progress=progress)
    idx = _idx_beside(rec_path)
    if idx is not None:
        check_idx(idx, rec_path, scan.rows)
    return scan, idx


def _foreign_recs(folder: str) -> list[str]:
    """A manifest-less folder's .rec files, or [] when it looks like an interrupted recpack pack."""
    names = os.listdir(folder)
    if mf.WORK_DIR_NAME in names or any(n.endswith((".rec.tmp", fmt.RECORD_INDEX_SUFFIX)) for n in names):
        return []
    return sorted(os.path.join(folder, n) for n in names if n.endswith(fmt.REC_SUFFIX))


def open_shards(path: str) -> tuple[mf.Manifest, list[ShardReader]]:
    """The manifest and one reader per shard of a recpack folder, a .rec file, or a folder of .rec files.

    A folder with ``recpack.json`` is opened through it.  Otherwise the .rec
    files are scanned now (one sequential read each) and their index is kept
    in memory only: nothing is written beside data that may be read-only or shared.
    """
    if os.path.isfile(path):
        rec_paths = [path]
    elif os.path.isdir(path) and not os.path.exists(os.path.join(path, mf.MANIFEST_NAME)):
        rec_paths = _foreign_recs(path)
    else:
        rec_paths = []
    if not rec_paths:
        manifest = mf.load(path)  # a recpack dataset, or its error saying why it is not one
        join = os.path.join
        return manifest, [ShardReader(join(path, s.rec.name), join(path, s.rpi.name), s.stem) for s in manifest.shards]
    shards, readers, width = [], [], 1
    for rec_path, stem in zip(rec_paths, _stems(rec_paths)):
        scan, _ = _scan_shard(rec_path, None)
        shards.append(ShardFiles(stem, len(scan.rows), FileInfo(rec_path, scan.bytes, scan.crc32c), _IN_MEMORY, _IN_MEMORY))
        readers.append(ShardReader(rec_path, None, rec_path, index_rows=scan.rows))
        width = max(width, scan.label_width)
    return mf.Manifest(tuple(shards), width, created={"source": path, "scanned": True}), readers


def _write_small(path: str, data: bytes) -> FileInfo:
    with open(path, "wb") as handle:
        handle.write(data)
    return FileInfo(os.path.basename(path), len(data), crc32c.crc32c(data))


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
    for rec_path, stem in zip(rec_paths, _stems(rec_paths)):
        scan, idx = _scan_shard(rec_path, None if show_progress else False)
        if idx is not None:
            idx_info = FileInfo(relative(idx), *file_crc32c(idx))
        else:
            lines = "".join(fmt.format_idx_line(k, o) for k, o in enumerate(scan.rows["offset"].tolist()))
            idx_info = _write_small(os.path.join(out_dir, stem + fmt.IDX_SUFFIX), lines.encode("ascii"))
        buffer = io.BytesIO()
        np.save(buffer, scan.rows, allow_pickle=False)
        rpi_info = _write_small(os.path.join(out_dir, stem + fmt.RECORD_INDEX_SUFFIX), buffer.getvalue())
        shards.append(ShardFiles(stem, len(scan.rows), FileInfo(relative(rec_path), scan.bytes, scan.crc32c), idx_info, rpi_info))
        width = max(width, scan.label_width)
    created = {
        "source": [os.path.realpath(p) for p in rec_paths],
        "imported": True,
        "recpack_version": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    manifest = mf.Manifest(tuple(shards), width, created=created)
    mf.save(out_dir, manifest)
    return manifest
