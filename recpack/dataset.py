"""``RecordDataset``: a PyTorch IterableDataset over a packed dataset.

The stages, each a function below, composed in ``RecordDataset.__iter__``:

    plan      which groups of records this rank and worker own this epoch (``sharding``)
    read      one positioned read per run of consecutive records, a group ahead, CRC-checked
    decode    thread pool: DCT-scaled decode + crop + resize + flip into a batch buffer
    collate   ready (B, 3, H, W) uint8 tensors, or single samples for DataLoader's collate

Memory is bounded by the read-ahead (two groups of ``shuffle_buffer``
records per process) and the decode depth, never by the dataset's size.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from . import manifest as mf
from .decode import Augment, decode_image, decode_mask
from .errors import BadImageError, CorruptRecordError, RecpackError
from .format import unpack_payload
from .prefetch import ordered_map
from .reader import ShardReader
from .sharding import EpochPlan, read_runs, round_robin_consumed, worker_groups

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ReadOptions:
    """How records are fetched; none of these change which records an epoch holds."""

    shuffle_buffer: int = 512  # records shuffled together (rounded up to a multiple of the batch size)
    window: int = 64  # records read in one sequential run before jumping to another shard
    threads: int | None = None  # decode threads per process (default: cores / DataLoader workers)
    decode_depth: int = 4  # decode tasks in flight per thread
    verify: bool = True  # check each record's CRC32C before use


@dataclass(frozen=True)
class Partition:
    """Who this process reads for.  ``rank``/``world`` default to torch.distributed, then RANK/WORLD_SIZE."""

    rank: int | None = None
    world: int | None = None
    uneven: str = "pad"  # "pad": repeat a few records so every rank sees the same count; "drop": skip them

    def resolve(self) -> tuple[int, int]:
        if self.rank is not None and self.world is not None:
            return self.rank, self.world
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


@dataclass
class _Shards:
    """Readers for a dataset's shards, opened lazily per process."""

    readers: list[ShardReader]
    sizes: list[int]

    @classmethod
    def open(cls, path: str, manifest: mf.Manifest) -> "_Shards":
        readers = [
            ShardReader(os.path.join(path, s.rec.name), os.path.join(path, s.rpi.name), s.stem) for s in manifest.shards
        ]
        return cls(readers, [s.records for s in manifest.shards])


@dataclass(frozen=True)
class _Record:
    shard: int
    index: int
    payload: Any  # memoryview, or the CorruptRecordError found while reading it
    mask_length: int


def _read_group(shards: _Shards, plan: EpochPlan, group: int, verify: bool) -> list[_Record]:
    """All records of one group, read run by run in file order, returned in the group's shuffled order."""
    shard_ids, record_ids = plan.group_records(group)
    fetched: dict[tuple[int, int], _Record] = {}
    for shard, first, stop in read_runs(shard_ids, record_ids):
        reader = shards.readers[shard]
        masks = reader.rows["mask_length"][first:stop]
        for index, payload in enumerate(reader.read_run(first, stop, verify), first):
            fetched[shard, index] = _Record(shard, index, payload, int(masks[index - first]))
    return [fetched[int(s), int(r)] for s, r in zip(shard_ids, record_ids)]


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # (size, size, 3) uint8, or the raw bytes when not decoding
    label: np.ndarray  # float32 labels as stored
    mask: np.ndarray | None


class RecordDataset(IterableDataset):
    """Stream a recpack dataset: shuffled, split across ranks and DataLoader workers, decoded in threads.

    ``batch_size=B`` yields ready batches -- use ``DataLoader(ds, batch_size=None)``;
    ``batch_size=None`` yields single samples for ``DataLoader(ds, batch_size=B)``.
    A sample is ``(image, label)``, or ``(image, mask)`` for segmentation
    datasets; images are (3, H, W) uint8 (float32 when ``normalize`` is set);
    a single label is an int64 class index, several are a float32 vector.
    ``augment=None`` skips decoding and yields the raw JPEG bytes.
    """

    def __init__(
        self,
        path: str,
        *,
        batch_size: int | None = None,
        augment: Augment | None = Augment(),
        shuffle: bool | None = None,
        seed: int = 0,
        drop_last: bool = False,
        normalize: bool | tuple[tuple[float, ...], tuple[float, ...]] = False,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        on_error: str = "raise",
        pin_memory: bool = False,
        read: ReadOptions = ReadOptions(),
        partition: Partition = Partition(),
    ):
        if on_error not in ("raise", "skip"):
            raise ValueError("on_error must be 'raise' or 'skip'")
        if partition.uneven not in ("pad", "drop"):
            raise ValueError("partition.uneven must be 'pad' or 'drop'")
        self.path = path
        self.manifest = mf.load(path)
        if self.manifest.num_records == 0:
            raise RecpackError(f"{path}: the dataset holds no records")
        self.batch_size, self.augment, self.seed, self.drop_last = batch_size, augment, seed, drop_last
        self.shuffle = (augment is None or augment.train) if shuffle is None else shuffle
        self.transform, self.on_error, self.pin_memory = transform, on_error, pin_memory
        self.read, self.partition = read, partition
        self.normalize = self._normalization(normalize)
        self.epoch = 0
        self._resume: dict[int, int] = {}  # group -> units already consumed, for this epoch only
        self._resume_unit = batch_size or 1  # records per unit in ``_resume``
        self._shards = _Shards.open(path, self.manifest)

    # --- configuration -------------------------------------------------------------------

    def _normalization(self, normalize) -> tuple[np.ndarray, np.ndarray] | None:
        if normalize is False or normalize is None:
            return None
        if normalize is True:
            stats = self.manifest.stats or {}
            mean, std = stats.get("mean", IMAGENET_MEAN), stats.get("std", IMAGENET_STD)
        else:
            mean, std = normalize
        return np.asarray(mean, np.float32) * 255, np.asarray(std, np.float32) * 255

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration follows (call before each epoch)."""
        if epoch != self.epoch:
            self._resume, self._resume_unit = {}, self.batch_size or 1
        self.epoch = epoch

    def _group_size(self) -> int:
        """The shuffle buffer, rounded up to whole batches so that batches never straddle groups."""
        unit = self.batch_size or 1
        return -(-max(self.read.shuffle_buffer, unit) // unit) * unit

    def plan(self) -> EpochPlan:
        rank, world = self.partition.resolve()
        return EpochPlan(
            self._shards.sizes,
            seed=self.seed,
            epoch=self.epoch,
            shuffle=self.shuffle,
            window=self.read.window,
            group=self._group_size(),
            rank=rank,
            world=world,
            pad=self.partition.uneven == "pad",
        )

    def __len__(self) -> int:
        """Samples (or, with ``batch_size``, batches) this rank sees per epoch."""
        span = self.plan().span_length
        if self.batch_size is None:
            return span
        return span // self.batch_size if self.drop_last else -(-span // self.batch_size)

    # --- resume ---------------------------------------------------------------------------

    def _units_per_group(self, plan: EpochPlan, unit: int) -> list[int]:
        """Batches (of ``unit`` records) each group yields; only the last group can end short."""
        if self.drop_last and self.batch_size:
            return [count // unit for _, count in plan.groups]
        return [-(-count // unit) for _, count in plan.groups]

    def _unit_for(self, loader_batch_size: int | None) -> int:
        if self.batch_size is not None:
            return self.batch_size
        unit = loader_batch_size or 1
        if self._group_size() % unit:
            raise RecpackError(f"shuffle_buffer {self._group_size()} must be a multiple of the DataLoader's batch size {unit}")
        return unit

    def state_dict(self, batches_seen: int, num_workers: int = 0, loader_batch_size: int | None = None) -> dict:
        """Where this rank stands after the training loop consumed ``batches_seen`` batches this epoch.

        ``num_workers`` and ``loader_batch_size`` are the DataLoader's (the
        latter only in per-sample mode): together they say which records the
        DataLoader had delivered, since it takes batches from its workers in turn.
        """
        unit = self._unit_for(loader_batch_size)
        if self._resume and unit != self._resume_unit:
            raise RecpackError("the DataLoader's batch size changed since the state this epoch resumed from")
        plan = self.plan()
        per_group = self._units_per_group(plan, unit)
        remaining = [g for g in range(len(plan.groups)) if self._resume.get(g, 0) < per_group[g]]
        workers = max(num_workers, 1)
        streams = [worker_groups(remaining, w, workers) for w in range(workers)]
        available = [sum(per_group[g] - self._resume.get(g, 0) for g in stream) for stream in streams]
        consumed = dict(self._resume)
        for stream, delivered in zip(streams, round_robin_consumed(available, batches_seen)):
            for group in stream:
                take = min(delivered, per_group[group] - consumed.get(group, 0))
                consumed[group] = consumed.get(group, 0) + take
                delivered -= take
        return {
            "epoch": self.epoch,
            "seed": self.seed,
            "unit": unit,
            "consumed": {str(group): n for group, n in consumed.items() if n},
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue an epoch from ``state_dict``'s result, with any number of workers."""
        if state["seed"] != self.seed:
            raise RecpackError(f"state was saved with seed {state['seed']}, this dataset uses seed {self.seed}")
        self.epoch = state["epoch"]
        self._resume = {int(g): n for g, n in state["consumed"].items()}
        self._resume_unit = state["unit"]

    # --- iteration ------------------------------------------------------------------------

    def _threads(self, workers: int) -> int:
        return self.read.threads or max(1, (os.cpu_count() or 1) // max(workers, 1))

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        unit = self._resume_unit
        plan = self.plan()
        per_group = self._units_per_group(plan, unit)
        remaining = [g for g in range(len(plan.groups)) if self._resume.get(g, 0) < per_group[g]]
        mine = worker_groups(remaining, worker, workers)
        records = self._records(plan, mine, unit)
        if self.augment is None:
            samples = self._apply_error_policy(self._raw_sample(record) for record in records)
        else:
            samples = self._apply_error_policy(self._decoded(records, self._threads(workers)))
        if self.batch_size is None:
            return (self._single(sample) for sample in samples)
        return self._batches(samples)

    def _records(self, plan: EpochPlan, groups: list[int], unit: int) -> Iterator[_Record]:
        """The records of ``groups`` in order, a group read ahead on a background thread."""
        read = lambda group: _read_group(self._shards, plan, group, self.read.verify)  # noqa: E731
        for group, records in zip(groups, ordered_map(read, groups, threads=1, depth=2)):
            skip = self._resume.get(group, 0) * unit
            end = len(records)
            if self.drop_last and self.batch_size:
                end -= end % self.batch_size
            yield from records[skip:end]

    def _apply_error_policy(self, samples: Iterator[Sample | CorruptRecordError]) -> Iterator[Sample]:
        """Bad records travel as values; here, in the consuming thread, they raise or are skipped with a warning."""
        for sample in samples:
            if not isinstance(sample, CorruptRecordError):
                yield sample
            elif self.on_error == "raise":
                raise sample
            else:
                warnings.warn(f"recpack: skipped {sample}", stacklevel=2)

    def _error(self, record: _Record, error: Exception) -> CorruptRecordError:
        if isinstance(error, CorruptRecordError):
            return error
        name = self._shards.readers[record.shard].name
        return CorruptRecordError(name, record.index, getattr(error, "reason", str(error)))

    def _sample(self, record: _Record, rng: np.random.Generator | None) -> Sample | CorruptRecordError:
        if isinstance(record.payload, Exception):
            return self._error(record, record.payload)
        try:
            payload = unpack_payload(record.payload, record.mask_length)
            image, box, source_size = decode_image(payload.image, self.augment, rng)
            mask = decode_mask(payload.mask, box, source_size, self.augment.size) if record.mask_length else None
        except (BadImageError, ValueError) as error:
            return self._error(record, error)
        if self.transform is not None:
            image = self.transform(image)
        return Sample(image, payload.labels, mask)

    def _raw_sample(self, record: _Record) -> Sample | CorruptRecordError:
        if isinstance(record.payload, Exception):
            return self._error(record, record.payload)
        payload = unpack_payload(record.payload, record.mask_length)
        return Sample(bytes(payload.image), payload.labels, bytes(payload.mask) if record.mask_length else None)

    def _decoded(self, records: Iterator[_Record], threads: int) -> Iterator[Sample | CorruptRecordError]:
        """Decode in a thread pool, in order, in chunks so that per-task overhead stays small."""

        def decode_chunk(chunk: list[_Record]) -> list[Sample | CorruptRecordError]:
            return [self._sample(record, self._rng(record)) for record in chunk]

        for chunk in ordered_map(decode_chunk, _chunks(records, 16), threads, threads * self.read.decode_depth):
            yield from chunk

    def _rng(self, record: _Record) -> np.random.Generator | None:
        """Augmentation randomness from (seed, epoch, record): the same every run, new every epoch."""
        if not self.augment.train:
            return None
        return np.random.default_rng((self.seed, self.epoch, record.shard, record.index))

    def _label(self, labels: np.ndarray):
        if self.manifest.label_width == 1:
            return torch.tensor(int(labels[0]), dtype=torch.int64)
        return torch.from_numpy(np.array(labels, np.float32))

    def _image_tensor(self, hwc: np.ndarray) -> torch.Tensor:
        if self.normalize is not None:
            mean, std = self.normalize
            hwc = (hwc.astype(np.float32) - mean) / std
        return torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1)

    def _single(self, sample: Sample):
        if self.augment is None:
            return sample.image, self._label(sample.label)
        image = self._image_tensor(sample.image)
        if sample.mask is not None:
            return image, torch.from_numpy(np.array(sample.mask))
        return image, self._label(sample.label)

    def _batches(self, samples: Iterator[Sample]) -> Iterator:
        batch: list[Sample] = []
        for sample in samples:
            batch.append(sample)
            if len(batch) == self.batch_size:
                yield self._collate(batch)
                batch = []
        if batch and not self.drop_last:
            yield self._collate(batch)

    def _collate(self, batch: list[Sample]):
        if self.augment is None:
            return [sample.image for sample in batch], self._labels_tensor(batch)
        first = batch[0].image
        if self.normalize is None:
            images = torch.empty((len(batch), *first.shape), dtype=torch.uint8)
            array = images.numpy()
            for slot, sample in enumerate(batch):
                array[slot] = sample.image
            images = images.permute(0, 3, 1, 2)  # (B, 3, H, W) in channels-last memory order
        else:
            images = torch.stack([self._image_tensor(sample.image) for sample in batch])
        targets = (
            torch.from_numpy(np.stack([sample.mask for sample in batch]))
            if batch[0].mask is not None
            else self._labels_tensor(batch)
        )
        if self.pin_memory and torch.cuda.is_available():
            images, targets = images.pin_memory(), targets.pin_memory()
        return images, targets

    def _labels_tensor(self, batch: list[Sample]) -> torch.Tensor:
        labels = np.stack([sample.label for sample in batch])
        if self.manifest.label_width == 1:
            return torch.from_numpy(labels[:, 0].astype(np.int64))
        return torch.from_numpy(labels.astype(np.float32))


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
