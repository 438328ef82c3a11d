"""The plan of a pack, written once into OUT so that tasks on any machine can write shards from it.

Why a file: a cluster's tasks must agree on which image goes into which shard
without each of them reading and shuffling a 14.2M-line list.  ``write_plan``
shuffles the source once and stores its items *in shuffled order* as flat
arrays, so shard ``i``'s items are one contiguous slice of each array, which
``StoredPlan.task(i)`` reads through a memory map: a task touches only its own
shard's pages, and its memory does not grow with the list.

The file, ``OUT/.recpack-pack/plan.bin`` (little-endian throughout)::

    8 bytes   magic  b"RPKPLAN1"
    8 bytes   length of the JSON header (uint64)
    header    JSON: fingerprint, shards, seed, prepare options, strict, the source's
              description, root and classes, and each array's dtype, offset and count
    arrays    each at a 64-byte aligned offset, in positions 0..n-1 of the shuffled list:
              lines (int64)        the item's line in the list (the record's id)
              key_ends (uint64)    n+1 offsets into ``keys``: key p is keys[key_ends[p]:key_ends[p+1]]
              keys (uint8)         the keys (paths as written) in UTF-8, one after another
              label_codes (uint32) the item's entry in the label table
              label_ends (uint64), label_values (float64): the distinct label tuples
              mask_ends, masks     as key_ends and keys; present only when the list has masks

It is written under a unique temporary name and renamed into place, so a task
never sees half a plan.  Nothing here decides a byte of a shard: ``plan.py``
does (``shuffled_order``, ``shard_spans``); this only stores what it decided.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
from dataclasses import asdict, dataclass
from typing import BinaryIO

import numpy as np

from ..errors import PackError
from ..format.manifest import MANIFEST_NAME
from . import resume
from .plan import SHUFFLE, PackOptions, ShardTask, fingerprint, shard_spans, shuffled_order, split_evenly
from .prepare import PrepareOptions
from .sources import Source, SourceItem, _resolve

PLAN_NAME = "plan.bin"
_MAGIC = b"RPKPLAN1"
_HEAD = struct.Struct("<8sQ")
_ALIGN = 64
_CHUNK = 1 << 16  # items gathered at a time while writing


def plan_path(out_dir: str) -> str:
    return os.path.join(out_dir, resume.WORK_DIR, PLAN_NAME)


def unique_temporary(path: str) -> str:
    """A temporary name beside ``path`` that no other attempt uses (two attempts may run at once)."""
    return f"{path}.{os.getpid():x}-{secrets.token_hex(4)}.tmp"


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN


def _layout(source: Source) -> dict[str, tuple[str, int]]:
    """Each array's (dtype, count), in file order."""
    count = len(source)
    distinct = source.labels.distinct
    layout = {
        "lines": ("<i8", count),
        "key_ends": ("<u8", count + 1),
        "keys": ("|u1", len(source.keys.blob)),
        "label_codes": ("<u4", count),
        "label_ends": ("<u8", len(distinct) + 1),
        "label_values": ("<f8", sum(len(labels) for labels in distinct)),
    }
    if source.masks:
        layout["mask_ends"] = ("<u8", count + 1)
        layout["masks"] = ("|u1", sum(len(mask.encode("utf-8")) for mask in source.masks.values()))
    return layout


def write_plan(source: Source, out_dir: str, options: PackOptions, print_hash: str) -> str:
    """Store ``source``'s shuffled items and the options into OUT's work folder; return the file's path.

    The caller holds OUT's lock (``plan``).  Memory: the shuffled order (8 bytes
    a line) beside the source; the arrays are gathered a slice at a time.
    """
    shard_spans(source, options)  # refuses more shards than images, before anything is written
    layout = _layout(source)
    header = {"fingerprint": print_hash, "count": len(source), "shards": options.shards, "seed": options.seed,
              "shuffle": SHUFFLE, "prepare": asdict(options.prepare), "strict": options.strict,
              "description": source.description, "root": source.root,
              "classes": list(source.classes) if source.classes is not None else None, "arrays": {}}
    text = json.dumps(header).encode()
    # offsets depend on the header's length, which holds them: pad the header to a fixed size
    reserve = _aligned(_HEAD.size + len(text) + 128 * len(layout) + 64) - _HEAD.size
    offset = _HEAD.size + reserve
    for name, (dtype, count) in layout.items():
        header["arrays"][name] = {"dtype": dtype, "offset": offset, "count": count}
        offset = _aligned(offset + count * np.dtype(dtype).itemsize)
    text = json.dumps(header).encode()
    if len(text) > reserve:
        raise AssertionError("plan header outgrew its reserve")
    path = plan_path(out_dir)
    temporary = unique_temporary(path)
    order = shuffled_order(len(source), options.seed)
    try:
        with open(temporary, "wb") as handle:
            handle.write(_HEAD.pack(_MAGIC, reserve) + text.ljust(reserve, b" "))
            for name, writer in _array_writers(source, order).items():
                entry = header["arrays"][name]
                handle.seek(entry["offset"])
                written = writer(handle)
                if written != entry["count"] * np.dtype(entry["dtype"]).itemsize:
                    raise AssertionError(f"plan array {name}: wrote {written} bytes")
            handle.truncate(offset)
            if options.fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def _array_writers(source: Source, order: np.ndarray) -> dict:
    """For each array, a function that writes it (items in shuffled order) and returns the bytes written."""
    lines = np.frombuffer(source.lines, dtype=np.int64)
    codes = np.frombuffer(source.labels.codes, dtype=np.uint32)
    chunks = lambda: (order[start : start + _CHUNK] for start in range(0, len(order), _CHUNK))  # noqa: E731

    def gathered(column: np.ndarray):
        return lambda handle: sum(handle.write(column[chunk].astype(column.dtype.newbyteorder("<")).tobytes())
                                  for chunk in chunks())

    writers = {
        "lines": gathered(lines),
        "key_ends": lambda handle: _write_ends(handle, _ends_of(source.keys.ends), chunks()),
        "keys": lambda handle: _write_texts(handle, source.keys.blob, _ends_of(source.keys.ends), chunks()),
        "label_codes": gathered(codes),
        "label_ends": lambda handle: handle.write(
            np.cumsum([0] + [len(labels) for labels in source.labels.distinct], dtype="<u8").tobytes()),
        "label_values": lambda handle: handle.write(
            np.array([v for labels in source.labels.distinct for v in labels], dtype="<f8").tobytes()),
    }
    if source.masks:
        blob = bytearray()
        ends = np.empty(len(source), dtype=np.uint64)
        for position in range(len(source)):
            blob += source.masks.get(position, "").encode("utf-8")
            ends[position] = len(blob)
        writers["mask_ends"] = lambda handle: _write_ends(handle, ends, chunks())
        writers["masks"] = lambda handle: _write_texts(handle, blob, ends, chunks())
    return writers


def _ends_of(ends) -> np.ndarray:
    return np.frombuffer(ends, dtype=np.uint64) if len(ends) else np.zeros(0, dtype=np.uint64)


def _starts(ends: np.ndarray, chunk: np.ndarray) -> np.ndarray:
    starts = np.zeros(len(chunk), dtype=np.uint64)
    inner = chunk > 0
    starts[inner] = ends[chunk[inner] - 1]
    return starts


def _write_ends(handle: BinaryIO, ends: np.ndarray, chunks) -> int:
    """The end offsets of the texts taken in shuffled order (the first entry: 0)."""
    written = handle.write(np.zeros(1, dtype="<u8").tobytes())
    total = np.uint64(0)
    for chunk in chunks:
        lengths = ends[chunk] - _starts(ends, chunk)
        out = np.cumsum(lengths, dtype=np.uint64) + total
        total = out[-1]
        written += handle.write(out.astype("<u8").tobytes())
    return written


def _write_texts(handle: BinaryIO, blob, ends: np.ndarray, chunks) -> int:
    """The texts' bytes, in shuffled order: each slice gathered with one numpy index."""
    data = np.frombuffer(blob, dtype=np.uint8) if len(blob) else np.zeros(0, dtype=np.uint8)
    written = 0
    for chunk in chunks:
        starts = _starts(ends, chunk).astype(np.int64)
        lengths = ends[chunk].astype(np.int64) - starts
        total = int(lengths.sum())
        if not total:
            continue
        firsts = np.cumsum(lengths) - lengths  # where each text starts in the output slice
        index = np.repeat(starts - firsts, lengths) + np.arange(total, dtype=np.int64)
        written += handle.write(data[index].tobytes())
    del data
    return written


@dataclass(frozen=True)
class StoredPlan:
    """A plan file opened read-only: the options it was made with, and each shard's items on demand."""

    path: str
    header: dict
    data: np.ndarray  # the whole file, memory-mapped

    @classmethod
    def open(cls, out_dir: str) -> "StoredPlan":
        path = plan_path(out_dir)
        try:
            with open(path, "rb") as handle:
                magic, length = _HEAD.unpack(handle.read(_HEAD.size))
                header = json.loads(handle.read(length)) if magic == _MAGIC else None
            data = np.memmap(path, dtype=np.uint8, mode="r")
        except FileNotFoundError:
            if os.path.exists(os.path.join(out_dir, MANIFEST_NAME)):
                raise PackError(f"{out_dir}: already holds a complete dataset (committed); its plan is gone with "
                                "the commit") from None
            raise PackError(f"{out_dir}: holds no pack plan; write one first (recpack plan LIST {out_dir} ...)") from None
        except (OSError, ValueError, struct.error) as error:
            raise PackError(f"{path}: unreadable pack plan ({error}); write it again with recpack plan") from None
        if header is None:
            raise PackError(f"{path}: not a recpack pack plan; write it again with recpack plan")
        end = max(entry["offset"] + entry["count"] * np.dtype(entry["dtype"]).itemsize
                  for entry in header["arrays"].values())
        if len(data) < end:
            raise PackError(f"{path}: truncated pack plan ({len(data)} bytes, needs {end}); write it again with recpack plan")
        return cls(path, header, data)

    def array(self, name: str) -> np.ndarray:
        entry = self.header["arrays"][name]
        dtype = np.dtype(entry["dtype"])
        start = entry["offset"]
        return self.data[start : start + entry["count"] * dtype.itemsize].view(dtype)

    @property
    def shards(self) -> int:
        return self.header["shards"]

    @property
    def fingerprint(self) -> str:
        return self.header["fingerprint"]

    @property
    def classes(self) -> tuple[str, ...] | None:
        classes = self.header["classes"]
        return tuple(classes) if classes is not None else None

    def options(self, fsync: bool = True) -> PackOptions:
        """The options the plan was made with (``fsync`` is the caller's: it decides no byte)."""
        return PackOptions(shards=self.shards, seed=self.header["seed"], prepare=PrepareOptions(**self.header["prepare"]),
                           strict=self.header["strict"], fsync=fsync)

    def span(self, index: int) -> tuple[int, int]:
        """Shard ``index``'s (start, stop) in the shuffled list: as ``plan.shard_spans`` cuts it."""
        return split_evenly(self.header["count"], self.shards)[index]

    def keys(self, start: int, stop: int) -> tuple[list[int], list[str]]:
        """The lines and keys at shuffled positions start..stop-1: all that a key index needs (no path resolved)."""
        return self.array("lines")[start:stop].tolist(), _texts(self.array("key_ends"), self.array("keys"), start, stop)

    def items(self, start: int, stop: int) -> list[SourceItem]:
        """The items at shuffled positions start..stop-1, resolved as ``Source.item`` resolves them."""
        root = self.header["root"]
        lines = self.array("lines")[start:stop].tolist()
        keys = _texts(self.array("key_ends"), self.array("keys"), start, stop)
        masks = (_texts(self.array("mask_ends"), self.array("masks"), start, stop) if "masks" in self.header["arrays"]
                 else [""] * (stop - start))
        label_ends, values = self.array("label_ends"), self.array("label_values")
        table: dict[int, tuple[float, ...]] = {}
        items = []
        for line, key, mask, code in zip(lines, keys, masks, self.array("label_codes")[start:stop].tolist()):
            labels = table.get(code)
            if labels is None:
                labels = table[code] = tuple(values[int(label_ends[code]) : int(label_ends[code + 1])].tolist())
            items.append(SourceItem(line, key, _resolve(root, key), labels, _resolve(root, mask) if mask else None))
        return items

    def task(self, index: int, out_dir: str, attempt: str | None = None) -> ShardTask:
        """What shard ``index`` holds, as a task any process can run: a pure function of the plan."""
        start, stop = self.span(index)
        header = self.header
        return ShardTask(index, out_dir, self.items(start, stop), PrepareOptions(**header["prepare"]),
                         header["strict"], attempt)


def _texts(ends: np.ndarray, blob: np.ndarray, start: int, stop: int) -> list[str]:
    bounds = ends[start : stop + 1].astype(np.int64)
    data = bytes(blob[bounds[0] : bounds[-1]])
    bounds -= bounds[0]
    return [data[a:b].decode("utf-8") for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())]


def plan(source: Source, out_dir: str, options: PackOptions) -> str:
    """``recpack plan``: shuffle ``source`` once and write the plan into ``out_dir``; return its fingerprint.

    Holds OUT's lock while it writes.  Planning again with the same source and
    options keeps the plan and every shard already finished from it; with
    anything else, OUT starts clean (as ``recpack pack`` does).
    """
    print_hash = fingerprint(source, options)
    with resume.exclusive(out_dir):
        resume.start_or_resume(out_dir, print_hash, options.overwrite)
        try:
            if StoredPlan.open(out_dir).fingerprint == print_hash:
                return print_hash
        except PackError:
            pass
        write_plan(source, out_dir, options, print_hash)
    return print_hash
