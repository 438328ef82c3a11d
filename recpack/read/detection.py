"""Detection labels in MXNet's layout, as im2rec's detection ``.lst`` files and ``ImageDetIter`` define them.

A record's label vector is::

    [A, B, header extras (A - 2 values, e.g. the image's width and height),
     class, xmin, ymin, xmax, ymax, object extras (B - 5 values),   <- one object: B values
     class, xmin, ...]

``A`` (>= 2) is the header's width and ``B`` (>= 5) each object's; corners are
normalised to 0-1 of the image's width and height.  Rows whose corners do
not make a box (xmax <= xmin or ymax <= ymin, e.g. -1 padding) are dropped,
as ``ImageDetIter`` drops them.  After the geometry (``geometry.place_boxes``)
a batch holds the objects as a ``(B, max_objects, object_width)`` array
padded with rows of -1, MXNet's ``label_pad_value``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD = -1.0


@dataclass(frozen=True)
class Detection:
    """Read the label vector as MXNet detection labels and move the boxes with every crop, resize, pad and flip.

    ``min_visible``: a box is kept when at least this fraction of its area is
    still inside the output image after the crop (MXNet's
    ``min_eject_coverage``, whose default is also 0.3); the kept part is
    clipped.  ``object_width``: values per object (5; 6 for lists with a
    'difficult' flag), the same for every record.
    """

    min_visible: float = 0.3
    object_width: int = 5

    def __post_init__(self) -> None:
        if not 0 <= self.min_visible <= 1:
            raise ValueError("Detection.min_visible must be between 0 and 1")
        if self.object_width < 5:
            raise ValueError("Detection.object_width must be at least 5 (class, xmin, ymin, xmax, ymax)")

    def max_objects(self, label_width: int) -> int:
        """Rows per record in a batch: the most objects a label vector of ``label_width`` values can hold."""
        return max((label_width - 2) // self.object_width, 0)


def objects_of(labels: np.ndarray, object_width: int) -> np.ndarray:
    """The valid objects of one label vector, ``(n, object_width)`` float32; ValueError saying what is wrong."""
    raw = np.asarray(labels, np.float32).ravel()
    if len(raw) < 2:
        raise ValueError(f"detection labels need a header [A, B, ...], the record has {len(raw)} label(s)")
    header, width = int(raw[0]), int(raw[1])
    if header < 2 or header != raw[0] or width != raw[1] or header > len(raw):
        raise ValueError(f"detection labels start with a header width A >= 2, got {raw[0]:g} "
                         f"({len(raw)} labels; is this a detection dataset?)")
    if width != object_width:
        raise ValueError(f"the record's objects have {width:g} values each, Detection(object_width={object_width})")
    body = raw[header:]
    if len(body) % width:
        raise ValueError(f"{len(body)} object values after a {header}-value header are not whole objects of {width}")
    objects = body.reshape(-1, width)
    valid = (objects[:, 3] > objects[:, 1]) & (objects[:, 4] > objects[:, 2])
    return objects[valid]


def padded(objects: np.ndarray, rows: int, object_width: int) -> np.ndarray:
    """``objects`` in a ``(rows, object_width)`` array, the rest rows of -1 (a single sample's fixed-size target)."""
    out = np.full((rows, object_width), PAD, np.float32)
    out[: len(objects)] = objects[:rows]
    return out
