"""Decode a stream of records into batches, on a thread pool, straight into the batch buffers.

Each batch gets its buffers up front; decode tasks of ``CHUNK`` records write
their images (and masks) into their slots, so no batch is assembled from
per-image arrays: a decoded image is copied twice, by Pillow packing its
RGBX pixels into RGB bytes and by numpy from those bytes into its slot.  Tasks run through ``ordered_map``, so at
most ``threads * depth`` chunks are in flight and batches come out in order.
A record that fails travels as a ``CorruptRecordError`` in ``Decoded.errors``
and its slot is dropped from the batch; the caller's policy decides.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ..errors import BadImageError, CorruptRecordError
from ..format.schema import unpack_payload
from ..prefetch import ordered_map
from .decode import Augment, decode_image, decode_mask
from .shard_reader import Record

CHUNK = 16  # records per decode task: large enough to amortise the pool's per-task cost
Allocator = Callable[[tuple[int, ...]], np.ndarray]
# Records with fewer labels than the dataset's widest (possible in foreign .rec files and in lists
# whose lines differ) are padded with this, as MXNet's detection iterator pads (label_pad_value).
LABEL_PAD = -1.0


@dataclass(frozen=True)
class Decoded:
    images: np.ndarray  # (n, size, size, 3) uint8; raw mode: a list of JPEG bytes
    labels: np.ndarray  # (n, label_width) float32
    masks: np.ndarray | None  # (n, size, size) uint8 for segmentation datasets
    errors: list[CorruptRecordError]


@dataclass(frozen=True)
class _Buffers:
    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None
    ok: np.ndarray  # bool per slot


@dataclass(frozen=True)
class _Task:
    buffers: _Buffers
    start: int
    records: list[Record]
    last: bool  # the batch is complete once this task is


@dataclass(frozen=True)
class DecodeSpec:
    """Everything a decode thread needs besides the records."""

    augment: Augment
    label_width: int
    has_masks: bool
    transform: Callable[[np.ndarray], np.ndarray] | None
    rng_for: Callable[[Record], random.Random | None]
    name_of: Callable[[int], str]  # shard index -> shard name, for error messages


def _as_error(spec: DecodeSpec, record: Record, error: Exception) -> CorruptRecordError:
    if isinstance(error, CorruptRecordError):
        return error
    return CorruptRecordError(spec.name_of(record.shard), record.index, getattr(error, "reason", str(error)))


def _decode_task(spec: DecodeSpec, task: _Task) -> list[CorruptRecordError]:
    errors = []
    buffers = task.buffers
    for slot, record in enumerate(task.records, task.start):
        try:
            if isinstance(record.payload, Exception):
                raise record.payload
            payload = unpack_payload(record.payload, record.trailing)
            labels = payload.labels[: spec.label_width]
            buffers.labels[slot, : len(labels)] = labels  # the rest keeps LABEL_PAD
            box, source_size = decode_image(payload.image, spec.augment, spec.rng_for(record), buffers.images[slot])
            if buffers.masks is not None:
                if not len(payload.mask):
                    raise BadImageError("record has no mask in a segmentation dataset")
                decode_mask(payload.mask, box, source_size, buffers.masks[slot])
            if spec.transform is not None:
                buffers.images[slot] = spec.transform(buffers.images[slot])
        except (BadImageError, CorruptRecordError, ValueError) as error:
            errors.append(_as_error(spec, record, error))
            buffers.ok[slot] = False
    return errors


def _batches_of(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def private_buffer(shape: tuple[int, ...]) -> np.ndarray:
    """The default batch image buffer: ordinary process memory."""
    return np.empty(shape, np.uint8)


def _tasks(spec: DecodeSpec, records: Iterator[Record], batch_size: int, empty: Allocator) -> Iterator[_Task]:
    """Decode tasks of ``CHUNK`` records; each batch's records are held by its tasks alone.

    So a record, and the memory map of its run, is let go as soon as its
    task is decoded, not when the whole batch is.
    """
    side = spec.augment.size
    for batch in _batches_of(records, batch_size):
        count = len(batch)
        buffers = _Buffers(
            empty((count, side, side, 3)),
            np.full((count, spec.label_width), LABEL_PAD, np.float32),
            np.empty((count, side, side), np.uint8) if spec.has_masks else None,
            np.ones(count, bool),
        )
        chunks = [batch[start : start + CHUNK] for start in range(0, count, CHUNK)][::-1]
        del batch
        for start in range(0, count, CHUNK):
            yield _Task(buffers, start, chunks.pop(), start + CHUNK >= count)
        del buffers  # before the next batch's buffer exists: the finished one may be on its way out


def decode_batches(
    spec: DecodeSpec,
    records: Iterator[Record],
    batch_size: int,
    threads: int,
    depth: int,
    empty: Allocator | None = None,
) -> Iterator[Decoded]:
    """Batches of up to ``batch_size`` decoded records, in record order.

    ``empty(shape)`` allocates each batch's uint8 image buffer (e.g. in shared
    memory, so that a DataLoader worker can hand it over without a copy).
    """
    tasks = _tasks(spec, records, batch_size, empty or private_buffer)
    errors: list[CorruptRecordError] = []
    decode = lambda task: (task, _decode_task(spec, task))  # noqa: E731
    for task, task_errors in ordered_map(decode, tasks, threads, threads * depth):
        errors += task_errors
        buffers, last = task.buffers, task.last
        del task
        if last:
            if errors:
                keep = buffers.ok
                yield Decoded(buffers.images[keep], buffers.labels[keep],
                              None if buffers.masks is None else buffers.masks[keep], errors)
            else:
                yield Decoded(buffers.images, buffers.labels, buffers.masks, [])
            errors = []
        del buffers  # a yielded batch belongs to the consumer: no reference here while the next one decodes


def raw_batches(spec: DecodeSpec, records: Iterator[Record], batch_size: int) -> Iterator[Decoded]:
    """Batches of undecoded JPEG bytes (for measuring I/O alone, or decoding elsewhere)."""
    for batch in _batches_of(records, batch_size):
        images, labels, errors = [], [], []
        for record in batch:
            try:
                if isinstance(record.payload, Exception):
                    raise record.payload
                payload = unpack_payload(record.payload, record.trailing)
            except (CorruptRecordError, ValueError) as error:
                errors.append(_as_error(spec, record, error))
                continue
            images.append(bytes(payload.image))
            labels.append(payload.labels[: spec.label_width])
        label_array = np.full((len(labels), spec.label_width), LABEL_PAD, np.float32)
        for row, record_labels in zip(label_array, labels):
            row[: len(record_labels)] = record_labels
        yield Decoded(images, label_array, None, errors)
