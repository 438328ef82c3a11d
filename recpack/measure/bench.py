"""``recpack bench``: how fast this machine reads a packed dataset, stage by stage, and why.

Each stage adds one piece of the training input pipeline, so that the
difference between two rows is the cost of the piece:

    raw      records only, no CRC (``augment=None``, ``verify=False``): the disk and the reader
    crc      + CRC32C of every record
    decode   + JPEG decode, RandomResizedCrop, flip and batching, on threads in this process
    loader   the same through a torch DataLoader with ``workers`` worker processes
    files    (``--vs-files``) the same images as individual files in shuffled order, as an
             ImageFolder reads them: the random-read baseline for the packed layout

``cold`` evicts the files a stage reads from the page cache first and checks
with mincore(2) that they left, so that a figure is the disk's and not RAM's.
The measured sequential rate, random rate and per-core decode rate then feed
``iomodel`` to predict an epoch of this dataset on other disks.
"""

from __future__ import annotations

import os
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterator

from ..errors import RecpackError
from ..format import manifest as mf
from ..storage.datasets import load_manifest
from ..storage.urls import location
from . import iomodel, modelcheck
from .pagecache import CacheState, make_cold, make_warm
from .procstats import TreeMemory, cores, cpu_seconds
from .throttle import Throttle, throttled

STAGES = ("raw", "crc", "decode", "loader")
DESCRIPTIONS = {
    "raw": "records, no CRC",
    "crc": "records + CRC32C",
    "decode": "+ decode, crop, flip, batch (threads)",
    "loader": "+ DataLoader workers",
    "files": "individual files, shuffled",
}


@dataclass(frozen=True)
class BenchOptions:
    stages: tuple[str, ...] = STAGES
    limit: int | None = None  # records per stage (default: the whole dataset)
    threads: int | None = None  # decode threads of the "decode" stage (default: cores)
    workers: int | None = None  # DataLoader workers, and concurrent reads of the "files" stage (default: cores)
    batch_size: int = 256
    size: int = 224
    cold: bool = False
    vs_files: str | None = None  # an image list or ImageFolder directory
    root: str | None = None  # for relative paths in ``vs_files``
    seed: int = 0
    ios_per_file: float = 1.0  # for the model's "files" rows
    progress: bool = True
    hdd: Throttle | None = None  # run the stages cold on this simulated disk (``throttle``), then check the model


# --- stages -------------------------------------------------------------------------------


@dataclass
class StageResult:
    name: str
    description: str
    records: int
    bytes: int
    seconds: float
    cpu_seconds: float
    cores: int
    peak_rss: int | None  # summed over the process tree, bytes
    peak_pss: int | None
    cache: CacheState | None  # None: warm (no eviction asked)
    bytes_estimated: bool = False  # decoded stages: records x mean record size

    @property
    def images_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_utilisation(self) -> float:
        """Fraction of all the machine's cores busy with this process tree during the stage."""
        return self.cpu_seconds / (self.seconds * self.cores) if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        data = asdict(self)
        data["cache"] = None if self.cache is None else {**asdict(self.cache), "cold": self.cache.cold}
        data.update(images_per_s=self.images_per_s, mb_per_s=self.mb_per_s, cpu_utilisation=self.cpu_utilisation)
        return data


Counts = Iterator[tuple[int, int]]  # (records, bytes) per step


def measure(
    name: str,
    start: Callable[[], Counts],
    total: int,
    options: BenchOptions,
    cold_paths: list[str] | None = None,
    bytes_per_record: float | None = None,
) -> StageResult:
    """Time one stage from ``start()`` to exhaustion (or ``options.limit`` records), with a progress bar."""
    from tqdm import tqdm

    cache = make_cold(cold_paths) if options.cold and cold_paths is not None else None
    records = nbytes = 0
    with TreeMemory() as memory, tqdm(total=total, desc=f"{name:7s}", unit="img", disable=not options.progress,
                                      leave=False, dynamic_ncols=True) as bar:
        cpu, wall = cpu_seconds(), time.perf_counter()
        steps = start()
        try:
            for count, size in steps:
                records, nbytes = records + count, nbytes + size
                bar.update(min(count, total - bar.n))  # the last batch may overshoot --limit
                if records >= total:
                    break
        finally:
            getattr(steps, "close", lambda: None)()  # stop read-ahead and join DataLoader workers now
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    if bytes_per_record is not None:
        nbytes = round(records * bytes_per_record)
    return StageResult(
        name, DESCRIPTIONS[name], records, nbytes, wall, cpu, cores(),
        memory.peak_rss if memory.available else None, memory.peak_pss if memory.available else None,
        cache, bytes_per_record is not None,
    )


def _dataset(path: str, options: BenchOptions, **kwargs):
    from ..read.dataset import Partition, RecordDataset

    return RecordDataset(path, batch_size=options.batch_size, seed=options.seed,
                         partition=Partition(rank=0, world=1), **kwargs)


def raw_counts(path: str, options: BenchOptions, verify: bool) -> Counts:
    from ..read.options import ReadOptions

    for images, _ in _dataset(path, options, augment=None, read=ReadOptions(verify=verify)):
        yield len(images), sum(len(image) for image in images)


def decode_counts(path: str, options: BenchOptions) -> Counts:
    from ..read.options import ReadOptions
    from ..read.decode import Augment

    dataset = _dataset(path, options, augment=Augment(size=options.size), read=ReadOptions(threads=options.threads or cores()))
    for images, _ in dataset:
        yield len(images), 0


def loader_counts(path: str, options: BenchOptions) -> Counts:
    from torch.utils.data import DataLoader

    from ..read.decode import Augment

    dataset = _dataset(path, options, augment=Augment(size=options.size))
    iterator = iter(DataLoader(dataset, batch_size=None, num_workers=options.workers or cores()))
    try:
        for images, _ in iterator:
            yield len(images), 0
    finally:
        del iterator  # the last reference: its workers are joined now, so their CPU time is counted


def _read_file(path: str) -> int:
    with open(path, "rb", buffering=0) as handle:
        return len(handle.read())


def file_counts(paths: list[str], concurrency: int) -> Counts:
    """Whole files, ``concurrency`` reads in flight (as many DataLoader workers would keep)."""
    from ..prefetch import ordered_map

    for size in ordered_map(_read_file, paths, threads=concurrency, depth=2 * concurrency):
        yield 1, size


# --- the run ------------------------------------------------------------------------------


@dataclass
class Report:
    dataset: dict
    options: dict
    stages: list[StageResult] = field(default_factory=list)
    files: StageResult | None = None
    model: list[iomodel.EpochEstimate] = field(default_factory=list)
    measured_disk: iomodel.DiskProfile | None = None
    decode_per_core: float | None = None
    notes: list[str] = field(default_factory=list)
    checks: list[modelcheck.Check] = field(default_factory=list)  # --hdd: the model's row against the stages
    cgroup: str | None = None  # --hdd: the throttle's cgroup while the stages ran (removed after)

    def stage(self, name: str) -> StageResult | None:
        return next((s for s in [*self.stages, self.files] if s is not None and s.name == name), None)

    @property
    def speedup(self) -> float | None:
        """Packed records per second over individual files per second (both raw, both cold or both warm)."""
        raw = self.stage("raw") or self.stage("crc")
        if raw is None or self.files is None or not self.files.images_per_s:
            return None
        return raw.images_per_s / self.files.images_per_s

    def as_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "options": self.options,
            "stages": [s.as_dict() for s in self.stages],
            "files": self.files.as_dict() if self.files else None,
            "speedup_packed_vs_files": self.speedup,
            "model": {
                "measured_disk": asdict(self.measured_disk) if self.measured_disk else None,
                "decode_per_core": self.decode_per_core,
                "cores": cores(),
                "ios_per_file": self.options["ios_per_file"],
                "estimates": [e.as_dict() for e in self.model],
            },
            "notes": self.notes,
            "hdd": None if self.options.get("hdd") is None else {
                **self.options["hdd"], "cgroup": self.cgroup, "checks": [check.as_dict() for check in self.checks]},
        }


def dataset_summary(path: str) -> dict:
    where = location(path)
    manifest = load_manifest(where)
    total = sum(shard.rec.bytes for shard in manifest.shards)
    return {
        "path": str(where) if where.is_remote else os.path.abspath(where.root),
        "records": manifest.num_records,
        "shards": manifest.num_shards,
        "bytes": total,
        "mean_record_bytes": total / manifest.num_records if manifest.num_records else 0.0,
    }


def shard_paths(path: str) -> list[str]:
    """The files a read touches: each shard's .rec and its record index."""
    manifest = mf.load(path)
    return [os.path.join(path, shard.rec.name) for shard in manifest.shards] + [
        os.path.join(path, shard.rpi.name) for shard in manifest.shards
    ]


def listed_files(options: BenchOptions) -> list[str]:
    """The list's image paths in a seeded shuffled order, cut to ``limit``."""
    from ..pack.sources import open_source

    paths = [item.path for item in open_source(options.vs_files, options.root)]
    random.Random(options.seed).shuffle(paths)
    return paths[: options.limit] if options.limit else paths


def run_stages(path: str, options: BenchOptions, report: Report) -> None:
    total = min(options.limit or report.dataset["records"], report.dataset["records"])
    remote = location(path).is_remote
    cold_paths = None if remote else shard_paths(path)  # a URL's bytes are in no page cache of ours
    per_record = report.dataset["mean_record_bytes"]
    starts = {
        "raw": (lambda: raw_counts(path, options, verify=False), None),
        "crc": (lambda: raw_counts(path, options, verify=True), None),
        "decode": (lambda: decode_counts(path, options), per_record),
        "loader": (lambda: loader_counts(path, options), per_record),
    }
    if remote:
        report.notes.append("remote dataset: every stage reads from the store (the page cache holds none of it)")
    elif not options.cold and options.stages:
        note = make_warm(cold_paths)
        report.notes.append(note or "warm cache: the shards were read into RAM first, so MB/s is the page cache's; "
                            "use --cold for the disk's")
    for name in options.stages:
        start, estimate = starts[name]
        report.stages.append(measure(name, start, total, options, cold_paths, estimate))


def run_files(options: BenchOptions, report: Report, paths: list[str]) -> None:
    if not options.cold:
        report.notes.append(make_warm(paths) or "files: read into RAM first (warm); use --cold for the disk's random reads")
    concurrency = options.workers or cores()
    report.files = measure("files", lambda: file_counts(paths, concurrency), len(paths), options, paths)


def add_notes(report: Report, options: BenchOptions) -> None:
    for result in [*report.stages, report.files]:
        if result is not None and result.cache is not None and result.cache.note:
            report.notes.append(f"{result.name}: {result.cache.note}")
    if any(s.bytes_estimated for s in report.stages):
        report.notes.append("MB/s of decode/loader: compressed bytes consumed, from records x mean record size")
    if report.files is not None and options.limit:
        report.notes.append("--limit: the files are a random sample of the list, the records a shuffled subset")


def fit_model(report: Report, options: BenchOptions) -> None:
    """Feed the measured rates into the I/O model for this dataset's size.

    The disk is modelled only from cold figures: sequential MB/s from the raw
    stage, random IOPS from the files stage (warm figures are RAM's).
    """
    decode = report.stage("decode") or report.stage("loader")
    if decode is not None and decode.cpu_seconds > 0:
        report.decode_per_core = decode.records / decode.cpu_seconds
    raw, files = report.stage("raw") or report.stage("crc"), report.files
    cold_raw = raw is not None and raw.cache is not None and raw.cache.cold and raw.mb_per_s > 0
    cold_files = files is not None and files.cache is not None and files.cache.cold and files.records > 0
    if cold_raw and cold_files:
        iops = iomodel.iops_from_file_rate(files.images_per_s, files.bytes / 1e3 / files.records, raw.mb_per_s)
        report.measured_disk = iomodel.DiskProfile("this disk (measured)", raw.mb_per_s, iops)
    elif cold_raw:
        disk = "the throttled disk" if options.hdd is not None else "this disk"
        report.notes.append(f"model: {disk}'s sequential rate is {raw.mb_per_s:,.0f} MB/s; add --vs-files LIST "
                            "to measure its random reads and model it too")
    presets = iomodel.PRESETS if options.hdd is None else tuple(  # the HDD row is the simulated disk's
        iomodel.DiskProfile("HDD", options.hdd.mb_s, options.hdd.iops) if profile is iomodel.HDD else profile
        for profile in iomodel.PRESETS)
    disks = presets if report.measured_disk is None else (report.measured_disk, *presets)
    report.model = iomodel.compare(report.dataset["records"], report.dataset["mean_record_bytes"] / 1e3, disks,
                                   report.decode_per_core, cores(), options.ios_per_file)


def prime(path: str, options: BenchOptions) -> None:
    """Import torch and run the reader once before any stage, so that no stage pays their one-off start-up."""
    import torch.utils.data  # noqa: F401

    steps = raw_counts(path, options, verify=True)
    next(steps, None)
    steps.close()


@contextmanager
def simulated_disk(paths: list[str], options: BenchOptions, report: Report) -> Iterator[None]:
    """With ``options.hdd``, the body's reads of the disks holding ``paths`` go at that disk's pace."""
    if options.hdd is None:
        yield
        return
    with throttled(paths, options.hdd) as group:
        report.cgroup = group
        report.notes.append(f"simulated HDD: {options.hdd.describe()} on the disk of the dataset"
                            f"{' and the files' if len(paths) > 1 else ''}, set by the cgroup {group} (removed after)")
        yield


def check_model(report: Report, options: BenchOptions) -> None:
    """--hdd: the model's row for the throttle's figures, held against each stage's measured rate."""
    disk = iomodel.DiskProfile("HDD", options.hdd.mb_s, options.hdd.iops)
    mean_kb = report.dataset["mean_record_bytes"] / 1e3
    measured = [(s.name, s.records, mean_kb, s.images_per_s) for s in report.stages if s.records]
    if report.files is not None and report.files.records:
        files = report.files
        measured.append(("files", files.records, files.bytes / 1e3 / files.records, files.images_per_s))
    report.checks = modelcheck.check(measured, disk, report.decode_per_core, cores(), options.ios_per_file)


def run(path: str, options: BenchOptions) -> Report:
    """Every asked-for stage over the dataset at ``path``, then the model's prediction for it."""
    if options.hdd is not None:
        options = replace(options, cold=True)  # the throttle sees only reads that reach the disk
    report = Report(dataset_summary(path), {**asdict(options), "cores": cores()})
    files = listed_files(options) if options.vs_files else []
    prime(path, options)
    with simulated_disk([path, *files[:: max(1, len(files) // 16)]], options, report):
        run_stages(path, options, report)
        if options.vs_files:
            run_files(options, report, files)
    add_notes(report, options)
    fit_model(report, options)
    if options.hdd is not None:
        check_model(report, options)
    return report


# --- output -------------------------------------------------------------------------------


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.0f}"


def _cache(result: StageResult) -> str:
    if result.cache is None:
        return "warm"
    if result.cache.resident is None:
        return "cold?"
    return f"cold ({result.cache.resident:.0%} cached)" if result.cache.cold else f"NOT cold ({result.cache.resident:.0%} cached)"


def format_stages(report: Report) -> str:
    header = (f"{'stage':<7} {'what':<38} {'images':>8} {'seconds':>8} {'images/s':>9} {'MB/s':>8} "
              f"{'CPU':>5} {'RSS MB':>7} {'PSS MB':>7}  cache")
    lines = [header]
    for s in [*report.stages, report.files]:
        if s is None:
            continue
        lines.append(
            f"{s.name:<7} {s.description:<38} {s.records:>8,} {s.seconds:>8.2f} {s.images_per_s:>9,.0f} "
            f"{s.mb_per_s:>8,.0f} {s.cpu_utilisation:>5.0%} {_mb(s.peak_rss):>7} {_mb(s.peak_pss):>7}  {_cache(s)}"
        )
    return "\n".join(lines)


def format_report(report: Report) -> str:
    d = report.dataset
    parts = [
        f"dataset {d['path']}: {d['records']:,} records in {d['shards']} shards, {d['bytes'] / 1e9:.2f} GB "
        f"({d['mean_record_bytes'] / 1e3:.0f} KB per record); {report.options['cores']} cores",
        "",
        format_stages(report),
        "CPU = CPU time of the process tree / wall time / cores; RSS, PSS = peak sums over the process tree "
        "(PSS counts shared pages once)",
    ]
    if report.speedup is not None:
        parts.append(f"packed / files (raw reads): {report.speedup:.1f}x")
    parts += ["", model_heading(report), iomodel.format_table(report.model)]
    if report.checks:
        parts += ["", modelcheck.format_checks(iomodel.DiskProfile("HDD", report.options["hdd"]["mb_s"],
                                                                   report.options["hdd"]["iops"]), report.checks)]
    if report.notes:
        parts += ["", *(f"note: {note}" for note in report.notes)]
    return "\n".join(parts)


def model_heading(report: Report) -> str:
    rate = f"{report.decode_per_core:,.0f} images/s per core measured" if report.decode_per_core else "decode not measured"
    return (f"I/O model: one epoch of {report.dataset['records']:,} images of "
            f"{report.dataset['mean_record_bytes'] / 1e3:.0f} KB on {cores()} cores ({rate}; "
            f"{report.options['ios_per_file']:g} random read per file)")


def model_only(
    dataset: str | None = None,
    images: int | None = None,
    mean_kb: float | None = None,
    decode_per_core: float | None = None,
    cores_: int | None = None,
    seq_mb_s: float | None = None,
    random_iops: float | None = None,
    ios_per_file: float = 1.0,
) -> tuple[str, dict]:
    """The model's table (text) and JSON for given figures, measuring nothing.

    Image count and size default to ``dataset``'s, else to ImageNet-21k's; a
    disk given by both ``seq_mb_s`` and ``random_iops`` is added to the presets.
    """
    if (seq_mb_s is None) != (random_iops is None):
        raise RecpackError("give both --seq-mb-s and --iops to model your own disk")
    if dataset is not None and (images is None or mean_kb is None):
        summary = dataset_summary(dataset)
        images = images or summary["records"]
        mean_kb = mean_kb or summary["mean_record_bytes"] / 1e3
    images, mean_kb = images or iomodel.IMAGENET_21K_IMAGES, mean_kb or iomodel.IMAGENET_MEAN_KB
    cores_ = cores_ or cores()
    disks = iomodel.PRESETS
    if seq_mb_s is not None:
        disks = (iomodel.DiskProfile("given", seq_mb_s, random_iops), *disks)
    estimates = iomodel.compare(images, mean_kb, disks, decode_per_core, cores_, ios_per_file)
    rate = f"{decode_per_core:,.0f} images/s per core" if decode_per_core else "decode not modelled"
    heading = (f"I/O model: one epoch of {images:,} images of {mean_kb:g} KB on {cores_} cores "
               f"({rate}; {ios_per_file:g} random read per file)")
    data = {"images": images, "mean_kb": mean_kb, "decode_per_core": decode_per_core, "cores": cores_,
            "ios_per_file": ios_per_file, "estimates": [e.as_dict() for e in estimates]}
    return heading + "\n" + iomodel.format_table(estimates), data
