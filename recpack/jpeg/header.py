"""Read what a JPEG says about itself without decoding it: size, components, EXIF orientation.

This is the cheap check behind ``recpack pack --check header``: it walks the
marker segments up to the first scan and makes sure an end-of-image marker
follows.  A file cut short anywhere is caught: the marker 0xFFD9 cannot occur
inside entropy-coded data (0xFF there is always followed by 0x00 or a restart
marker), so its absence after the scan means the file was truncated.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import BadImageError

SOI, EOI, SOS, APP1 = 0xD8, 0xD9, 0xDA, 0xE1
_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOFn, not DHT/JPG/DAC
_PROGRESSIVE_MARKERS = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn
_EXIF_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class JpegInfo:
    width: int
    height: int
    components: int  # 1 gray, 3 YCbCr/RGB, 4 CMYK/YCCK
    progressive: bool
    orientation: int  # EXIF orientation 1..8; 1 when absent or unreadable


def is_jpeg(data: bytes | memoryview) -> bool:
    return bytes(data[:3]) == b"\xff\xd8\xff"


def exif_orientation(segment: bytes) -> int:
    """The orientation tag of an APP1 'Exif' segment body; 1 if absent or malformed."""
    if segment[:6] != b"Exif\x00\x00":
        return 1
    tiff = segment[6:]
    order = {b"II": "<", b"MM": ">"}.get(bytes(tiff[:2]))
    if order is None or len(tiff) < 8:
        return 1
    (ifd_offset,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd_offset + 2 > len(tiff):
        return 1
    (count,) = struct.unpack_from(order + "H", tiff, ifd_offset)
    for entry in range(count):
        position = ifd_offset + 2 + 12 * entry
        if position + 12 > len(tiff):
            return 1
        tag, kind = struct.unpack_from(order + "HH", tiff, position)
        if tag == _EXIF_ORIENTATION_TAG and kind == 3:  # SHORT
            (value,) = struct.unpack_from(order + "H", tiff, position + 8)
            return value if 1 <= value <= 8 else 1
    return 1


def _ends_after(data: bytes | memoryview, position: int) -> bool:
    """Whether an end-of-image marker follows ``position``; it is usually the last two bytes."""
    if bytes(data[-2:]) == b"\xff\xd9":
        return True
    return bytes(data[position:]).rfind(b"\xff\xd9") >= 0


def read_jpeg_header(data: bytes | memoryview, require_end: bool = True) -> JpegInfo:
    """Parse the headers of a JPEG, or raise BadImageError saying what is wrong.

    ``require_end`` also demands the end-of-image marker (a complete file);
    readers whose bytes are already checksummed skip that scan.
    """
    if not is_jpeg(data):
        raise BadImageError("not a JPEG (no start-of-image marker)")
    size = len(data)
    position = 2
    frame = None
    orientation = 1
    while True:
        if position + 4 > size:
            raise BadImageError("truncated in its headers")
        if data[position] != 0xFF:
            raise BadImageError(f"corrupt marker at byte {position}")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _STANDALONE_MARKERS:
            position += 2
            continue
        if marker == SOS:
            break
        if marker in (SOI, EOI):
            raise BadImageError(f"unexpected marker 0xFF{marker:02X} at byte {position}")
        (length,) = struct.unpack_from(">H", data, position + 2)
        body_start, body_end = position + 4, position + 2 + length
        if length < 2 or body_end > size:
            raise BadImageError("truncated in its headers")
        if marker in _FRAME_MARKERS:
            if length < 8:
                raise BadImageError("malformed frame header")
            height, width, components = struct.unpack_from(">HHB", data, body_start + 1)
            frame = (width, height, components, marker in _PROGRESSIVE_MARKERS)
        elif marker == APP1 and orientation == 1:
            orientation = exif_orientation(data[body_start:body_end])
        position = body_end
    if frame is None:
        raise BadImageError("no frame header before the first scan")
    width, height, components, progressive = frame
    if width == 0 or height == 0 or components not in (1, 3, 4):
        raise BadImageError(f"unsupported frame: {width}x{height}, {components} components")
    if require_end and not _ends_after(data, position):
        raise BadImageError("truncated (no end-of-image marker)")
    return JpegInfo(width, height, components, progressive, orientation)
