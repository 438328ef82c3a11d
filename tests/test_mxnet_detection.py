"""Detection records written by MXNet's own writer (as im2rec writes a detection .lst) read with their boxes.

The labels are MXNet's detection vectors ``[2, 5, class, xmin, ymin, xmax, ymax, ...]``, as many
objects as each image has; MXNet runs in its own venv (see test_mxnet_interop.py).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from recpack import Augment, Detection, RecordDataset
from test_mxnet_interop import mxnet_python, probe  # noqa: F401  (the MXNet venv fixture)

pytestmark = pytest.mark.mxnet

COLOURS = np.array([[60, 60, 60], [230, 30, 30], [30, 200, 40], [40, 60, 230], [240, 230, 40]])


def rectangles(seed: int) -> tuple[bytes, list[float], tuple[int, int]]:
    """A JPEG of 1-4 disjoint flat rectangles (class = colour), its detection labels, its (width, height)."""
    rng = np.random.default_rng(seed)
    width, height = int(rng.integers(160, 320)), int(rng.integers(120, 240))
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[...] = COLOURS[0]
    labels = [2.0, 5.0]
    for cls in range(1, int(rng.integers(2, 6))):
        x0, x1 = (cls - 1) * width // 4 + 3, cls * width // 4 - 3
        y0 = int(rng.integers(0, height // 2))
        y1 = int(rng.integers(y0 + 20, height))
        pixels[y0:y1, x0:x1] = COLOURS[cls]
        labels += [cls, x0 / width, y0 / height, x1 / width, y1 / height]
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=95)
    return out.getvalue(), labels, (width, height)


@pytest.fixture(scope="module")
def mxnet_detection_rec(mxnet_python, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("mxdet")
    scenes = [rectangles(seed) for seed in range(12)]
    items = [{"label": labels, "id": index, "image": jpeg.hex()} for index, (jpeg, labels, _) in enumerate(scenes)]
    probe(mxnet_python, "write", root / "det.rec", root / "det.idx", stdin=json.dumps(items))
    return str(root / "det.rec"), scenes


def by_size(scenes):
    """Stored boxes by source (width, height), which are distinct here: the reader's order is its own."""
    table = {size: np.array(labels[2:], np.float32).reshape(-1, 5) for _, labels, size in scenes}
    assert len(table) == len(scenes)
    return table


def test_letterboxed_boxes_are_the_hand_computed_ones(mxnet_detection_rec):
    rec, scenes = mxnet_detection_rec
    ds = RecordDataset(rec, batch_size=12, augment=Augment(size=(100, 140), mode="letterbox", train=False),
                       detection=Detection(), placements=True, shuffle=False)
    _, boxes, placements = next(iter(ds))
    assert boxes.shape == (12, 4, 5)  # the widest record: 2 + 4 * 5 labels
    stored = by_size(scenes)
    for rows, placement in zip(boxes.numpy(), placements.numpy()):
        width, height = int(placement[9]), int(placement[10])
        scale = min(140 / width, 100 / height)  # by hand: fit, centre, normalise to the 100x140 canvas
        drawn_w, drawn_h = round(width * scale), round(height * scale)
        left, top = (140 - drawn_w) // 2, (100 - drawn_h) // 2
        objects = stored[width, height]
        expected = objects.copy()
        expected[:, [1, 3]] = (left + objects[:, [1, 3]] * drawn_w) / 140
        expected[:, [2, 4]] = (top + objects[:, [2, 4]] * drawn_h) / 100
        assert np.allclose(rows[: len(objects)], expected, atol=1e-5)
        assert (rows[len(objects):] == -1).all()


def test_boxes_bound_their_pixels_after_random_crops_and_flips(mxnet_detection_rec):
    rec, _ = mxnet_detection_rec
    ds = RecordDataset(rec, batch_size=12, augment=Augment(size=(96, 128), scale=(0.3, 1.0)),
                       detection=Detection(min_visible=0.3), seed=1)
    kept = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        images, boxes = next(iter(ds))
        pixels = images.permute(0, 2, 3, 1).numpy().astype(np.int32)
        classes = ((pixels[..., None, :] - COLOURS) ** 2).sum(-1).argmin(-1)
        for image_classes, rows in zip(classes, boxes.numpy()):
            for cls, x0, y0, x1, y1 in rows[rows[:, 0] >= 0]:
                ys, xs = np.nonzero(image_classes == cls)
                found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
                assert np.abs(found - [x0 * 128, y0 * 96, x1 * 128, y1 * 96]).max() <= 1.5
                kept += 1
    assert kept > 40
