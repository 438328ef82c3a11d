"""The grey-to-colour splice (recpack/_jpegsplice.c): pixel-exact where it applies, None everywhere else.

Its contract with the packer: bytes only for a grey JPEG whose every block
parses, and then R = G = B = the grey image exactly; None for anything else
(other kinds of JPEG, damage of any sort), so that libjpeg decides.
"""

import io

import numpy as np
import pytest
from PIL import Image

import corpus
from recpack._jpegsplice import gray_to_color as splice
from recpack._libjpeg import check as check_jpeg
from recpack.errors import BadImageError
from recpack.jpeg_header import read_jpeg_header
from recpack.prepare import PrepareOptions, prepare_image


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
