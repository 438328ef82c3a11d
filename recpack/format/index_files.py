"""A shard's two index files, ``.idx`` (MXNet's text index) and ``.rpi`` (recpack's), as bytes and back;
and the dataset's ``dataset.idx``, one MXNet index over all shards at once (for DALI).

Layouts: ``recpack.format``.  Writing them to disk is the writer's and the importer's business;
both take their bytes from here.
"""

from __future__ import annotations

import io

import numpy as np

from ..errors import DatasetError
from .framing import PART_HEADER
from .schema import RECORD_INDEX_DTYPE

REC_SUFFIX, IDX_SUFFIX, RECORD_INDEX_SUFFIX = ".rec", ".idx", ".rpi"
SHARD_SUFFIXES = (REC_SUFFIX, IDX_SUFFIX, RECORD_INDEX_SUFFIX)
DATASET_INDEX_NAME = "dataset.idx"


def idx_bytes(offsets: np.ndarray) -> bytes:
    """An ``.idx`` for records at these offsets, keyed by their position in the shard."""
    return "".join(f"{key}\t{offset}\n" for key, offset in enumerate(np.asarray(offsets).tolist())).encode("ascii")


def dataset_idx_bytes(shard_offsets: list[np.ndarray], shard_bytes: list[int]) -> bytes:
    """``dataset.idx``: every record of every shard, keyed 0..N-1 in shard order, at its offset in the shards' concatenation.

    A shard's offsets are moved by the sizes of the ``.rec`` files before it,
    which is how DALI's ``readers.mxnet`` reads many files through one index.
    """
    starts = np.cumsum([0, *shard_bytes[:-1]], dtype=np.uint64)
    moved = [np.asarray(offsets, np.uint64) + start for offsets, start in zip(shard_offsets, starts)]
    return idx_bytes(np.concatenate(moved) if moved else np.zeros(0, np.uint64))


def parse_idx(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Keys and offsets of an MXNet .idx file, in file order; ValueError naming the bad line."""
    keys, offsets = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            key, offset = (int(field) for field in fields) if len(fields) == 2 else (None, None)
        except ValueError:
            key = offset = None
        if key is None or not (-(1 << 63) <= key < 1 << 63 and 0 <= offset < 1 << 63):
            raise ValueError(f"line {number}: expected 'key<TAB>offset' (whole numbers, the offset at least 0), "
                             f"got {line[:80]!r}")
        keys.append(key)
        offsets.append(offset)
    return np.asarray(keys, dtype=np.int64), np.asarray(offsets, dtype=np.uint64)


def rpi_bytes(rows: np.ndarray) -> bytes:
    """An ``.rpi``: the rows as a ``.npy`` file."""
    if rows.dtype != RECORD_INDEX_DTYPE:
        raise ValueError(f"record index rows have dtype {rows.dtype}, expected {RECORD_INDEX_DTYPE}")
    buffer = io.BytesIO()
    np.save(buffer, rows, allow_pickle=False)
    return buffer.getvalue()


def load_rpi(path: str) -> np.ndarray:
    """An ``.rpi``'s rows, memory-mapped; DatasetError naming the file when it is not one."""
    try:
        rows = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as error:  # a damaged header fails np.load in many ways: EOF, syntax, token, value errors
        raise DatasetError(f"{path}: unreadable record index ({type(error).__name__}: {error})") from None
    if rows.dtype != RECORD_INDEX_DTYPE or rows.ndim != 1:
        raise DatasetError(f"{path}: record index has dtype {rows.dtype}, expected {RECORD_INDEX_DTYPE}")
    bad = misplaced_rows(rows)
    if len(bad):
        raise DatasetError(f"{path}: record {int(bad[0])} of the record index overlaps the next (damaged index)")
    return rows


def misplaced_rows(rows: np.ndarray) -> np.ndarray:
    """Rows whose record would overlap the next one's: records lie in file order, each at least its
    part header and payload long.  Reads bound by a damaged index could otherwise run anywhere."""
    offsets = rows["offset"].astype(np.uint64)
    room = offsets[:-1] + rows["length"][:-1].astype(np.uint64) + np.uint64(PART_HEADER.size)
    return np.flatnonzero(offsets[1:] < room)
