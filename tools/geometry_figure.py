"""Draw what each geometry mode makes of one scene: image, mask (tinted) and boxes, as recpack decodes them.

    python tools/geometry_figure.py docs/geometry.png

Every panel is the real output of ``decode_image``, ``decode_mask`` and
``place_boxes`` for one mode (training draws from a fixed seed), shown at its
own pixel size on a checkerboard, so that a mode's output size and padding
are visible; the padding is hatched.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scenes  # noqa: E402
from recpack.read.decode import Augment, decode_image, decode_mask  # noqa: E402
from recpack.read.geometry import place_boxes  # noqa: E402

PANELS = [  # (title, Augment options, seed)
    ("random_resized_crop 160x160 (train)", dict(size=160), 3),
    ("center_crop 160x160 (eval)", dict(size=160, train=False), None),
    ("resize 150x260 (aspect not kept)", dict(size=(150, 260), mode="resize", train=False), None),
    ("letterbox 200x200, pad 114", dict(size=200, mode="letterbox", pad_value=114, train=False), None),
    ("scale_crop 180x240, zoom 0.5-2 (train)", dict(size=(180, 240), mode="scale_crop"), 11),
    ("scale_crop, zoomed out: padded", dict(size=(180, 240), mode="scale_crop", zoom=(0.45, 0.45)), 5),
    ("full: the image's own size", dict(mode="full", train=False), None),
]
TINT = np.array([[0, 0, 0], [255, 0, 0], [0, 80, 255], [255, 220, 0]], np.float32)
CELL = (340, 290)  # panel width, height


def encoded_scene() -> tuple[bytes, bytes, np.ndarray]:
    pixels, mask, boxes = scenes.scene(320, 224, seed=42, shapes=5)
    jpeg, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(pixels).save(jpeg, format="JPEG", quality=92)
    Image.fromarray(mask).save(png, format="PNG")
    return jpeg.getvalue(), png.getvalue(), boxes


def render(image: np.ndarray, mask: np.ndarray, boxes: np.ndarray) -> Image.Image:
    """Image with the mask's classes tinted over it, padding (ignore_index) hatched, boxes outlined."""
    out = image.astype(np.float32)
    shapes = (mask > 0) & (mask != 255)
    out[shapes] = 0.55 * out[shapes] + 0.45 * TINT[mask[shapes]]
    pad = mask == 255
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    out[pad & ((xx + yy) % 8 < 2)] = (40, 40, 40)
    picture = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    height, width = mask.shape
    for cls, x0, y0, x1, y1 in boxes[:, :5]:
        draw.rectangle((x0 * width, y0 * height, x1 * width - 1, y1 * height - 1), outline=(255, 255, 255), width=2)
    return picture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    jpeg, png, boxes = encoded_scene()
    font = ImageFont.load_default()
    panels = [("source 320x224: image, mask, boxes", dict(size=(224, 320), mode="full", train=False), None)] + PANELS
    columns = 4
    sheet = Image.new("RGB", (CELL[0] * columns, CELL[1] * -(-len(panels) // columns)), (250, 250, 250))
    for number, (title, options, seed) in enumerate(panels):
        augment = Augment(ignore_index=255, **options)
        image, placement = decode_image(jpeg, augment, random.Random(seed) if seed is not None else None)
        mask = decode_mask(png, placement, None, 255)
        picture = render(np.ascontiguousarray(image), mask, place_boxes(boxes, placement, 0.3))
        x, y = (number % columns) * CELL[0] + 10, (number // columns) * CELL[1] + 10
        board = Image.new("RGB", picture.size, (200, 200, 200))
        sheet.paste(board, (x, y + 18))
        sheet.paste(picture, (x, y + 18))
        draw = ImageDraw.Draw(sheet)
        draw.rectangle((x - 1, y + 17, x + picture.size[0], y + 18 + picture.size[1]), outline=(0, 0, 0))
        flip = ", flipped" if placement.flip else ""
        draw.text((x, y), f"{title}{flip}", fill=(0, 0, 0), font=font)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(args.out)


if __name__ == "__main__":
    main()
