"""How long an epoch takes: individual image files read in random order versus packed shards.

A back-of-the-envelope model, so that a user can see before packing (or from
``recpack bench``'s measurements) whether their disk or their CPUs bound an epoch.

    files   every image is one random read: ``ios_per_file`` seeks (1/IOPS each)
            plus its transfer at the sequential rate.  1 is the optimistic case
            (directories and inodes cached); a cold metadata cache adds an inode
            read and sometimes a directory block, i.e. 2-3.
    shards  the bytes at the sequential rate, plus one seek per run of
            ``run_records`` consecutive records (recpack's ``ReadOptions.window``:
            the reader hops between shards to shuffle).
    decode  images / (per-core rate x cores).  Reading and decoding overlap
            (read-ahead, decode threads), so the epoch is the larger of the two.

Units: 1 KB = 1000 bytes, 1 MB = 10**6 bytes (as disks are specified).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..read.options import ReadOptions

DEFAULT_RUN_RECORDS = ReadOptions.window  # the reader's default window: records read in one run


@dataclass(frozen=True)
class DiskProfile:
    """A disk's two figures that matter: streaming bandwidth and random reads per second."""

    name: str
    seq_mb_s: float
    random_iops: float  # at the queue depth a data loader keeps (a few to a few dozen reads)


# Typical figures, rounded.  IOPS for the flash drives are for ~8 outstanding
# reads: between the datasheets' queue-depth-1 (~10-20k) and QD32 figures.
HDD = DiskProfile("HDD", 170, 110)
# 7200 rpm 3.5" drive: ~8.5 ms average seek + 4.2 ms half rotation is ~80 IOPS at QD1, ~110 with
# command queueing; 150-250 MB/s sequential outer to inner tracks.  These are issue #4's figures.
SATA_SSD = DiskProfile("SATA SSD", 550, 40_000)
# Capped by SATA 6 Gb/s (~560 MB/s on e.g. Samsung 870 EVO's datasheet; ~98k IOPS at QD32, ~13k at QD1).
NVME = DiskProfile("NVMe SSD", 3_000, 200_000)
# PCIe 3.0 x4 drives read ~3.5 GB/s sequentially (Samsung 970 EVO Plus datasheet); 4K random reads
# reach ~500k+ IOPS only at QD32 x 4 threads, ~15-20k at QD1.
PRESETS = (HDD, SATA_SSD, NVME)

IMAGENET_21K_IMAGES = 14_200_000
IMAGENET_MEAN_KB = 110  # ImageNet training JPEGs average ~110 KB


@dataclass(frozen=True)
class EpochEstimate:
    """One prediction, broken down so that the bound (disk or CPU) is visible."""

    disk: DiskProfile
    layout: str  # "files" or "shards"
    images: int
    mean_kb: float
    io_seconds: float
    decode_seconds: float | None  # None: decoding not modelled (no rate given)

    @property
    def epoch_seconds(self) -> float:
        """Reading and decoding overlap, so the slower of the two sets the pace."""
        return max(self.io_seconds, self.decode_seconds or 0.0)

    @property
    def bound(self) -> str:
        return "decode" if (self.decode_seconds or 0.0) > self.io_seconds else "I/O"

    def as_dict(self) -> dict:
        return {
            "disk": self.disk.name,
            "seq_mb_s": self.disk.seq_mb_s,
            "random_iops": self.disk.random_iops,
            "layout": self.layout,
            "images": self.images,
            "mean_kb": self.mean_kb,
            "io_seconds": self.io_seconds,
            "decode_seconds": self.decode_seconds,
            "epoch_seconds": self.epoch_seconds,
            "bound": self.bound,
        }


def transfer_seconds(images: int, mean_kb: float, disk: DiskProfile) -> float:
    return images * mean_kb * 1e3 / (disk.seq_mb_s * 1e6)


def io_seconds(
    images: int,
    mean_kb: float,
    disk: DiskProfile,
    layout: str,
    run_records: int = DEFAULT_RUN_RECORDS,
    ios_per_file: float = 1.0,
) -> float:
    """Seconds the disk needs to deliver one epoch's bytes in ``layout``'s access pattern."""
    if layout == "files":
        seeks = images * ios_per_file
    elif layout == "shards":
        seeks = -(-images // max(run_records, 1))
    else:
        raise ValueError(f"layout must be 'files' or 'shards', not {layout!r}")
    return seeks / disk.random_iops + transfer_seconds(images, mean_kb, disk)


def decode_seconds(images: int, decode_per_core: float | None, cores: int) -> float | None:
    if not decode_per_core:
        return None
    return images / (decode_per_core * max(cores, 1))


def epoch_time(
    images: int,
    mean_kb: float,
    disk: DiskProfile,
    decode_per_core: float | None,
    cores: int,
    layout: str = "files",
    run_records: int = DEFAULT_RUN_RECORDS,
    ios_per_file: float = 1.0,
) -> EpochEstimate:
    """Predicted epoch of ``images`` JPEGs of ``mean_kb`` on ``disk``, decoded on ``cores`` cores."""
    return EpochEstimate(
        disk,
        layout,
        images,
        mean_kb,
        io_seconds(images, mean_kb, disk, layout, run_records, ios_per_file),
        decode_seconds(images, decode_per_core, cores),
    )


def compare(
    images: int,
    mean_kb: float,
    disks: tuple[DiskProfile, ...] = PRESETS,
    decode_per_core: float | None = None,
    cores: int = 1,
    ios_per_file: float = 1.0,
) -> list[EpochEstimate]:
    """Files and shards on every disk: the table ``recpack bench`` prints."""
    return [
        epoch_time(images, mean_kb, disk, decode_per_core, cores, layout, ios_per_file=ios_per_file)
        for disk in disks
        for layout in ("files", "shards")
    ]


def iops_from_file_rate(files_per_s: float, mean_kb: float, seq_mb_s: float) -> float:
    """The random IOPS that make the model reproduce a measured files/s (its transfer time removed)."""
    per_file = 1 / files_per_s - mean_kb * 1e3 / (seq_mb_s * 1e6)
    return 1 / per_file if per_file > 0 else files_per_s  # transfer-bound: no seek cost left to see


def human_time(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def compare_layouts(files: EpochEstimate, shards: EpochEstimate) -> str:
    """One line on what shards gain over files; "no faster" when decoding sets both epochs' pace."""
    ratio = files.epoch_seconds / shards.epoch_seconds
    if ratio < 1.05:
        return f"shards are no faster than files per epoch here ({files.bound} sets the pace of both)"
    return f"shards are {ratio:.1f}x faster than files per epoch"


def format_table(estimates: list[EpochEstimate]) -> str:
    """A plain-text table, one row per disk and layout, with files/shards ratios."""
    lines = [f"{'disk':<24} {'MB/s':>7} {'IOPS':>8} {'layout':<7} {'I/O':>9} {'decode':>9} {'epoch':>9}  bound"]
    for e in estimates:
        decode = human_time(e.decode_seconds) if e.decode_seconds is not None else "-"
        lines.append(
            f"{e.disk.name:<24} {e.disk.seq_mb_s:>7,.0f} {e.disk.random_iops:>8,.0f} {e.layout:<7} "
            f"{human_time(e.io_seconds):>9} {decode:>9} {human_time(e.epoch_seconds):>9}  {e.bound}"
        )
    by_disk: dict[str, dict[str, EpochEstimate]] = {}
    for e in estimates:
        by_disk.setdefault(e.disk.name, {})[e.layout] = e
    for name, pair in by_disk.items():
        if {"files", "shards"} <= pair.keys():
            lines.append(f"{name}: {compare_layouts(pair['files'], pair['shards'])}")
    return "\n".join(lines)
