"""The I/O model against a measurement: what ``iomodel`` predicts for each stage ``recpack bench`` ran.

After ``recpack bench --hdd`` every stage ran on a disk whose two figures are
known exactly (the throttle's), so the model's row for that disk can be held
against what the stages measured.  A stage's prediction is its layout's I/O
time (``iomodel.io_seconds``), and for the decoding stages the slower of that
and the decode time at the per-core rate the run measured.  A ratio below 1
means the reader fell short of the model; above 1, that the model is
pessimistic (for shards: it charges one seek per 64-record run, which the
read-ahead overlaps with transfer).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from . import iomodel

DECODING = ("decode", "loader")


@dataclass(frozen=True)
class Check:
    stage: str
    layout: str  # "shards" or "files"
    predicted: float  # images per second
    measured: float
    bound: str  # what the model says sets the pace: "I/O" or "decode"

    @property
    def ratio(self) -> float:
        return self.measured / self.predicted if self.predicted > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def predict(stage: str, images: int, mean_kb: float, disk: iomodel.DiskProfile, decode_per_core: float | None,
            cores: int, ios_per_file: float = 1.0) -> tuple[float, str]:
    """(images per second, bound) the model gives ``stage`` for ``images`` of ``mean_kb`` on ``disk``."""
    layout = "files" if stage == "files" else "shards"
    io = iomodel.io_seconds(images, mean_kb, disk, layout, ios_per_file=ios_per_file)
    decode = iomodel.decode_seconds(images, decode_per_core, cores) if stage in DECODING else None
    seconds = max(io, decode or 0.0)
    return images / seconds if seconds > 0 else 0.0, "decode" if (decode or 0.0) > io else "I/O"


def check(measured: list[tuple[str, int, float, float]], disk: iomodel.DiskProfile, decode_per_core: float | None,
          cores: int, ios_per_file: float = 1.0) -> list[Check]:
    """One check per (stage, images, mean KB, measured images/s)."""
    checks = []
    for stage, images, mean_kb, rate in measured:
        predicted, bound = predict(stage, images, mean_kb, disk, decode_per_core, cores, ios_per_file)
        checks.append(Check(stage, "files" if stage == "files" else "shards", predicted, rate, bound))
    return checks


def format_checks(disk: iomodel.DiskProfile, checks: list[Check]) -> str:
    lines = [f"the model's {disk.name} row ({disk.seq_mb_s:,.0f} MB/s, {disk.random_iops:,.0f} IOPS) against this run:",
             f"{'stage':<7} {'layout':<7} {'model img/s':>12} {'measured':>9} {'measured/model':>15}  model's bound"]
    for c in checks:
        lines.append(f"{c.stage:<7} {c.layout:<7} {c.predicted:>12,.0f} {c.measured:>9,.0f} {c.ratio:>15.2f}  {c.bound}")
    return "\n".join(lines)
