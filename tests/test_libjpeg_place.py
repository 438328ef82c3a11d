"""_libjpeg.place: a JPEG's source rectangle decoded in YCbCr planes straight onto a target rectangle of a canvas.

Its pixels are held to a float reference: the full-size RGB decode (Pillow,
libjpeg's own upsampling), each channel resized in float with Pillow's
BILINEAR over the same box.  place() resamples chroma once from its
subsampled plane where the reference upsamples it first, and at DCT scales
below 1 the inverse DCT does part of the shrinking, so the two differ by a
little: on these smooth pictures (JPEG's own error is of the same size) at
most MEAN_TOLERANCE on average and MAX_TOLERANCE anywhere, per channel, on the
0-255 scale.
"""

import io

import numpy as np
import pytest
from PIL import Image
from turbojpeg import TJSAMP_440, TurboJPEG

from recpack.jpeg._libjpeg import place

MEAN_TOLERANCE = 1.5
MAX_TOLERANCE = 8.0


def _picture(width, height, seed=0):
    """A smooth colour picture: low-frequency waves in every channel, no detail finer than JPEG keeps."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    phase = np.random.default_rng(seed).uniform(0, 6, 3)
    channels = [128 + 90 * np.sin(x / 23 + phase[0]) * np.cos(y / 31),
                128 + 80 * np.cos(x / 37 - y / 29 + phase[1]),
                128 + 100 * np.sin((x + y) / 41 + phase[2])]
    return np.stack(channels, -1).clip(0, 255).astype(np.uint8)


def _jpeg(pixels, subsampling=2, mode="RGB"):
    if subsampling == "4:4:0":
        return TurboJPEG().encode(np.ascontiguousarray(pixels), quality=95, jpeg_subsample=TJSAMP_440)
    out = io.BytesIO()
    image = Image.fromarray(pixels)
    image = image.convert("L") if mode == "L" else image
    image.save(out, "JPEG", quality=95, subsampling=subsampling)
    return out.getvalue()


def _reference(jpeg, box, size, flip=False):
    """Float RGB (height, width, 3): the full-size decode, resized per channel in float over box."""
    image = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    left, top, width, height = box
    channels = [np.asarray(Image.fromarray(image[:, :, c].astype(np.float32), "F").resize(
        (size[1], size[0]), Image.Resampling.BILINEAR, box=(left, top, left + width, top + height)))
        for c in range(3)]
    out = np.stack(channels, -1)
    return out[:, ::-1] if flip else out


def _placed(jpeg, box, size, eighths=8, flip=False, margin=(0, 0, 0, 0)):
    """place() onto the size x size target inside a canvas with margin (top, right, bottom, left) of 7s around it."""
    top, right, bottom, left = margin
    canvas = np.full((size[0] + top + bottom, size[1] + left + right, 3), 7, np.uint8)
    target = canvas[top : top + size[0], left : left + size[1]]
    assert place(jpeg, target, eighths, *box, flip) is True
    outside = np.ones(canvas.shape[:2], bool)
    outside[top : top + size[0], left : left + size[1]] = False
    assert (canvas[outside] == 7).all(), "place wrote outside its target"
    return target.copy()


def _close(got, reference):
    difference = np.abs(got.astype(np.float32) - reference)
    assert difference.mean() <= MEAN_TOLERANCE and difference.max() <= MAX_TOLERANCE, (
        f"mean {difference.mean():.2f}, max {difference.max():.1f}")


@pytest.mark.parametrize("subsampling", [0, 1, 2, "4:4:0"])  # 4:4:4, 4:2:2, 4:2:0, 4:4:0
@pytest.mark.parametrize(("image_size", "box", "size"), [
    ((500, 375), (0, 0, 500, 375), (240, 320)),  # resize, aspect not kept
    ((333, 251), (0, 0, 333, 251), (97, 131)),  # odd sizes, partial MCUs
    ((333, 251), (0, 0, 333, 251), (400, 500)),  # upscaling: the source smaller than the target
    ((160, 120), (13.25, 7.5, 101.5, 77.0), (64, 48)),  # a crop inside, fractional edges
    ((160, 120), (0, 0, 40, 30), (57, 61)),  # a crop at the top left corner
    ((161, 121), (101, 71, 60, 50), (33, 29)),  # a crop touching the right and bottom edges
])
def test_place_matches_the_float_reference(subsampling, image_size, box, size):
    jpeg = _jpeg(_picture(*image_size), subsampling)
    _close(_placed(jpeg, box, size), _reference(jpeg, box, size))


def test_grey_jpegs_come_out_grey():
    jpeg = _jpeg(_picture(203, 131), mode="L")
    got = _placed(jpeg, (0, 0, 203, 131), (50, 70))
    assert (got[:, :, 0] == got[:, :, 1]).all() and (got[:, :, 1] == got[:, :, 2]).all()
    _close(got, _reference(jpeg, (0, 0, 203, 131), (50, 70)))


@pytest.mark.parametrize("box", [(0, 0, 203, 131), (20, 10, 90, 100)])
def test_flip_mirrors_the_target(box):
    jpeg = _jpeg(_picture(203, 131))
    straight = _placed(jpeg, box, (41, 57))
    flipped = _placed(jpeg, box, (41, 57), flip=True)
    # the mirrored column map's weights are rounded from mirrored centres: the same to within 1
    assert np.abs(flipped.astype(int) - straight[:, ::-1]).max() <= 1
    _close(flipped, _reference(jpeg, box, (41, 57), flip=True))


@pytest.mark.parametrize("margin", [(3, 5, 2, 4), (0, 9, 0, 0), (11, 0, 0, 0), (0, 0, 0, 1)])
def test_a_target_inside_a_padded_canvas_is_written_alone(margin):
    jpeg = _jpeg(_picture(120, 90))
    alone = _placed(jpeg, (0, 0, 120, 90), (33, 44))
    assert (_placed(jpeg, (0, 0, 120, 90), (33, 44), margin=margin) == alone).all()


@pytest.mark.parametrize("box", [(0, 0, 120, 90), (119, 89, 1, 1), (60.5, 30.25, 0.5, 0.25)])
def test_a_one_pixel_target_is_the_average_under_its_box(box):
    jpeg = _jpeg(_picture(120, 90))
    _close(_placed(jpeg, box, (1, 1)), _reference(jpeg, box, (1, 1)))


def test_a_one_pixel_image():
    jpeg = _jpeg(np.full((1, 1, 3), (200, 40, 90), np.uint8))
    got = _placed(jpeg, (0, 0, 1, 1), (3, 2))
    assert np.abs(got.astype(int) - (200, 40, 90)).max() <= 4


@pytest.mark.parametrize("eighths", [1, 2, 4])
def test_dct_scales_below_one_stay_near_the_full_size_reference(eighths):
    jpeg = _jpeg(_picture(640, 480))
    box, size = (0, 0, 640, 480), (480 * eighths // 8, 640 * eighths // 8 - 3)
    _close(_placed(jpeg, box, size, eighths), _reference(jpeg, box, size))


def test_a_flat_colour_stays_flat_through_every_plane():
    colour = (30, 160, 220)
    jpeg = _jpeg(np.full((77, 53, 3), colour, np.uint8), 2)
    got = _placed(jpeg, (0, 0, 53, 77), (31, 29))
    assert (got == got[0, 0]).all() and np.abs(got[0, 0].astype(int) - colour).max() <= 3


def test_jpegs_not_coded_as_ycbcr_or_grey_are_not_taken(photo_dir):
    from test_libjpeg import _adobe_rgb

    rgb_coded = _adobe_rgb(_jpeg(_picture(64, 48), 0))
    cmyk = io.BytesIO()
    Image.new("CMYK", (16, 16), (10, 20, 30, 40)).save(cmyk, "JPEG")
    for jpeg in (rgb_coded, cmyk.getvalue()):
        out = np.full((8, 8, 3), 7, np.uint8)
        assert place(jpeg, out, 8, 0, 0, 16, 16, False) is False
        assert (out == 7).all()


@pytest.mark.parametrize(("arguments", "message"), [
    ((8, 0, 0, 0, 48, False), "source rectangle"),  # empty box
    ((8, -1, 0, 10, 10, False), "source rectangle"),
    ((8, 64, 0, 10, 10, False), "source rectangle"),  # starts past the image
    ((8, float("nan"), 0, 10, 10, False), "source rectangle"),
    ((0, 0, 0, 64, 48, False), "eighths"),
    ((17, 0, 0, 64, 48, False), "eighths"),
])
def test_bad_arguments_are_value_errors(arguments, message):
    jpeg = _jpeg(_picture(64, 48))
    with pytest.raises(ValueError, match=message):
        place(jpeg, np.zeros((4, 4, 3), np.uint8), *arguments)


@pytest.mark.parametrize("out", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8),
                                 np.zeros((4, 4, 3), np.uint8)[:, ::2], np.zeros((4, 4, 3), np.float32),
                                 np.zeros((0, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)[::-1]])
def test_out_must_be_packed_rgb_rows(out):
    with pytest.raises((ValueError, BufferError)):
        place(_jpeg(_picture(64, 48)), out, 8, 0, 0, 64, 48, False)


def test_a_read_only_out_is_refused():
    out = np.zeros((4, 4, 3), np.uint8)
    out.flags.writeable = False
    with pytest.raises((ValueError, BufferError)):
        place(_jpeg(_picture(64, 48)), out, 8, 0, 0, 64, 48, False)


@pytest.mark.parametrize("damage", ["cut", "garbage"])
def test_damaged_data_fails_or_decodes_as_decode_region_does(damage):
    from recpack.jpeg._libjpeg import decode_region

    jpeg = _jpeg(_picture(64, 48))
    bad = jpeg[: len(jpeg) // 3] if damage == "cut" else jpeg[:20] + b"\x00" * 40
    out = np.zeros((10, 10, 3), np.uint8)
    try:
        decode_region(bad, 0, 0, 64, 48, 8)
    except ValueError:
        with pytest.raises(ValueError):
            place(bad, out, 8, 0, 0, 64, 48, False)
    else:  # libjpeg recovered (warnings are ignored by both): place must recover too
        assert place(bad, out, 8, 0, 0, 64, 48, False) is True
