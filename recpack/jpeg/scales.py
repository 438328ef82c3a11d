"""Which DCT scale to decode a JPEG at: shared by the reader's crops and the packer's --resize."""

from __future__ import annotations


def dct_eighths(shorter: int, size: int) -> int:
    """The DCT scale M/8 (M = 1, 2, 4 or 8) to decode at so that ``shorter`` pixels still cover ``size``.

    Decoding smaller saves inverse-DCT, upsampling and colour-conversion work,
    and the result is an area-averaged downscale, so nothing is lost that the
    resize would keep.  libjpeg-turbo can scale by any M/8, but only 1/8, 1/4
    and 1/2 (and 1) have SIMD inverse DCTs: on the benchmark corpus 5/8, 3/4
    and 7/8 take 1.2-1.8x as long as a full-size decode and 3/8 longer than 1/2
    (benchmarks/bench_dct_scales.py), so those scales are never chosen.
    """
    return next((m for m in (1, 2, 4) if shorter * m >= size * 8), 8)
