"""``recpack stats``: one pass over a dataset's records on every core, then its statistics into the manifest.

How the work is cut (``plan_units``, pure): runs of consecutive records of one shard,
at most ``UNIT_RECORDS`` to a unit, the last few cut finer (``finer_tail``); a sample
is a seeded draw of records without replacement, its units taking records from
several shards in file order.  Worker
processes (``processes.run_tasks``, the packer's pool) each measure a unit into a
``Tally`` and the tallies are merged here as they finish, exactly (``tally``), so the
order in which units finish changes nothing; the average image's sums stay in memory
the workers share.  A record is decoded as the reader decodes it: the
JPEGs libjpeg takes (the reader's rule, ``read.decode.libjpeg_size``) by ``_pixels``, with
the reader's settings, row by row, measured as they come; the rest by Pillow
(``read.decode.decode_full``).  So grayscale, CMYK and PNG-origin records count as the
three channels training sees.

Crash safety: nothing is written until the pass is over; then the average image under a
new name, then the manifest, atomically (``format.manifest.save_stats``).  Ctrl-C or a
kill at any moment leaves the old manifest, or the new one, whole.  The folder's lock
(the one ``recpack pack`` holds) keeps a pack from replacing the shards meanwhile.
"""

from __future__ import annotations

import os
import resource
import signal
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..._version import __version__
from ...errors import BadImageError, CorruptRecordError, RecpackError
from ...format import manifest as mf
from ...format import stats as contract
from ...format.schema import trailing_of, unpack_payload
from ...pack import resume
from ...processes import WorkerDied, die_with_parent, pool_context, run_tasks
from ...read.decode import decode_full, libjpeg_size, load_mask
from ...read.opening import shard_reader
from ...read.shard_reader import ShardReader
from . import _pixels
from .summary import mean_image, summarize
from .tally import CHANNELS, HISTOGRAM_STEP, Tally, merge

UNIT_RECORDS = 256  # records a worker measures before handing back its tally (and the progress bar moves)


@dataclass(frozen=True)
class StatsOptions:
    sample: int | None = None  # records to draw at random; None: every record
    seed: int = 0  # the sample's draw
    mean_size: int | None = 224  # side of the average image; None: no average image
    ignore_index: int | None = None  # a mask value left out of the class counts (e.g. 255)
    workers: int | None = None  # processes (default: every core)
    progress: bool = True


@dataclass(frozen=True)
class StatsResult:
    stats: dict[str, Any]  # what went into the manifest (or would have: see saved)
    mean_image: np.ndarray | None  # (side, side, 3) float32, 0-1 scale
    seconds: float
    saved: bool = True  # False: a sample, not written over the full pass's statistics the manifest holds


Unit = tuple[tuple[int, tuple[tuple[int, int], ...]], ...]  # (shard, runs of records (first, stop)) per shard it reads


def plan_units(sizes: list[int], sample: int | None, seed: int, unit_records: int = UNIT_RECORDS) -> list[Unit]:
    """The units of work, in file order: each at most ``unit_records`` records, as runs (first, stop) per shard.

    Every record: a unit is one run of consecutive records of one shard.  ``sample``
    draws that many records without replacement with ``seed`` (all of them when the
    dataset has no more); a unit of a sample takes its records from as many shards as
    it needs, in file order, so that a sample spread thin over many shards is still a
    few units, not one per shard.
    """
    total = sum(sizes)
    if sample is None or sample >= total:
        return [((shard, ((first, min(first + unit_records, size)),)),)
                for shard, size in enumerate(sizes) for first in range(0, size, unit_records)]
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=sample, replace=False))
    starts = np.cumsum([0] + list(sizes))
    shards = np.searchsorted(starts, chosen, side="right") - 1
    bounds = np.searchsorted(shards, np.arange(len(sizes) + 1))  # the chosen records of shard s: bounds[s]:bounds[s+1]
    units = []
    for first in range(0, sample, unit_records):
        stop = min(first + unit_records, sample)
        parts = []
        for shard in range(int(shards[first]), int(shards[stop - 1]) + 1):
            low, high = max(first, int(bounds[shard])), min(stop, int(bounds[shard + 1]))
            if low < high:
                parts.append((shard, _runs((chosen[low:high] - starts[shard]).tolist())))
        units.append(tuple(parts))
    return units


def finer_tail(units: list[Unit], workers: int, pieces: int = 4) -> list[Unit]:
    """The same units in the same order, the last 2 x ``workers`` of them that are one run each cut into ``pieces``.

    Workers take units as they free up, so the pass ends with its last unit: whole
    units (256 records, ~0.4 s a core) left one worker idle for up to that long at the
    end while the other finished, a few per cent of the pass.  Finer last units let
    them end together.
    """
    head, tail = units[:-2 * workers], units[-2 * workers:]
    finer: list[Unit] = []
    for unit in tail:
        if len(unit) != 1 or len(unit[0][1]) != 1:
            finer.append(unit)
            continue
        ((shard, ((first, stop),)),) = unit
        step = -(-(stop - first) // pieces)
        finer.extend(((shard, ((start, min(start + step, stop)),)),) for start in range(first, stop, step))
    return head + finer


def sample_unit_records(sample: int, workers: int) -> int:
    """Records per unit of a sample: eight units a worker (each ends with a tally to send), 16 to 256 records each."""
    return max(16, min(UNIT_RECORDS, -(-sample // (8 * workers))))


def _runs(indices: list[int]) -> tuple[tuple[int, int], ...]:
    """Sorted record indices as (first, stop) runs of consecutive ones."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and runs[-1][1] == index:
            runs[-1][1] += 1
        else:
            runs.append([index, index + 1])
    return tuple((first, stop) for first, stop in runs)


@dataclass(frozen=True)
class _Spec:
    """What a worker needs besides its records."""

    mean_size: int | None
    keep_per_image: bool
    has_masks: bool
    ignore_index: int | None


IMAGES_PER_RESIZED_SUM = 257  # images one 16-bit average-image sum holds (257 x 255 < 2^16, ``_pixels``)
# Pillow's own limit (it refuses twice MAX_IMAGE_PIXELS): a few bytes claiming 60000 x 60000 are not
# decoded for minutes, whichever decoder gets them.
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS


def _mask_counts(mask, size: tuple[int, int]) -> np.ndarray:
    """Pixels per class value (256) of a record's mask, decoded as the reader decodes it."""
    if not len(mask):
        raise BadImageError("record has no mask in a segmentation dataset")
    counts = np.zeros(256, np.uint64)
    _pixels.histogram(np.ascontiguousarray(load_mask(mask, size)), 1, 1, counts)
    return counts


def _measure_image(tally: Tally, image, resized: np.ndarray | None, undo: bool = False) -> tuple[int, int, tuple]:
    """(width, height, moments) of one image, its histogram and average-image shares added (``undo``: taken out).

    A JPEG libjpeg takes is decoded and measured row by row in one call, with the
    reader's settings; the rest (not JPEGs, CMYK) are decoded whole by Pillow, as the
    reader decodes them.  Which is which is the reader's rule (``libjpeg_size``),
    asked only when libjpeg refuses, to save its header walk on every JPEG: a JPEG the
    rule would send to Pillow but libjpeg takes gets the same pixels either way, since
    Pillow decodes JPEGs with libjpeg at the same settings.
    """
    side = tally.mean_size or 0
    try:
        return _pixels.measure_jpeg(image, side, resized, tally.pixel_histogram, HISTOGRAM_STEP, MAX_PIXELS, undo)
    except ValueError as error:
        if libjpeg_size(image) is not None:
            raise BadImageError(f"image does not decode ({error})") from None
    pixels = decode_full(image)
    height, width = pixels.shape[:2]
    moments = _pixels.measure_rgbx(pixels, width, height, side, resized, tally.pixel_histogram, HISTOGRAM_STEP, undo)
    return width, height, moments


def _measure_record(tally: Tally, spec: _Spec, payload, trailing, resized: np.ndarray | None) -> None:
    """Measure one record into ``tally``; a failure (raised) leaves no trace in it but the record's labels."""
    record = unpack_payload(payload, trailing)
    tally.add_record(record.labels)
    width, height, moments = _measure_image(tally, record.image, resized)
    if spec.has_masks:
        try:
            counts = _mask_counts(record.mask, (width, height))
        except BadImageError:
            _measure_image(tally, record.image, resized, undo=True)
            raise
        tally.add_mask(counts, spec.ignore_index)
    tally.add_image(width, height, len(record.image), moments)


class _Measurer:
    """Measures records into one tally, part after part.

    The average image is summed in 16 bits for up to 257 images at a time (``resized``:
    a buffer the L2 cache holds, where 64 bits would not fit), then added to ``image``
    (64 bits; by default the tally's own).
    """

    def __init__(self, spec: _Spec, image: np.ndarray | None = None, resized: np.ndarray | None = None) -> None:
        self.spec = spec
        self.tally = Tally(spec.mean_size, spec.keep_per_image)
        self.image = self.tally.mean_image if image is None else image
        self.resized = resized
        if spec.mean_size is None:
            self.resized = None
        elif resized is None:
            self.resized = np.zeros((spec.mean_size, spec.mean_size, 4), np.uint16)
        else:
            resized[...] = 0
        self.summed = 0  # images in self.image; the rest are in resized

    def part(self, reader: ShardReader, shard: int, runs: tuple[tuple[int, int], ...]) -> None:
        """Records of ``runs`` of one shard; a bad record is counted and named, not raised."""
        tally, spec, resized = self.tally, self.spec, self.resized
        for first, stop in runs:
            trailing = trailing_of(reader.rows[first:stop])
            for index, payload in enumerate(_read_run(reader, first, stop), first):
                try:
                    if isinstance(payload, CorruptRecordError):
                        raise payload
                    _measure_record(tally, spec, payload, trailing[index - first], resized)
                except CorruptRecordError as error:
                    tally.add_failure(shard, index, str(error))
                except (BadImageError, ValueError) as error:
                    tally.add_failure(shard, index, f"{reader.name}: record {index}: {getattr(error, 'reason', error)}")
                if resized is not None and tally.images - self.summed == IMAGES_PER_RESIZED_SUM:
                    self._flush()

    def _flush(self) -> None:
        self.image += self.resized[..., :CHANNELS]
        self.resized[...], self.summed = 0, self.tally.images

    def finish(self) -> Tally:
        if self.resized is not None:
            self._flush()
        return self.tally


COPY_BYTES = 1 << 20  # a run of fewer bytes is read by pread, not mapped (see _read_run)


def _read_run(reader: ShardReader, first: int, stop: int) -> list:
    """Payloads of records first..stop-1 (or the error of each one that is damaged), as ``ShardReader.read_run``.

    A long run is mapped (``read_run``: no copy, the kernel reads 2 MiB blocks).  A
    short one, a sample's few records here and there, is read by pread, exactly its
    bytes: a block read around one 100 KB record from a cold disk reads 20 times
    what it needs.  A file shorter than the index says goes to ``read_run``, whose
    errors name it.
    """
    base = int(reader.rows[first]["offset"])
    size = reader.run_bytes(first, stop)
    if size >= COPY_BYTES:
        return reader.read_run(first, stop)
    try:
        with open(reader.rec_path, "rb", buffering=0) as handle:
            data = os.pread(handle.fileno(), size, base)
    except OSError:
        return reader.read_run(first, stop)
    if len(data) < size:
        return reader.read_run(first, stop)
    return reader.parse_run(memoryview(data), base, first, stop, True)


def measure_unit(spec: _Spec, reader: ShardReader, shard: int, runs: tuple[tuple[int, int], ...]) -> Tally:
    """The tally of some records of one shard (a bad record is counted and named, not raised)."""
    measurer = _Measurer(spec)
    measurer.part(reader, shard, runs)
    return measurer.finish()


# What every task of a run shares, set once per worker process by _init_worker: (dataset, its shards, _Spec).
_job: tuple[str, list, _Spec] | None = None
_readers: dict[int, ShardReader] = {}  # a worker's open shard readers, the last few it used
_KEEP_READERS = 4
# A worker's share of the average image (its slot of the shared sums), and its 16-bit buffer, kept for every unit
_image: np.ndarray | None = None
_resized: np.ndarray | None = None


def _init_worker(parent: int, dataset: str, shards: list, spec: _Spec, images, claimed) -> None:
    """Ctrl-C is the parent's to handle (it stops the pool); a worker dies with its parent (Linux); the job's data.

    Why the second: forked workers hold the folder's lock too, so one outliving a killed
    ``recpack stats`` would keep every later stats or pack refused.  ``images`` holds one
    average-image sum per worker; the worker claims the next free one (``claimed``).
    """
    global _job, _image, _resized
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)
    _job = (dataset, shards, spec)
    _readers.clear()
    if spec.mean_size is not None:
        with claimed.get_lock():
            slot, claimed.value = claimed.value, claimed.value + 1
        _image = _shared_images(images, spec.mean_size)[slot]
        _resized = np.zeros((spec.mean_size, spec.mean_size, 4), np.uint16)


def _shared_images(images, side: int) -> np.ndarray:
    """The shared average-image sums as (workers, side, side, 3) uint64."""
    return np.frombuffer(images, np.uint64).reshape(-1, side, side, CHANNELS)


def _reader(shard: int) -> ShardReader:
    """This worker's reader of a shard: opened here, kept for the next units of the same shard."""
    reader = _readers.pop(shard, None)
    if reader is None:
        dataset, shards, _ = _job
        reader = shard_reader(dataset, shards[shard])
        while len(_readers) >= _KEEP_READERS:
            _readers.pop(next(iter(_readers))).close()
    _readers[shard] = reader  # now the most recently used
    return reader


def _measure_task(unit: Unit) -> tuple[int, Tally]:
    """(records, tally) of one unit, in a worker process.

    The unit's average-image sums go into the worker's shared ones, not into the
    tally: a tally sent back is then a few KB, where 1.2 MB (224 px) took a pickle,
    a pipe and an unpickle per unit, and a worker killed while writing so much to
    the pipe could leave the pool's reader waiting for the rest forever.
    """
    measurer = _Measurer(_job[2], _image, _resized)
    for shard, runs in unit:
        measurer.part(_reader(shard), shard, runs)
    tally = measurer.finish()
    tally.mean_image = None
    return _unit_records(unit), tally


def _unit_records(unit: Unit) -> int:
    return sum(stop - first for _, runs in unit for first, stop in runs)


def _measure_all(dataset: str, shards: list, units: list[Unit], workers: int, total: int, spec: _Spec,
                 progress: bool) -> Tally:
    """Run the units on worker processes (``processes.run_tasks``); merge their tallies as they finish."""
    result = Tally(spec.mean_size, spec.keep_per_image)
    side = spec.mean_size or 0
    context = pool_context()
    images, claimed = context.RawArray("Q", workers * side * side * CHANNELS or 1), context.Value("i", 0)
    with tqdm(total=total, unit="img", desc="stats", disable=not progress, dynamic_ncols=True) as bar:
        try:
            for records, tally in run_tasks(_measure_task, units, workers, initializer=_init_worker,
                                            initargs=(os.getpid(), dataset, shards, spec, images, claimed)):
                result = merge(result, tally)
                bar.update(records)
        except WorkerDied as error:
            raise RecpackError(f"{error}; the manifest is unchanged: rerun the same command") from None
    if spec.mean_size is not None:
        result.mean_image += _shared_images(images, side).sum(axis=0, dtype=np.uint64)
    return result


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the pool's workers, once joined)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def compute(dataset: str, options: StatsOptions) -> tuple[mf.Manifest, Tally, dict[str, Any]]:
    """Measure ``dataset``'s records: its manifest as read, the merged tally, and how it was computed."""
    manifest = mf.load(dataset)
    if manifest.num_records == 0:
        raise RecpackError(f"{dataset}: the dataset holds no records")
    if options.ignore_index is not None and not manifest.has_masks:
        raise RecpackError(f"{dataset}: --ignore-index counts out a mask value, and this dataset has no masks")
    sampled = options.sample is not None and options.sample < manifest.num_records
    workers = max(1, options.workers or os.cpu_count() or 1)
    sizes = [shard.records for shard in manifest.shards]
    units = plan_units(sizes, options.sample, options.seed,
                       sample_unit_records(options.sample, workers) if sampled else UNIT_RECORDS)
    spec = _Spec(options.mean_size, sampled, manifest.has_masks, options.ignore_index)
    if not sampled:
        units = finer_tail(units, workers)
    measured = sum(map(_unit_records, units))
    workers = min(workers, len(units))
    started, cpu_started = time.monotonic(), _cpu_seconds()
    tally = _measure_all(dataset, list(manifest.shards), units, workers, measured, spec, options.progress)
    seconds, cpu_seconds = time.monotonic() - started, _cpu_seconds() - cpu_started
    computed = {
        "method": "sample" if sampled else "full",
        "records": measured,
        "of": manifest.num_records,
        "seed": options.seed if sampled else None,
        "seconds": round(seconds, 3),
        "images_per_s": round(measured / max(seconds, 1e-9), 1),
        "cpu_seconds": round(cpu_seconds, 3),  # of this process and its workers: on a busy machine, the cost
        "workers": workers,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "recpack_version": __version__,
    }
    return manifest, tally, computed


def holds_full_pass(manifest: mf.Manifest) -> bool:
    """Whether the manifest's statistics come from a pass over every record."""
    return ((manifest.stats or {}).get("computed") or {}).get("method") == "full"


def _mean_image_named(dataset: str) -> str | None:
    """The average image the manifest on disk names (the old one, or the new one if it was saved)."""
    try:
        return ((mf.load(dataset).stats or {}).get("mean_image") or {}).get("file")
    except RecpackError:
        return None


def run(dataset: str, options: StatsOptions) -> StatsResult:
    """Compute ``dataset``'s statistics and write them into its manifest (and the average image beside it).

    A sample's estimates are not written over a full pass's exact statistics: they
    describe the same records (a new pack writes a manifest without statistics), and
    ``normalize=True`` would lose precision for nothing.  They are returned unsaved.
    """
    started = time.monotonic()
    mf.load(dataset)  # a dataset, or its error, before the lock (which would create a missing folder)
    with resume.exclusive(dataset):
        manifest, tally, computed = compute(dataset, options)
        stats = summarize(tally, label_width=manifest.label_width, has_masks=manifest.has_masks,
                          ignore_index=options.ignore_index, computed=computed, population=manifest.num_records)
        image = mean_image(tally)
        if computed["method"] == "sample" and holds_full_pass(manifest):
            return StatsResult(stats, image, time.monotonic() - started, saved=False)
        keep = None
        try:
            if image is not None:
                keep = contract.write_mean_image(dataset, image)
                stats["mean_image"] = {"file": keep, "side": int(image.shape[0])}
            mf.save_stats(dataset, stats, manifest)
        except BaseException:  # Ctrl-C or an error between the two writes: keep only what the manifest names
            contract.remove_mean_images(dataset, _mean_image_named(dataset))
            raise
        contract.remove_mean_images(dataset, keep)
    return StatsResult(stats, image, time.monotonic() - started)
