"""A simulated slow disk: a block-I/O throttle on this process (and its children) through a cgroup.

``recpack bench --hdd`` runs its cold stages inside ``throttled(folder, Throttle(...))``, so
that they read the dataset's disk at a hard drive's pace (110 read IOPS and 170 MB/s by
default, issue #4's figures) whatever the real disk is.  The throttle is the kernel's:

    cgroup v1   a child of the blkio hierarchy with ``blkio.throttle.read_iops_device`` and
                ``blkio.throttle.read_bps_device`` set for the disk
    cgroup v2   a child of the root with ``io.max`` = ``riops=... rbps=...`` for the disk
                (the ``io`` controller enabled in the root's ``cgroup.subtree_control``)

Both count I/Os as the bios a read submits, before the block layer merges them: a
read that the kernel builds from 4 KiB pages, at most 256 to a bio, costs one I/O per
MiB.  Only reads that reach the disk are throttled, so evict the files first.

The process is moved into the cgroup on entry; DataLoader workers it forks inherit it.
On exit it is moved back where it was and the cgroup is removed.  Writing to cgroupfs
needs root: without it, or without either controller, ``ThrottleError`` says what to do.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

from ..errors import RecpackError

CGROUP_ROOT = "/sys/fs/cgroup"


class ThrottleError(RecpackError):
    """The throttle cannot be set up here; the message says why and what to do."""


@dataclass(frozen=True)
class Throttle:
    """A disk's two limits: random reads per second and bandwidth (1 MB = 10**6 bytes)."""

    iops: int = 110
    mb_s: float = 170.0

    def __post_init__(self) -> None:
        if self.iops < 1 or self.mb_s <= 0:
            raise ValueError("the throttle needs at least 1 IOPS and a positive MB/s")

    @property
    def bytes_per_s(self) -> int:
        return int(self.mb_s * 1e6)

    def describe(self) -> str:
        return f"{self.iops:,} read IOPS, {self.mb_s:,.0f} MB/s"


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def disk_of(path: str, sysfs: str = "/sys") -> str:
    """``MAJ:MIN`` of the whole disk that holds ``path`` (a partition's parent disk).

    The throttle is set per disk: the kernel refuses a partition's numbers.
    """
    st_dev = os.stat(path).st_dev
    number = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    link = os.path.join(sysfs, "dev", "block", number)
    if not os.path.exists(link):
        raise ThrottleError(f"{path} is not on a block device ({number}: a network, memory or overlay "
                            "filesystem?): the throttle needs a disk; put the dataset on one")
    device = os.path.realpath(link)
    if os.path.exists(os.path.join(device, "partition")):
        device = os.path.dirname(device)
    return _read(os.path.join(device, "dev")).strip()


@dataclass(frozen=True)
class Layout:
    """Where the throttle lives: cgroup ``version`` 1 or 2, and the hierarchy's folder."""

    version: int
    hierarchy: str


def find_layout(root: str = CGROUP_ROOT) -> Layout:
    """The cgroup hierarchy with a block-I/O controller: v1's blkio if mounted, else v2 with ``io``."""
    blkio = os.path.join(root, "blkio")
    if os.path.exists(os.path.join(blkio, "blkio.throttle.read_iops_device")):
        return Layout(1, blkio)
    controllers = os.path.join(root, "cgroup.controllers")
    if os.path.exists(controllers) and "io" in _read(controllers).split():
        return Layout(2, root)
    raise ThrottleError(f"no block-I/O controller under {root} (neither cgroup v1 blkio nor cgroup v2 io): "
                        "mount one, or measure on the real disk with --cold")


def limit_lines(layout: Layout, disk: str, throttle: Throttle) -> list[tuple[str, str]]:
    """(file in the cgroup, line to write) that set the throttle on ``disk``; one line per write."""
    if layout.version == 1:
        return [("blkio.throttle.read_iops_device", f"{disk} {throttle.iops}"),
                ("blkio.throttle.read_bps_device", f"{disk} {throttle.bytes_per_s}")]
    return [("io.max", f"{disk} riops={throttle.iops} rbps={throttle.bytes_per_s}")]


def current_cgroup(layout: Layout, proc_cgroup: str = "/proc/self/cgroup") -> str:
    """This process's cgroup folder in ``layout``'s hierarchy (to move it back there afterwards)."""
    for line in _read(proc_cgroup).splitlines():
        number, controllers, relative = line.split(":", 2)
        if (layout.version == 1 and "blkio" in controllers.split(",")) or (layout.version == 2 and number == "0"):
            return os.path.join(layout.hierarchy, relative.lstrip("/"))
    return layout.hierarchy


def _check_root() -> None:
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise ThrottleError("--hdd throttles reads through a cgroup, which needs root: run it as root (sudo), "
                            "or measure this disk with --cold, or model a hard drive with --model")


def _enable_io(layout: Layout) -> None:
    """cgroup v2: the ``io`` controller must be on in the root's subtree for a child to have ``io.max``."""
    control = os.path.join(layout.hierarchy, "cgroup.subtree_control")
    if "io" not in _read(control).split():
        _write(control, "+io")


@contextmanager
def throttled(paths: str | Sequence[str], throttle: Throttle) -> Iterator[str]:
    """Run the body with this process's reads of the disks holding ``paths`` (one or several) throttled.

    Yields the cgroup's folder.
    """
    _check_root()
    layout = find_layout()
    disks = sorted({disk_of(path) for path in ([paths] if isinstance(paths, str) else paths)})
    home = current_cgroup(layout)
    group = os.path.join(layout.hierarchy, f"recpack-bench-{os.getpid()}")
    try:
        if layout.version == 2:
            _enable_io(layout)
        os.makedirs(group, exist_ok=True)
        for disk in disks:
            for file, line in limit_lines(layout, disk, throttle):
                _write(os.path.join(group, file), line)
        _write(os.path.join(group, "cgroup.procs"), str(os.getpid()))
    except OSError as error:
        _remove(group)
        raise ThrottleError(f"could not set the throttle in {group}: {error.strerror or error}") from None
    try:
        yield group
    finally:
        _write(os.path.join(home, "cgroup.procs"), str(os.getpid()))
        _remove(group)


def _remove(group: str, attempts: int = 50) -> None:
    """rmdir the cgroup, waiting a little for exiting children (DataLoader workers) to leave it."""
    for _ in range(attempts):
        try:
            os.rmdir(group)
            return
        except FileNotFoundError:
            return
        except OSError:  # EBUSY: a child process has not finished exiting
            time.sleep(0.1)
    raise ThrottleError(f"the throttle's cgroup {group} still holds processes: remove it with rmdir once they exit")
