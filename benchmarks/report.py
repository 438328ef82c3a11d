"""Markdown for the benchmark reports: tables, numbers, and the lines every report opens with.

``machine_lines`` says when, on what machine, with which interpreter and
package versions (those of the MXNet venv and the system's libjpeg-turbo
included) and how loaded the machine was: the same description for every
report.  Standard library only.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Sequence

from settings import CPUS, MXNET_PYTHON, REPO

# Distributions named in the reports, where installed (others are left out).
DISTS = ("recpack", "torch", "torchvision", "numpy", "pillow-simd", "Pillow", "PyTurboJPEG", "tfrecord", "lmdb",
         "webdataset", "mosaicml-streaming", "litdata", "ffcv", "numba", "opencv-python", "matplotlib")


def fmt(value: float | None, spec: str = ",.0f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def per_round(values: Iterable[float | None], spec: str = ",.0f") -> str:
    return " / ".join(fmt(v, spec) for v in values) or "-"


def mib(n: int | None) -> str:
    return fmt(n / 2**20 if n else None)


def table(header: Sequence[str], align: str, rows: Iterable[Sequence[str]]) -> list[str]:
    """A markdown table; ``align`` has one letter a column: l(eft), r(ight) or c(entre)."""
    rule = {"l": "---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule[a] for a in align) + "|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "/") for cell in row) + " |" for row in rows]
    return lines


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _run(cmd: list[str]) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "?")
    except OSError:
        return platform.processor() or "?"


def _memory() -> str:
    try:
        return f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB RAM"
    except (ValueError, OSError):
        return "? RAM"


def packages() -> str:
    rev = _run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    found = [f"{d} {v}" + (f" (git {rev}, working tree)" if d == "recpack" and rev else "")
             for d in DISTS if (v := _version(d))]
    if MXNET_PYTHON.exists():
        probe = ("import mxnet, numpy; print(mxnet.__version__, numpy.__version__)\n"
                 "try:\n    import cv2; print(cv2.__version__)\nexcept ImportError:\n    print('-')")
        versions = (_run([str(MXNET_PYTHON), "-c", probe]) or "").split()
        if len(versions) == 3:
            found.append(f"mxnet {versions[0]} (own venv, numpy {versions[1]}, opencv {versions[2]})")
    deb = _run(["dpkg-query", "-W", "-f=${Version}", "libturbojpeg0"])
    if deb:
        found.append(f"libturbojpeg0 (Debian) {deb}")
    try:
        from PIL import features

        found.append(f"libjpeg-turbo (Pillow) {features.version('libjpeg_turbo')}")
    except Exception:  # noqa: BLE001, S110  (no PIL, or a PIL without that feature)
        pass
    return ", ".join(found)


def load_average() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def machine_lines(command: Sequence[str] | None = None) -> list[str]:
    """Date, machine, interpreter, packages (and the command that made the report), as markdown bullets."""
    lines = [f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
             f"- machine: {CPUS} cores ({_cpu_model()}), {_memory()}, {platform.platform()}",
             f"- python: {platform.python_version()} ({sys.executable})",
             f"- packages: {packages()}"]
    if command is not None:
        lines.append(f"- command: `{' '.join(command)}`")
    return lines
