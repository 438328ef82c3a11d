"""What each libjpeg-turbo DCT scale M/8 costs, relative to a full-size decode.

Why it exists: ``recpack.jpeg.scales.dct_eighths`` (used by the reader and by
``recpack pack --resize``) chooses only the scales 1/8, 1/4, 1/2 and 1,
because libjpeg-turbo has SIMD inverse DCTs for those alone; the others run
in plain C and can cost more than decoding at full size.  This measures that
claim on the benchmark corpus, for a plain full-image decode (PyTurboJPEG)
and for ``_libjpeg.decode_region`` (the reader).  ``pack --resize``'s
``_libjpeg.shrink`` runs the same inverse DCTs.

Method: the first N colour JPEGs of the corpus are read into memory; each
round decodes all of them once at every scale, scales in a rotated order so
that no scale always runs first; the report is each scale's median time per
image over rounds and its ratio to full size.

Usage::

    python benchmarks/bench_dct_scales.py [--images 600] [--rounds 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

from turbojpeg import TJPF_RGB, TurboJPEG

from recpack.jpeg._libjpeg import decode_region
from recpack.jpeg.header import read_jpeg_header

HERE = Path(__file__).resolve().parent
SCALES = (8, 7, 6, 5, 4, 3, 2, 1)  # M of M/8


def turbojpeg_decode(tj: TurboJPEG, data: bytes, eighths: int) -> None:
    factor = None if eighths == 8 else (eighths // (g := math.gcd(eighths, 8)), 8 // g)
    tj.decode(data, pixel_format=TJPF_RGB, scaling_factor=factor)


def region_decode(data: bytes, eighths: int) -> None:
    info = read_jpeg_header(data)
    width, height = info.width, info.height
    decode_region(data, 0, 0, -(-width * eighths // 8), -(-height * eighths // 8), eighths)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=HERE / ".work" / "corpus-20000-s0")
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    files = sorted(args.corpus.glob("*/*.jpg"))
    if not files:
        sys.exit(f"bench_dct_scales: no JPEGs under {args.corpus} (benchmarks/make_corpus.py makes them)")
    images = [data for data in (f.read_bytes() for f in files[: args.images * 2]) if read_jpeg_header(data).components == 3]
    images = images[: args.images]
    tj = TurboJPEG()
    decoders = {"PyTurboJPEG decode (whole image)": lambda d, m: turbojpeg_decode(tj, d, m),
                "_libjpeg.decode_region (reader)": region_decode}
    times = {(name, m): [] for name in decoders for m in SCALES}
    for round_ in range(args.rounds):
        order = SCALES[round_ % len(SCALES):] + SCALES[: round_ % len(SCALES)]
        for name, decode in decoders.items():
            for m in order:
                start = time.perf_counter()
                for data in images:
                    decode(data, m)
                times[name, m].append((time.perf_counter() - start) / len(images))
    print(f"{len(images)} colour JPEGs from {args.corpus}, {args.rounds} rounds; median ms per image "
          f"(ratio to full size)")
    for name in decoders:
        full = statistics.median(times[name, 8])
        cells = [f"{m}/8 {statistics.median(times[name, m]) * 1e3:.2f} ({statistics.median(times[name, m]) / full:.2f})"
                 for m in SCALES]
        print(f"{name}:\n  " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
