"""What each step of ``pack --resize`` costs, through RGB pixels and through YUV planes.

Why it exists: ``--resize 256`` missed its target (2x FFCV's writer) while
the three library calls it made -- decode to RGB, Pillow resize, encode --
were themselves under 2x FFCV on 2 cores.  A pipeline that never leaves YCbCr
(decode to planes, resize each plane, encode from planes) skips the colour
conversion and chroma resampling on both sides.  This measured, per image,
each step both ways, to say what such a pipeline could save before anyone
wrote it.  (Pillow-SIMD's resize is vectorised for 4-byte pixels only, so its
single-plane ``L`` resize is slow: the plane resize had to be our own.)  That
pipeline is now ``_libjpeg.shrink``, which the packer uses; its last row is
that one call per image, all three steps together.

Method: the first N corpus JPEGs that libjpeg-turbo can decode to planes are
read into memory; each step runs over all of them on inputs prepared by the
step before, best of ``--rounds``; milliseconds per image, 1 process.

Usage::

    .venv/bin/python benchmarks/bench_resize_paths.py [--images 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from turbojpeg import TJPF_RGBX, TJSAMP_420, TurboJPEG

from corpus_cache import ensure_corpus, read_list
from recpack.jpeg._libjpeg import shrink

SHORTER = 256
QUALITY = 95


def shrunk(width: int, height: int) -> tuple[int, int]:
    scale = SHORTER / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def per_image_ms(step: Callable, inputs: Sequence, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for item in inputs:
            step(item)
        best = min(best, time.perf_counter() - started)
    return best / len(inputs) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tj = TurboJPEG()
    root = ensure_corpus(20_000, 0)
    jpegs = []
    for path, _ in read_list(root / "list.txt")[: args.images]:
        data = (root / path).read_bytes()
        try:
            tj.decode_to_yuv_planes(data)
        except (OSError, ValueError):  # progressive or grey files PyTurboJPEG cannot give as planes
            continue
        jpegs.append(data)

    def rgb_resize(pixels: np.ndarray) -> Image.Image:
        height, width = pixels.shape[:2]
        image = Image.frombuffer("RGBX", (width, height), pixels, "raw", "RGBX", 0, 1)
        return image.resize(shrunk(width, height), Image.Resampling.BILINEAR)

    def plane_resize(planes: list[np.ndarray]) -> list[np.ndarray]:
        height, width = planes[0].shape
        size = shrunk(width, height)
        sizes = [size, ((size[0] + 1) // 2, (size[1] + 1) // 2), ((size[0] + 1) // 2, (size[1] + 1) // 2)]
        return [np.asarray(Image.fromarray(np.ascontiguousarray(plane)).resize(target, Image.Resampling.BILINEAR))
                for plane, target in zip(planes, sizes)]

    def yuv_encode(planes: list[np.ndarray]) -> bytes:
        height, width = planes[0].shape
        return tj.encode_from_yuv(np.concatenate([plane.ravel() for plane in planes]), height, width,
                                  quality=QUALITY, jpeg_subsample=TJSAMP_420)

    rgb = [tj.decode(data, pixel_format=TJPF_RGBX) for data in jpegs]
    planes = [tj.decode_to_yuv_planes(data) for data in jpegs]
    rgb_small = [rgb_resize(pixels) for pixels in rgb]
    planes_small = [plane_resize(p) for p in planes]
    steps = {
        "rgb": (
            per_image_ms(lambda data: tj.decode(data, pixel_format=TJPF_RGBX), jpegs, args.rounds),
            per_image_ms(rgb_resize, rgb, args.rounds),
            per_image_ms(lambda image: tj.encode(np.asarray(image), quality=QUALITY, pixel_format=TJPF_RGBX,
                                                 jpeg_subsample=TJSAMP_420), rgb_small, args.rounds),
        ),
        "yuv planes": (
            per_image_ms(tj.decode_to_yuv_planes, jpegs, args.rounds),
            per_image_ms(plane_resize, planes, args.rounds),
            per_image_ms(yuv_encode, planes_small, args.rounds),
        ),
    }
    sized = [(data, *shrunk(width, height)) for data, (height, width) in zip(jpegs, (p[0].shape for p in planes))]
    recpack_total = per_image_ms(lambda job: shrink(job[0], 8, job[1], job[2], QUALITY), sized, args.rounds)
    print(f"{len(jpegs)} corpus JPEGs, shorter side -> {SHORTER}, quality {QUALITY}; ms per image, 1 process")
    print(f"{'path':<20}{'decode':>9}{'resize':>9}{'encode':>9}{'total':>9}")
    for name, (decode, resize, encode) in steps.items():
        print(f"{name:<20}{decode:>9.3f}{resize:>9.3f}{encode:>9.3f}{decode + resize + encode:>9.3f}")
    print(f"{'recpack shrink':<20}{'':>9}{'':>9}{'':>9}{recpack_total:>9.3f}")


if __name__ == "__main__":
    main()
