"""What the read benchmark (compare.py) asks of every contender, and its packers' shared helper.

Standard library only: the MXNet venv imports it too.
"""

from __future__ import annotations

import io

SHARDS = 64
RESIZE = 500  # shorter side for the "resized at pack time" variants (recpack --resize, FFCV max_resolution)
BATCH = 256
SIZE = 224
# FFCV's read figure from issue #4, used only when FFCV does not build here.
# None: not supplied; the row then says so instead of showing a number.
FFCV_QUOTED_IMAGES_PER_S: float | None = None


def pil_decode(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")
