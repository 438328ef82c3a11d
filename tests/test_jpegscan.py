"""The block walk over baseline JPEGs (recpack/_jpegscan.c): the decode check's fast path and the grey splice.

Contract with the packer, for both: an answer only for files whose every
block parses and which libjpeg reads without a warning; for anything else
(other kinds of JPEG, damage of any sort) "not sure" -- False or None -- so
that libjpeg decides.  The property tests below damage files in thousands of
ways and check the one direction that matters: whatever the walk accepts,
libjpeg accepts too.
"""

import io
import re

import numpy as np
import pytest
from PIL import Image
from turbojpeg import TJSAMP_420, TJSAMP_422, TJSAMP_440, TJSAMP_444, TurboJPEG

import corpus
from recpack.jpeg._jpegscan import gray_to_color as splice
from recpack.jpeg._jpegscan import scan_is_clean
from recpack.jpeg._libjpeg import check as check_jpeg
from recpack.errors import BadImageError
from recpack.jpeg.header import read_jpeg_header
from recpack.pack.prepare import PrepareOptions, prepare_image


def _gray_photo(size, **save):
    """A real photo, cropped and scaled to ``size``, as a grey JPEG saved with Pillow's ``save`` options."""
    photo = corpus._sources()[0].convert("L")
    crop = photo.crop((10, 20, 10 + 3 * size[0], 20 + 3 * size[1])).resize(size)
    out = io.BytesIO()
    crop.save(out, "JPEG", **save)
    return out.getvalue()


def _decoded(data):
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


ENCODINGS = {
    "standard tables": {"quality": 90},
    "optimised tables": {"quality": 90, "optimize": True},
    "restart every 3 blocks": {"quality": 90, "restart_marker_blocks": 3},
    "restart every row, optimised": {"quality": 75, "optimize": True, "restart_marker_rows": 1},
    "quality 100": {"quality": 100},
}


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("size", [(1, 1), (8, 8), (17, 9), (333, 201)])
def test_splice_is_pixel_exact_and_costs_a_byte_per_block_at_most(encoding, size):
    source = _gray_photo(size, **ENCODINGS[encoding])
    spliced = splice(source)
    assert spliced is not None
    check_jpeg(spliced)  # libjpeg reads it without a warning
    assert read_jpeg_header(spliced).components == 3
    colour, grey = _decoded(spliced), _decoded(source)
    assert colour.shape == grey.shape + (3,)
    for channel in range(3):
        assert np.array_equal(colour[..., channel], grey)
    blocks = -(-size[0] // 8) * -(-size[1] // 8)
    assert len(spliced) <= len(source) + blocks + 600  # the grey bits as they were, 8 chroma bits per block, headers


def test_splice_leaves_other_jpegs_to_libjpeg(hostile):
    assert splice(_gray_photo((64, 48), progressive=True)) is None
    assert splice(hostile["cmyk_jpg"].read_bytes()) is None
    assert splice(corpus._jpeg_bytes(corpus._sources()[0].resize((64, 48)), 90)) is None  # colour already
    assert splice(b"not a jpeg at all") is None


def test_splice_refuses_damage_and_never_returns_what_the_decode_check_refuses():
    source = _gray_photo((96, 64), quality=85)
    scan_start = source.index(b"\xff\xda") + 10
    assert splice(source[: (scan_start + len(source)) // 2] + b"\xff\xd9") is None  # cut short
    assert splice(source[:-2]) is None  # no end-of-image marker
    assert splice(source[:-2] + b"\x00\x00\xff\xd9") is None  # stray bytes after the last block
    restarts = _gray_photo((96, 64), quality=85, restart_marker_blocks=4)
    first_restart = restarts.index(b"\xff\xd0")
    assert splice(restarts[:first_restart] + restarts[first_restart + 2 :]) is None  # a restart marker lost
    rng = np.random.default_rng(0)
    accepted = 0
    for _ in range(300):  # one damaged byte anywhere in the scan
        position = int(rng.integers(scan_start, len(source) - 2))
        damaged = bytearray(source)
        damaged[position] = int(rng.integers(0, 256))
        damaged = bytes(damaged)
        spliced = splice(damaged)
        if spliced is None:
            continue
        accepted += 1
        check_jpeg(damaged)  # whatever the splice takes, libjpeg takes too ...
        expected = _decoded(damaged)
        assert np.array_equal(_decoded(spliced)[..., 1], expected)  # ... and decodes to the same pixels
    assert 0 < accepted < 300  # some damage still parses (a different coefficient), most does not


def test_splice_refuses_headers_that_promise_more_than_the_file_holds():
    source = bytearray(_gray_photo((96, 64), quality=85))
    frame = source.index(b"\xff\xc0")
    source[frame + 5 : frame + 9] = (60000).to_bytes(2, "big") * 2  # 60000 x 60000 pixels in a few kilobytes
    assert splice(bytes(source)) is None


def test_packing_damaged_grey_jpeg_is_a_bad_image_not_a_crash():
    source = _gray_photo((96, 64), quality=85)
    with pytest.raises(BadImageError, match="does not decode cleanly"):
        prepare_image(source[: len(source) // 2] + b"\xff\xd9", PrepareOptions(check="header"))
    converted = prepare_image(source, PrepareOptions(check="header"))
    assert converted.rewritten and converted.stored == splice(source)


# --- the decode check's fast path ---------------------------------------------------------------


def _colour_photo(size, **save):
    """A real colour photo, cropped and scaled to ``size``, saved by Pillow with ``save`` options."""
    crop = corpus._sources()[1].crop((30, 10, 30 + 2 * size[0], 10 + 2 * size[1])).resize(size)
    out = io.BytesIO()
    crop.save(out, "JPEG", **save)
    return out.getvalue()


def _turbo_photo(size, subsampling):
    """The same photo through libjpeg-turbo's encoder, which also writes 4:4:0."""
    crop = corpus._sources()[1].crop((30, 10, 30 + 2 * size[0], 10 + 2 * size[1])).resize(size)
    return TurboJPEG().encode(np.asarray(crop), quality=92, jpeg_subsample=subsampling)


COLOUR_ENCODINGS = {
    "4:2:0": lambda size: _colour_photo(size, quality=90),
    "4:4:4": lambda size: _colour_photo(size, quality=90, subsampling=0),
    "4:2:2, optimised": lambda size: _colour_photo(size, quality=80, subsampling=1, optimize=True),
    "4:2:0, restart every 2 MCUs": lambda size: _colour_photo(size, quality=90, restart_marker_blocks=2),
    "4:4:4, restart every row, quality 100": lambda size: _colour_photo(
        size, quality=100, subsampling=0, restart_marker_rows=1
    ),
    "4:4:0 (libjpeg-turbo)": lambda size: _turbo_photo(size, TJSAMP_440),
    "4:2:2 (libjpeg-turbo)": lambda size: _turbo_photo(size, TJSAMP_422),
    "4:4:4 (libjpeg-turbo)": lambda size: _turbo_photo(size, TJSAMP_444),
    "4:2:0 (libjpeg-turbo)": lambda size: _turbo_photo(size, TJSAMP_420),
    "grey": lambda size: _gray_photo(size, quality=90),
}


@pytest.mark.parametrize("encoding", COLOUR_ENCODINGS)
@pytest.mark.parametrize("size", [(1, 1), (8, 8), (17, 9), (333, 201)])
def test_walk_accepts_every_clean_baseline_file(encoding, size):
    data = COLOUR_ENCODINGS[encoding](size)
    check_jpeg(data)
    assert scan_is_clean(data)


def _segment(marker, body):
    return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body


def _with_segment_after_soi(data, marker, body):
    return data[:2] + _segment(marker, body) + data[2:]


def test_walk_leaves_other_jpegs_and_doubtful_headers_to_libjpeg(hostile):
    clean = _colour_photo((64, 48), quality=90)
    assert scan_is_clean(clean)
    assert not scan_is_clean(_colour_photo((64, 48), quality=90, progressive=True))
    assert not scan_is_clean(hostile["cmyk_jpg"].read_bytes())
    assert not scan_is_clean(b"not a jpeg at all")
    assert not scan_is_clean(clean[:-2])  # no end-of-image marker
    # headers that libjpeg warns about, so that its check fails them: the walk must not accept them
    jfif_2 = bytearray(clean)
    jfif_2[clean.index(b"JFIF\0") + 5] = 2
    adobe_unknown_transform = _with_segment_after_soi(clean, 0xEE, b"Adobe\0\x64\0\0\0\0\x02")
    for doubtful in (bytes(jfif_2),):
        with pytest.raises(ValueError):
            check_jpeg(doubtful)
        assert not scan_is_clean(doubtful)
    assert not scan_is_clean(adobe_unknown_transform)
    assert not scan_is_clean(_with_segment_after_soi(clean, 0xF0, b"\0\0"))  # a marker libjpeg does not know
    assert scan_is_clean(_with_segment_after_soi(clean, 0xFE, b"a comment"))  # one it skips


def _mutations(data, rng, count):
    """``count`` damaged copies of ``data``: bytes replaced or bits flipped anywhere, cuts, lost bytes."""
    scan_start = data.index(b"\xff\xda")
    for case in range(count):
        damaged = bytearray(data)
        kind = case % 4
        # half the damage in the headers (tables, sizes, sampling), half in the coded data
        low, high = (2, scan_start + 14) if case % 8 < 4 else (scan_start, len(data))
        position = int(rng.integers(low, high))
        if kind == 0:
            damaged[position] = int(rng.integers(0, 256))
        elif kind == 1:
            damaged[position] ^= 1 << int(rng.integers(0, 8))
        elif kind == 2:
            del damaged[position : position + int(rng.integers(1, 4))]
        else:
            damaged = damaged[:position] + b"\xff\xd9"
        yield bytes(damaged)


@pytest.mark.parametrize("encoding", COLOUR_ENCODINGS)
def test_whatever_the_walk_accepts_libjpeg_reads_without_a_warning(encoding):
    source = COLOUR_ENCODINGS[encoding]((48, 40))
    rng = np.random.default_rng(sum(map(ord, encoding)))
    accepted = refused = 0
    for damaged in _mutations(source, rng, 1200):
        if not scan_is_clean(damaged):
            refused += 1
            continue
        accepted += 1
        check_jpeg(damaged)  # raises ValueError if libjpeg errs or warns
    assert refused > 600 and accepted > 20  # most damage is caught; some still parses (another coefficient)


def test_packing_damaged_colour_jpeg_names_libjpegs_complaint():
    source = _colour_photo((96, 64), quality=85)
    scan_start = source.index(b"\xff\xda") + 14
    damaged = source[: (scan_start + len(source)) // 2] + b"\xff\xd9"
    assert not scan_is_clean(damaged)
    with pytest.raises(BadImageError, match="does not decode cleanly .*Corrupt JPEG data"):
        prepare_image(damaged, PrepareOptions())
    assert prepare_image(source, PrepareOptions()).stored == source


def test_huffman_table_with_more_codes_than_its_lengths_hold_is_refused_before_it_is_filled():
    # 200 one-bit codes: filling the lookahead before counting them would write far past its end
    overfull = bytes([0x00, 200]) + bytes(15) + bytes(200)  # DC table 0: 200 codes of length 1, symbols 0
    for source in (_gray_photo((16, 16), quality=90), _colour_photo((16, 16), quality=90)):
        damaged = _with_segment_after_soi(source, 0xC4, overfull)
        assert not scan_is_clean(damaged)
        assert splice(damaged) is None


def _scan_start(data):
    sos = data.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")


def test_fill_byte_before_a_stuffed_zero_is_left_to_libjpeg():
    # FF FF 00 in the coded data: libjpeg reads one 0xFF data byte without a warning, but libjpeg-turbo's fast
    # Huffman path takes FF FF for a marker and leaves stale coefficients, so its pixels need not be the splice's
    grey, colour = _gray_photo((96, 64), quality=100), _colour_photo((96, 64), quality=100)
    damaged = {}
    for name, source in (("grey", grey), ("colour", colour)):
        stuffed = source.index(b"\xff\x00", _scan_start(source))
        damaged[name] = source[:stuffed] + b"\xff" + source[stuffed:]
        check_jpeg(damaged[name])  # libjpeg's check accepts it, so the fallback has an answer ...
        assert not scan_is_clean(damaged[name])  # ... but the walk leaves it to libjpeg
    assert splice(damaged["grey"]) is None
    assert prepare_image(damaged["colour"], PrepareOptions()).stored == damaged["colour"]
    converted = prepare_image(damaged["grey"], PrepareOptions()).stored  # through libjpeg's transcoder
    check_jpeg(converted)
    assert read_jpeg_header(converted).components == 3


def _with_fills_before_markers(data):
    """``data`` with three fill bytes before every restart marker and the end-of-image marker of its scan."""
    scan_start = _scan_start(data)
    filled = re.sub(rb"\xff[\xd0-\xd7\xd9]", lambda marker: b"\xff\xff" + marker[0], data[scan_start:])
    assert filled.count(b"\xff\xff\xff") > 1  # the scan has restart markers
    return data[:scan_start] + filled


def test_fill_bytes_before_restart_markers_and_the_end_are_accepted():
    # there the coded data before the marker is complete: libjpeg-turbo decodes the pixels it would without them
    grey = _gray_photo((96, 64), quality=95, restart_marker_blocks=3)
    colour = _colour_photo((96, 64), quality=95, restart_marker_blocks=2)
    for source in (grey, colour):
        filled = _with_fills_before_markers(source)
        check_jpeg(filled)
        assert scan_is_clean(filled)
        assert np.array_equal(_decoded(filled), _decoded(source))
    spliced = splice(_with_fills_before_markers(grey))
    assert spliced == splice(grey)  # the fills are not copied: the output has its own markers
