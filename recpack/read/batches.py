"""Decode a stream of records into batches, on a thread pool, straight into the batch buffers.

Each batch gets its buffers up front; decode tasks of ``CHUNK`` records write
their images (and masks, boxes, placements) into their slots, so no batch is
assembled from per-image arrays: a decoded image is copied twice, by Pillow
packing its RGBX pixels into RGB bytes and by numpy from those bytes into its
slot.  Records whose images keep their own size (``full``), or whose samples a
per-sample transform makes, get arrays of their own instead
(``DecodeSpec.variable``).  Tasks run through ``ordered_map``, so at most
``threads * depth`` chunks are in flight and batches come out in order.
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
from .detection import PAD, Detection, objects_of
from .geometry import PLACEMENT_COLUMNS, place_boxes
from .shard_reader import Record

CHUNK = 16  # records per decode task: large enough to amortise the pool's per-task cost
Allocator = Callable[[tuple[int, ...]], np.ndarray]
# Records with fewer labels than the dataset's widest (possible in foreign .rec files and in lists
# whose lines differ) are padded with this, as MXNet's detection iterator pads (label_pad_value).
LABEL_PAD = -1.0


@dataclass(frozen=True)
class Decoded:
    images: np.ndarray | list  # (n, H, W, 3) uint8; a list of (H, W, 3) when sizes vary; raw mode: JPEG bytes
    labels: np.ndarray  # (n, label_width) float32
    masks: np.ndarray | list | None  # (n, H, W) uint8 for segmentation datasets (a list when sizes vary)
    errors: list[CorruptRecordError]
    boxes: np.ndarray | None = None  # detection: (n, max_objects, object_width) float32, -1 rows as padding
    placements: np.ndarray | None = None  # (n, 11) float32: ``Placement.as_row()`` per record, when asked
    samples: list | None = None  # what ``DecodeSpec.per_sample`` made of each record, when it is set

    def keep(self, ok: np.ndarray) -> Decoded:
        """The records whose slot is ``ok``."""
        pick = lambda field: None if field is None else (  # noqa: E731
            [item for item, good in zip(field, ok) if good] if isinstance(field, list) else field[ok])
        return Decoded(pick(self.images), self.labels[ok], pick(self.masks), self.errors, pick(self.boxes),
                       pick(self.placements), pick(self.samples))


@dataclass(frozen=True)
class _Buffers:
    images: np.ndarray | list  # a list (of per-record arrays, or of samples) when sizes vary or samples are built
    labels: np.ndarray
    masks: np.ndarray | list | None
    ok: np.ndarray  # bool per slot
    boxes: np.ndarray | None = None
    placements: np.ndarray | None = None
    samples: list | None = None


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
    detection: Detection | None = None  # labels are MXNet detection vectors whose boxes follow the geometry
    placements: bool = False  # keep each record's placement (where its pixels and padding are)
    # per-sample mode: (image HWC, mask, boxes, labels, placement) -> the sample, built in the decode thread;
    # set when samples are not views of a batch buffer (a transform, or images of their own sizes)
    per_sample: Callable | None = None

    @property
    def variable(self) -> bool:
        """Whether each record gets its own arrays instead of a slot in a batch buffer."""
        return self.per_sample is not None or self.augment.canvas is None


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
            transform = _decode_one(spec, buffers, slot, payload, spec.rng_for(record))
        except (BadImageError, CorruptRecordError, ValueError) as error:
            errors.append(_as_error(spec, record, error))
            buffers.ok[slot] = False
            continue
        if transform is not None:
            transform()  # outside the try: what the user's transform raises is its own, never a damaged record
    return errors


def _decode_one(spec: DecodeSpec, buffers: _Buffers, slot: int, payload,
                rng: random.Random | None) -> Callable[[], None] | None:
    """Decode one record's image (and mask, boxes) into its slot, through one placement.

    Returns the step that runs the user's transform on it (or makes the sample), if any, for
    the caller to run apart: errors raised here are the record's, errors raised there the user's.
    """
    augment = spec.augment
    image, placement = decode_image(payload.image, augment, rng, None if spec.variable else buffers.images[slot])
    mask = boxes = None
    if buffers.masks is not None:
        if not len(payload.mask):
            raise BadImageError("record has no mask in a segmentation dataset")
        mask = decode_mask(payload.mask, placement, None if spec.variable else buffers.masks[slot],
                           augment.ignore_index)
    if spec.detection is not None:
        boxes = place_boxes(objects_of(payload.labels, spec.detection.object_width), placement,
                            spec.detection.min_visible)
        if buffers.boxes is not None:
            buffers.boxes[slot, : len(boxes)] = boxes  # the rest keeps -1 rows
    if buffers.placements is not None:
        buffers.placements[slot] = placement.as_row()
    if spec.per_sample is not None:
        labels = buffers.labels[slot]
        return lambda: buffers.samples.__setitem__(slot, spec.per_sample(image, mask, boxes, labels, placement))
    if spec.variable:
        buffers.images[slot] = image
        if mask is not None:
            buffers.masks[slot] = mask
    elif spec.transform is not None:
        return lambda: buffers.images.__setitem__(slot, spec.transform(buffers.images[slot]))
    return None


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
    canvas = spec.augment.canvas
    detection = spec.detection
    for batch in _batches_of(records, batch_size):
        count = len(batch)
        fixed = not spec.variable
        buffers = _Buffers(
            empty((count, *canvas, 3)) if fixed else [None] * count,
            np.full((count, spec.label_width), LABEL_PAD, np.float32),
            (np.empty((count, *canvas), np.uint8) if fixed else [None] * count) if spec.has_masks else None,
            np.ones(count, bool),
            None if detection is None or spec.per_sample is not None else
            np.full((count, detection.max_objects(spec.label_width), detection.object_width), PAD, np.float32),
            np.zeros((count, len(PLACEMENT_COLUMNS)), np.float32) if spec.placements else None,
            [None] * count if spec.per_sample is not None else None,
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
            whole = Decoded(buffers.images, buffers.labels, buffers.masks, errors, buffers.boxes,
                            buffers.placements, buffers.samples)
            yield whole.keep(buffers.ok) if errors else whole
            del whole
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
