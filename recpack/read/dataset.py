"""``RecordDataset``: a PyTorch IterableDataset over a packed dataset.

The stages, each a function below, composed in ``RecordDataset.__iter__``:

    plan      which groups of records this rank and worker own this epoch (``planning``)
    read      each run of consecutive records mapped and read whole, CRC-checked, by reader threads
              a bounded number of bytes ahead of use (``readahead``)
    decode    thread pool: DCT-scaled decode + crop + resize + flip into a batch buffer
    collate   ready (B, 3, H, W) uint8 tensors, or single samples for DataLoader's collate

Memory is bounded by the read-ahead (``ReadOptions.readahead_mb`` per process,
256 MB by default; see ``readahead`` for the rule) and the decode depth, never
by the dataset's size.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import RecpackError
from ..format.stats import normalization
from .batches import CHUNK, Decoded, DecodeSpec, decode_batches, raw_batches
from .decode import Augment
from .detection import Detection, padded
from ..storage.store import StorageOptions
from ..storage.urls import is_url
from .opening import open_shards
from .options import Partition, ReadOptions
from .planning import EpochPlan, round_robin_consumed, worker_groups
from .readahead import read_groups
from .shard_reader import Record, ShardReader

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

STATE_VERSION = 2  # 2: the state carries the setup it was taken under (``_order_setup``)
# state_dict's setup keys, and how load_state_dict's refusals name them
_ORDER_FIELDS = {
    "dataset": "dataset",
    "seed": "seed",
    "shuffle": "shuffle",
    "window": "read.window",
    "group": "shuffle buffer (read.shuffle_buffer rounded up to whole batches)",
    "batch_size": "batch_size",
    "drop_last": "drop_last",
    "rank": "rank",
    "world": "world size",
    "uneven": "partition.uneven",
}


def _shown(value) -> str:
    """A setup value as a refusal names it: a dataset by its size and fingerprint."""
    if isinstance(value, dict) and "fingerprint" in value:
        return f"{value['records']} records in {value['shards']} shards (fingerprint {value['fingerprint']})"
    return repr(value)


@dataclass
class _Shards:
    """Readers for a dataset's shards, opened lazily per process."""

    readers: list[ShardReader]
    sizes: list[int]


def _shared_uint8(shape: tuple[int, ...]) -> np.ndarray:
    """An array whose memory is a shared-memory tensor's, as DataLoader's own collate allocates in workers."""
    storage = torch.UntypedStorage._new_shared(int(np.prod(shape)))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape).numpy()


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """The tensor behind ``array`` if it is all of one (so shared memory stays shared), else a zero-copy wrap."""
    owner = array.base
    if isinstance(owner, torch.Tensor) and owner.data_ptr() == array.ctypes.data and owner.numel() == array.size:
        return owner.view(array.shape)
    return torch.from_numpy(array)


class RecordDataset(IterableDataset):
    """Stream a recpack dataset: shuffled, split across ranks and DataLoader workers, decoded in threads.

    ``path`` is a recpack dataset folder, or an MXNet ``.rec`` file or folder
    of them without a manifest (indexed by a scan on construction, in memory),
    or a recpack dataset's URL (``s3://bucket/prefix``, ``gs://``, ``https://``),
    read by ranged requests as ``storage`` (``StorageOptions``) says.

    ``batch_size=B`` yields ready batches -- use ``DataLoader(ds, batch_size=None)``;
    ``batch_size=None`` yields single samples for ``DataLoader(ds, batch_size=B)``.
    A sample is ``(image, label)``, or ``(image, mask)`` for segmentation
    datasets; images are (3, H, W) uint8 (float32 when ``normalize`` is set);
    a single label is an int64 class index, several are a float32 vector
    (padded with -1 where a record has fewer than the widest).
    ``augment=None`` skips decoding and yields the raw JPEG bytes.

    ``detection=Detection()`` reads the labels as MXNet detection vectors and
    yields ``(image, boxes)``: ``(max_objects, object_width)`` float32 rows
    ``[class, xmin, ymin, xmax, ymax, ...]`` normalised to the output image,
    moved with every crop, resize, pad and flip, padded with -1 rows.
    ``placements=True`` appends each sample's placement (``read.geometry``):
    where its pixels lie on the output, which source rectangle they show, the flip.
    ``transform`` runs in the decode threads: in batch mode on each HWC uint8
    image, returning the same shape; in per-sample mode on the (3, H, W)
    tensor and the mask or the unpadded boxes if the dataset has them
    (``transform(image, mask)``), and may return anything: that is the sample.

    ``on_error="raise"`` stops at a damaged record with a ``CorruptRecordError``
    naming its shard and record; ``"skip"`` drops it with one warning each, and
    reads a damaged MXNet ``.rec`` around its damage.  What ``transform`` raises
    is the user's own and always reaches the loop.  ``state_dict`` and
    ``load_state_dict`` resume an epoch mid-way; a state taken under another
    setup (dataset, seed, partition, batching, shuffle) is refused.
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
        detection: Detection | None = None,
        placements: bool = False,
        storage: StorageOptions | None = None,
    ):
        if on_error not in ("raise", "skip"):
            raise ValueError("on_error must be 'raise' or 'skip'")
        if augment is not None and augment.canvas is None and batch_size is not None:
            raise RecpackError("Augment(mode='full') keeps each image's own size, which no batch tensor holds: use "
                               "per-sample mode (batch_size=None) with a DataLoader that keeps a list (collate_fn=list)")
        self.path = path
        # a recpack folder, or .rec files scanned in memory (damage skipped with a warning if on_error="skip")
        self.manifest, readers = open_shards(path, skip_damage=on_error == "skip", storage=storage)
        # a remote dataset's reader threads are its requests in flight (``remote_reader``)
        self._remote_reads = (storage or StorageOptions()).requests_in_flight if is_url(path) else None
        if self.manifest.num_records == 0:
            raise RecpackError(f"{path}: the dataset holds no records")
        self.batch_size, self.augment, self.seed, self.drop_last = batch_size, augment, seed, drop_last
        self.shuffle = (augment is None or augment.train) if shuffle is None else shuffle
        self.transform, self.on_error, self.pin_memory = transform, on_error, pin_memory
        self.read, self.partition = read, partition
        # resolved once, here in the training process: a spawned DataLoader worker
        # would not see a process group initialised in its parent
        self.rank, self.world = partition.resolve()
        self.normalize = self._normalization(normalize)
        self.epoch = 0
        self._resume: dict[int, int] = {}  # group -> units already consumed, for this epoch only
        self._resume_unit = batch_size or 1  # records per unit in ``_resume``
        self._shards = _Shards(readers, [s.records for s in self.manifest.shards])
        if detection is not None and self.manifest.has_masks:
            raise RecpackError(f"{path}: detection boxes and segmentation masks together are not supported yet")
        self.detection, self.placements = detection, placements

    # --- configuration -------------------------------------------------------------------

    def _normalization(self, normalize) -> tuple[np.ndarray, np.ndarray] | None:
        if normalize is False or normalize is None:
            return None
        if normalize is True:  # the dataset's own (recpack stats), on the 0-1 scale, else ImageNet's
            mean, std = normalization(self.manifest.stats, self.path) or (IMAGENET_MEAN, IMAGENET_STD)
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
        return EpochPlan(
            self._shards.sizes,
            seed=self.seed,
            epoch=self.epoch,
            shuffle=self.shuffle,
            window=self.read.window,
            group=self._group_size(),
            rank=self.rank,
            world=self.world,
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

    def _remaining_groups(self, per_group: list[int]) -> list[int]:
        """Groups with batches not yet consumed this epoch (all of them unless resumed)."""
        return [group for group, units in enumerate(per_group) if self._resume.get(group, 0) < units]

    def _unit_for(self, loader_batch_size: int | None) -> int:
        if self.batch_size is not None:
            return self.batch_size
        if loader_batch_size is None:
            raise RecpackError("per-sample mode: pass state_dict(..., loader_batch_size=B), the DataLoader's batch "
                               "size, so that batches_seen can be turned into the records each worker delivered")
        unit = loader_batch_size
        if self._group_size() % unit:
            raise RecpackError(
                f"the DataLoader's batch size {unit} must divide the shuffle buffer ({self._group_size()} records) "
                f"for an exact resume: e.g. RecordDataset(..., read=ReadOptions(shuffle_buffer={unit * 16}))"
            )
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
        remaining = self._remaining_groups(per_group)
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
            "version": STATE_VERSION,
            "epoch": self.epoch,
            **self._order_setup(),
            "unit": unit,
            "consumed": {str(group): n for group, n in consumed.items() if n},
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue an epoch from ``state_dict``'s result, with any number of workers.

        Refuses, naming the difference, a state saved under a setup that would
        deliver other records than the interrupted epoch's rest: another
        dataset, seed, partition, batching or shuffle (``_order_setup``).  The
        number of DataLoader workers, threads and decoding options may change.
        """
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            found = state.get("version") if isinstance(state, dict) else None
            raise RecpackError(
                f"state has version {found}, this recpack reads version {STATE_VERSION}: "
                "a state without its setup cannot be checked against this one; start the epoch afresh (set_epoch)"
            )
        here = self._order_setup()
        for key, name in _ORDER_FIELDS.items():
            if state.get(key) != here[key]:
                raise RecpackError(f"state was saved with {name} {_shown(state.get(key))}, this dataset has "
                                   f"{_shown(here[key])}: resuming would not deliver the rest of that epoch")
        self.epoch = state["epoch"]
        self._resume = {int(g): n for g, n in state["consumed"].items()}
        self._resume_unit = state["unit"]

    def _order_setup(self) -> dict:
        """Everything besides the epoch that decides which records come next, as ``state_dict`` stores it.

        Values that cannot change the order here are stored as None, so that
        changing them stays harmless: the window when nothing is shuffled, and
        drop_last in per-sample mode (the DataLoader drops, not the dataset).
        """
        return {
            "dataset": self._dataset_identity,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "window": self.read.window if self.shuffle else None,
            "group": self._group_size(),
            "batch_size": self.batch_size,
            "drop_last": self.drop_last if self.batch_size else None,
            "rank": self.rank,
            "world": self.world,
            "uneven": self.partition.uneven,
        }

    @functools.cached_property
    def _dataset_identity(self) -> dict:
        """The records' layout and content in a few numbers: the shard sizes and file checksums, hashed.

        A moved or copied dataset keeps it; a repacked one (even with equal
        shard sizes) does not.
        """
        shards = [(s.records, s.rec.bytes, s.rec.crc32c) for s in self.manifest.shards]
        digest = hashlib.sha256(json.dumps(shards).encode()).hexdigest()[:16]
        return {"records": self.manifest.num_records, "shards": self.manifest.num_shards, "fingerprint": digest}

    # --- iteration ------------------------------------------------------------------------

    def _threads(self, workers: int) -> int:
        return self.read.threads or max(1, (os.cpu_count() or 1) // max(workers, 1))

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        plan = self.plan()
        remaining = self._remaining_groups(self._units_per_group(plan, self._resume_unit))
        # local shards: four block reads in flight per process (two per DataLoader worker); two left a
        # throttled disk idle between blocks (raw stage: 152 against 165 MB/s of 170)
        readers = self._remote_reads or (2 if info else 4)
        records = self._records(plan, worker_groups(remaining, worker, workers), readers=readers)
        size = self.batch_size or CHUNK
        augment = self.augment or Augment()
        per_sample = self.batch_size is None and (self.transform is not None or augment.canvas is None)
        spec = DecodeSpec(
            augment, self.manifest.label_width, self.manifest.has_masks,
            self.transform, self._rng, lambda shard: self._shards.readers[shard].name,
            self.detection, self.placements, self._sample if per_sample else None,
        )
        if self.augment is None:
            decoded = raw_batches(spec, records, size)
        else:
            # a worker's batches go to the training process: build them in shared memory, where
            # DataLoader's pickling finds them and sends a handle instead of copying 38 MB per batch
            empty = _shared_uint8 if info is not None and self.batch_size else None
            depth = self.read.decode_depth or (1 if info is not None else 4)
            decoded = decode_batches(spec, records, size, self._threads(workers), depth, empty)
        return self._released(self._outputs(self._apply_error_policy(decoded)))

    def _released(self, outputs: Iterator) -> Iterator:
        """The outputs; once they end or are abandoned, the shards' record indexes are let go.

        Each loaded index is a map holding a descriptor: an iteration that is over
        leaves none behind.  The stages are closed first, so that no reading thread
        still uses an index (one it holds stays valid anyway).
        """
        try:
            yield from outputs
        finally:
            outputs.close()
            for reader in self._shards.readers:
                reader.release()

    def _outputs(self, decoded: Iterator[Decoded]) -> Iterator:
        """Batches, or their samples one by one.

        Each generator on the way lets go of a batch once it is handed on, so
        that a DataLoader worker, whose batches leave the process, never holds
        the previous batch's buffer while it fills the next one.
        """
        for batch in decoded:
            if self.batch_size is None:
                yield from self._samples(batch)
            elif len(batch.labels):
                yield self._batch(batch)
            del batch

    def _records(self, plan: EpochPlan, groups: list[int], readers: int) -> Iterator[Record]:
        """The records of ``groups`` in order, read ahead on ``readers`` threads (``readahead``'s rule)."""
        options = self.read
        read = read_groups(plan, self._shards.readers, groups, verify=options.verify, threads=readers,
                           ceiling=options.readahead_mb * 10**6, lead=options.readahead_s)
        for group, records in zip(groups, read):
            skip = self._resume.get(group, 0) * self._resume_unit
            end = len(records)
            if self.drop_last and self.batch_size:
                end -= end % self.batch_size
            # hand each record over and forget it: a run's memory map goes once its last record is decoded
            pending = records[skip:end][::-1]
            del records
            while pending:
                yield pending.pop()

    def _apply_error_policy(self, batches: Iterator[Decoded]) -> Iterator[Decoded]:
        """Bad records travel as values; here, in the consuming thread, they raise or are skipped with a warning."""
        for batch in batches:
            for error in batch.errors:
                if self.on_error == "raise":
                    raise error
                warnings.warn(f"recpack: skipped {error}", stacklevel=2)
            yield batch
            del batch

    def _rng(self, record: Record) -> random.Random | None:
        """Augmentation randomness from (seed, epoch, record): the same every run, new every epoch."""
        if not self.augment.train:
            return None
        return random.Random(hash((self.seed, self.epoch, record.shard, record.index)))

    def _labels(self, labels: np.ndarray) -> torch.Tensor:
        """One label per record: int64 class indices; several: float32 vectors."""
        if self.manifest.label_width == 1:
            return torch.from_numpy(labels[:, 0].astype(np.int64))
        return torch.from_numpy(labels)

    def _images(self, images: np.ndarray) -> torch.Tensor:
        """(n, 3, H, W) in channels-last memory order; float32 and normalised if asked."""
        tensor = _as_tensor(images).permute(0, 3, 1, 2)
        if self.normalize is None:
            return tensor
        mean, std = (torch.from_numpy(v).view(1, 3, 1, 1) for v in self.normalize)
        return tensor.float().sub_(mean).div_(std)

    def _batch(self, batch: Decoded):
        if self.augment is None:
            return batch.images, self._labels(batch.labels)
        if batch.masks is not None:
            targets = torch.from_numpy(batch.masks)
        elif batch.boxes is not None:
            targets = torch.from_numpy(batch.boxes)
        else:
            targets = self._labels(batch.labels)
        images = self._images(batch.images)
        if self.pin_memory and torch.cuda.is_available():
            images, targets = images.pin_memory(), targets.pin_memory()
        if batch.placements is not None:
            return images, targets, torch.from_numpy(batch.placements)
        return images, targets

    def _samples(self, batch: Decoded) -> Iterator:
        if batch.samples is not None:
            return iter(batch.samples)
        return zip(*self._batch(batch))

    def _sample(self, image: np.ndarray, mask, boxes, labels: np.ndarray, placement):
        """One sample, built in a decode thread when samples are not views of a batch: images of their own
        sizes, or a per-sample ``transform``, which gets the tensors a sample holds and makes the sample."""
        tensor = torch.from_numpy(image).permute(2, 0, 1)  # what _images makes, without its batch axis
        if self.normalize is not None:
            mean, std = (torch.from_numpy(v).view(3, 1, 1) for v in self.normalize)
            tensor = tensor.float().sub_(mean).div_(std)
        if mask is not None:
            target = torch.from_numpy(mask)
        elif boxes is not None:
            rows = self.detection.max_objects(self.manifest.label_width)
            target = torch.from_numpy(boxes if self.transform is not None else padded(boxes, rows, boxes.shape[1]))
        elif self.manifest.label_width == 1:
            target = torch.tensor(int(labels[0]))  # as _labels makes it: an int64 class index
        else:
            target = torch.from_numpy(labels.copy())
        if self.transform is None:
            sample = (tensor, target)
        elif mask is not None or boxes is not None:
            sample = self.transform(tensor, target)
        else:
            sample = (self.transform(tensor), target)
        if not self.placements:
            return sample
        row = torch.tensor(placement.as_row(), dtype=torch.float32)
        return (*sample, row) if isinstance(sample, tuple) else (sample, row)
