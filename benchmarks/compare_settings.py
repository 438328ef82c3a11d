"""Settings and helpers shared by compare.py and its packers (standard library only: the MXNet venv imports them too)."""

from __future__ import annotations

import io
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work"
RESULTS = HERE / "results"
MXNET_PYTHON = HERE / ".venv-mxnet" / "bin" / "python"
SHARDS = 64
RESIZE = 500  # shorter side for the "resized at pack time" variants (recpack --resize, FFCV max_resolution)
BATCH = 256
SIZE = 224
CPUS = os.cpu_count() or 1
RUN_TIMEOUT_S = 1800
# FFCV's read figure from issue #4, used only when FFCV does not build here.
# None: not supplied; the row then says so instead of showing a number.
FFCV_QUOTED_IMAGES_PER_S: float | None = None


class Unavailable(Exception):
    """A contender that cannot run here (not installed, not built yet): reported, not fatal."""


def pil_decode(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")
