"""recpack's own libjpeg binding for pack --resize: shrink, and decode_whole and encode for the rest.

decode_whole and encode replaced PyTurboJPEG, so PyTurboJPEG is their
reference: the same pixels, the same bytes.  shrink (planes in, planes out)
is held to that RGB path's picture.  Each of them decodes in place of the
pack's decode check, so each must fail on every damage that check fails on.
"""

import io
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from turbojpeg import TJPF_RGB, TJPF_RGBX, TJSAMP_420, TJSAMP_440, TurboJPEG

from recpack.jpeg._libjpeg import check as check_jpeg
from recpack.jpeg._libjpeg import decode_region, decode_whole, encode, gray_to_color, resample_plane, shrink
from recpack.jpeg.scales import dct_eighths
from recpack.errors import BadImageError
from recpack.pack.prepare import PrepareOptions, prepare_image


def _photo(photo_dir, size=None, quality=90, mode="RGB", subsampling=2):
    image = Image.open(photo_dir / "dog" / "small_0003.jpg").convert(mode)
    if size is not None:
        image = image.resize(size)
    encoded = io.BytesIO()
    image.save(encoded, "JPEG", quality=quality, subsampling=subsampling)
    return encoded.getvalue()


# The inputs of the fuzzers' findings (tools/fuzz.sh), kept beside the targets that found them.
REGRESSIONS = Path(__file__).resolve().parent.parent / "recpack" / "jpeg" / "fuzz" / "regressions"


def _regression(target, name):
    return (REGRESSIONS / target / name).read_bytes()


def _pixels(jpeg):
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.float32)


def _through_rgb(jpeg, eighths, size, quality):
    """pack --resize's other path: RGBX pixels, Pillow-SIMD's BILINEAR, encode."""
    pixels, width, height = decode_whole(jpeg, eighths)
    image = Image.frombuffer("RGBX", (width, height), pixels, "raw", "RGBX", 0, 1).resize(size, Image.BILINEAR)
    return encode(image.tobytes(), *size, 4, quality)


def _adobe_rgb(jpeg):
    """The same file saying its components are R, G, B: an Adobe segment (transform 0) in place of JFIF's."""
    assert jpeg[2:4] == b"\xff\xe0"  # JFIF's APP0, which would make libjpeg read YCbCr whatever Adobe says
    adobe = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
    return jpeg[:2] + adobe + jpeg[4 + int.from_bytes(jpeg[4:6], "big"):]


@pytest.mark.parametrize("eighths", [8, 4, 2, 1])
@pytest.mark.parametrize("size", [(64, 48), (203, 131)])  # whole MCUs and partial ones
def test_decode_whole_gives_turbojpegs_pixels_at_every_simd_scale(photo_dir, eighths, size):
    jpeg = _photo(photo_dir, size)
    pixels, width, height = decode_whole(jpeg, eighths)
    factor = None if eighths == 8 else (1, 8 // eighths)
    expected = TurboJPEG().decode(jpeg, pixel_format=TJPF_RGBX, scaling_factor=factor)
    assert (height, width) == expected.shape[:2] == (-(-size[1] * eighths // 8), -(-size[0] * eighths // 8))
    assert np.array_equal(np.frombuffer(pixels, np.uint8).reshape(height, width, 4)[..., :3], expected[..., :3])


def test_decode_whole_gives_grey_jpegs_as_rgbx(photo_dir):
    jpeg = _photo(photo_dir, mode="L")
    pixels, width, height = decode_whole(jpeg, 8)
    rgbx = np.frombuffer(pixels, np.uint8).reshape(height, width, 4)
    grey = np.asarray(Image.open(io.BytesIO(jpeg)))
    assert all(np.array_equal(rgbx[..., channel], grey) for channel in range(3))


@pytest.mark.parametrize("damage", ["cut in the scan", "a corrupt byte in the scan", "garbage before the end"])
def test_decode_whole_fails_wherever_the_decode_check_fails(photo_dir, damage):
    jpeg = _photo(photo_dir, (203, 131))
    scan_end = len(jpeg) - 2
    damaged = {
        "cut in the scan": jpeg[: len(jpeg) * 3 // 4] + b"\xff\xd9",
        "a corrupt byte in the scan": jpeg[:scan_end - 200] + b"\xff\x07" + jpeg[scan_end - 198:],
        "garbage before the end": jpeg[:scan_end] + b"\x5a" * 40 + jpeg[scan_end:],
    }[damage]
    with pytest.raises(ValueError):
        check_jpeg(damaged)
    for eighths in (8, 1):
        # libjpeg's message depends on how far a decode reads before the damage stops it
        with pytest.raises(ValueError, match="JPEG|marker"):
            decode_whole(damaged, eighths)
        with pytest.raises(ValueError, match="JPEG|marker"):
            shrink(damaged, eighths, 20, 13, 90)


def test_decode_whole_refuses_what_is_not_a_jpeg():
    with pytest.raises(ValueError, match="JPEG"):
        decode_whole(b"\x89PNG\r\n\x1a\n" + bytes(100), 8)
    with pytest.raises(ValueError, match="eighths"):
        decode_whole(b"", 0)


@pytest.mark.parametrize("quality", [75, 90, 95, 96, 100])  # tjCompress2 changes its DCT at 96
@pytest.mark.parametrize("size", [(64, 48), (203, 131), (1, 1)])
def test_encode_writes_turbojpegs_bytes(photo_dir, quality, size):
    rgb = np.asarray(Image.open(io.BytesIO(_photo(photo_dir, size))).convert("RGB"))
    rgbx = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    height, width = rgb.shape[:2]
    tj = TurboJPEG()
    for pixels, channels, pixel_format in ((rgb, 3, TJPF_RGB), (rgbx, 4, TJPF_RGBX)):
        expected = tj.encode(np.ascontiguousarray(pixels), quality=quality, pixel_format=pixel_format,
                             jpeg_subsample=TJSAMP_420)
        assert encode(pixels.tobytes(), width, height, channels, quality) == expected


@pytest.mark.parametrize("arguments", [
    (bytes(12), 2, 2, 2, 90),  # 2 channels
    (bytes(12), 0, 2, 3, 90),  # no width
    (bytes(12), 2, 2, 3, 0),  # quality 0
    (bytes(11), 2, 2, 3, 90),  # one byte short
])
def test_encode_refuses_pixels_it_cannot_read_whole(arguments):
    with pytest.raises(ValueError, match="encode needs"):
        encode(*arguments)


@pytest.mark.parametrize("eighths", [8, 4, 2, 1])
@pytest.mark.parametrize("subsampling", [0, 1, 2, "4:4:0"])  # Pillow's 4:4:4, 4:2:2, 4:2:0; TurboJPEG's 4:4:0
@pytest.mark.parametrize("out_size", [(40, 26), (17, 11)])
def test_shrink_gives_the_rgb_paths_picture_as_4_2_0(photo_dir, eighths, subsampling, out_size):
    if subsampling == "4:4:0":
        rgb = np.asarray(Image.open(photo_dir / "dog" / "small_0003.jpg").convert("RGB").resize((203, 131)))
        jpeg = TurboJPEG().encode(np.ascontiguousarray(rgb), quality=90, jpeg_subsample=TJSAMP_440)
    else:
        jpeg = _photo(photo_dir, (203, 131), subsampling=subsampling)
    size = out_size if eighths > 1 else (out_size[0] // 2, out_size[1] // 2)  # never enlarge: 1/8 is 26x17
    shrunk = shrink(jpeg, eighths, *size, 95)
    assert Image.open(io.BytesIO(shrunk)).size == size
    assert [layer[1:3] for layer in Image.open(io.BytesIO(shrunk)).layer] == [(2, 2), (1, 1), (1, 1)]  # 4:2:0
    difference = np.abs(_pixels(shrunk) - _pixels(_through_rgb(jpeg, eighths, size, 95))).mean()
    assert difference < 4  # the same picture: a one-pixel shift is ~10 off


def test_shrink_keeps_a_flat_colour(photo_dir):
    flat = io.BytesIO()
    Image.new("RGB", (203, 131), (200, 40, 90)).save(flat, "JPEG", quality=95)
    decoded = _pixels(flat.getvalue())
    shrunk = _pixels(shrink(flat.getvalue(), 8, 61, 39, 95))
    assert np.abs(shrunk - decoded.mean(axis=(0, 1))).max() <= 2


def test_jpegs_not_coded_as_ycbcr_take_the_rgb_path(photo_dir):
    jpeg = _adobe_rgb(_photo(photo_dir, (203, 131), subsampling=0))
    assert shrink(jpeg, 8, 40, 26, 95) is None
    converted = prepare_image(jpeg, PrepareOptions(resize=26))
    assert converted.size == (40, 26)
    assert converted.stored == _through_rgb(jpeg, dct_eighths(131, 26), (40, 26), 95)


def test_pack_resize_stores_what_shrink_makes(photo_dir):
    jpeg = _photo(photo_dir, (203, 131))
    converted = prepare_image(jpeg, PrepareOptions(resize=26, quality=90))
    assert dct_eighths(131, 26) == 2  # decoded at 1/4 scale (51 x 33), then shrunk
    assert converted.size == (40, 26) and converted.stored == shrink(jpeg, 2, 40, 26, 90)


def test_resizing_a_jpeg_over_pillows_pixel_limit_is_a_bad_input(photo_dir):
    """As Pillow refuses other formats over its limit: a few bytes claiming 20000 x 20000 cannot take 1.6 GB."""
    jpeg = bytearray(_photo(photo_dir, (64, 48)))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = (20000).to_bytes(2, "big") + (20000).to_bytes(2, "big")  # height, width
    with pytest.raises(BadImageError, match=r"^too large to convert \(20000x20000 pixels to decode"):
        prepare_image(bytes(jpeg), PrepareOptions(resize=15000))  # 1/2 scale would leave 10000: decoded whole


def test_shrink_refuses_sizes_and_qualities_out_of_range():
    with pytest.raises(ValueError, match="shrink needs"):
        shrink(b"", 8, 0, 10, 90)
    with pytest.raises(ValueError, match="shrink needs"):
        shrink(b"", 8, 10, 10, 101)


@pytest.mark.parametrize(("size", "out_size"), [
    ((203, 131), (120, 77)),  # 1.7x: vectors over 16 columns and 4 rows, then their tails
    ((64, 48), (64, 48)),  # same size
    ((33, 9), (50, 20)),  # enlarged: the filter keeps its unit support; windows of at most 4 pixels
    ((203, 131), (151, 99)),  # 1.34x: windows of at most 4, four outputs a row at a time, then the tail
    ((7, 3), (3, 2)),  # under 4 outputs a row: the plain loops
    ((211, 97), (40, 19)),  # over 3x: windows wider than 8 pixels, the plain horizontal loops
    ((17, 5), (1, 1)),
])
def test_plane_resample_is_pillows_bilinear(size, out_size):
    plane = np.random.default_rng(1).integers(0, 256, size[::-1], dtype=np.uint8)
    plane[:, : size[0] // 2] = np.linspace(0, 255, size[0] // 2, dtype=np.uint8)  # smooth half, noisy half
    ours = np.frombuffer(resample_plane(plane.tobytes(), *size, *out_size), np.uint8).reshape(out_size[::-1])
    pillows = np.asarray(Image.fromarray(plane).resize(out_size, Image.Resampling.BILINEAR))
    assert np.abs(ours.astype(int) - pillows).max() <= 1  # fixed-point precision: 14 bits here


@pytest.mark.parametrize("size", [(1, 1), (3, 1), (5, 3), (7, 2)])
def test_a_chroma_sample_past_an_odd_edge_is_the_last_pixels_colour(size):
    """4:2:0 chroma of an odd width covers one column past the image, where libjpeg replicates the edge."""
    halves = np.zeros((64, 64, 3), np.uint8)
    halves[:, :32, 0] = halves[:, 32:, 2] = 255  # red | blue
    encoded = io.BytesIO()
    Image.fromarray(halves).save(encoded, "JPEG", quality=95)
    shrunk = _pixels(shrink(encoded.getvalue(), 8, *size, 95))
    through_rgb = _pixels(_through_rgb(encoded.getvalue(), 8, size, 95))
    assert np.abs(shrunk[:, -1] - through_rgb[:, -1]).max() <= 8  # it was 35 off, centred on the edge


# Found by fuzzing (tools/fuzz.sh): each input, through the Python API, fails cleanly or comes out right.

def test_a_crop_box_whose_right_edge_wraps_around_is_clipped_to_the_image(photo_dir):
    """left + width past 2**32 wrapped to a small number: the region was taken as whole, 4294967294 wide."""
    jpeg = _photo(photo_dir, (64, 48))
    pixels, x, y, width, height = decode_region(jpeg, 3, 1, 2**32 - 3, 4, 1)  # 1/8 scale: 8 x 6
    assert (x, y, width, height) == (2, 1, 6, 4) and len(pixels) == 6 * 4 * 4
    assert decode_region(jpeg, 3, 1, 5, 4, 1) == (pixels, x, y, width, height)
    with pytest.raises(ValueError, match="crop region outside the image"):
        decode_region(jpeg, 2**32 - 1, 0, 2, 2, 8)
    finding = _regression("libjpeg_decode_region", "width_wraps_around")  # its parameters, then its JPEG
    assert decode_region(finding[17:], *struct.unpack(">IIIIB", finding[:17]))[1:] == (2, 1, 6, 4)


def test_gray_to_color_refuses_coefficients_the_standard_tables_cannot_code():
    """libjpeg decodes a 14-bit AC coefficient of an 8-bit file silently, and its encoder wrote a corrupt file."""
    grey = _regression("libjpeg_gray_to_color", "coefficient_out_of_range")
    check_jpeg(grey)  # libjpeg reads it without a word
    with pytest.raises(ValueError, match="DCT coefficient out of range"):
        gray_to_color(grey)


def _claiming(jpeg, width, height):
    """The same bytes with a frame header claiming width x height: a few hundred bytes for a huge image."""
    claim = bytearray(jpeg)
    sof = max(claim.find(b"\xff\xc0"), claim.find(b"\xff\xc2"))
    claim[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(claim)


def _flat(mode, **save):
    encoded = io.BytesIO()
    Image.new(mode, (16, 16), 100).save(encoded, "JPEG", **save)
    return encoded.getvalue()


@pytest.mark.parametrize(("operation", "mode", "progressive"), [
    (check_jpeg, "RGB", True),  # 12.6 GB and 77 s, for "premature end of data segment"
    (gray_to_color, "L", False),  # 8.4 GB and 80 s
    (gray_to_color, "L", True),
    (lambda data: decode_whole(data, 8), "RGB", True),
    (lambda data: shrink(data, 8, 100, 100, 90), "RGB", False),  # its own planes: 6.4 GB
])
def test_a_few_bytes_claiming_65500_squared_pixels_are_too_large_at_once(operation, mode, progressive):
    """libjpeg's whole-image buffers and shrink's planes are bounded (1.25 GB): what needs more is refused unread."""
    with pytest.raises(ValueError, match=r"^too large: needs over 1280 MB$"):
        operation(_claiming(_flat(mode, progressive=progressive), 65500, 65500))
    bomb = _regression("libjpeg_check", "coefficient_buffers_of_8_gb")  # the fuzzer's: 1,337 bytes
    with pytest.raises(ValueError, match="too large"):
        check_jpeg(bomb)


def test_the_first_failing_warning_ends_the_work(tmp_path):
    """A 16000 x 16000 claim within the memory bound: libjpeg used to decode on (1.5 GB, 4 s) after the data ran out."""
    claim = tmp_path / "claim.jpg"
    claim.write_bytes(_claiming(_flat("L", progressive=True), 16000, 16000))
    # the child's peak from VmHWM: ru_maxrss would carry over the parent's (getrusage(2): kept across execve)
    script = ("import re, sys\nfrom recpack.jpeg._libjpeg import gray_to_color\n"
              "try:\n    gray_to_color(open(sys.argv[1], 'rb').read())\nexcept ValueError as error:\n    print(error)\n"
              "print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024)")
    result = subprocess.run([sys.executable, "-c", script, claim], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 2, result.stdout + result.stderr
    message, megabytes = result.stdout.splitlines()
    assert message == "Corrupt JPEG data: premature end of data segment"
    assert int(megabytes) < 300  # the interpreter: ~20 MB; the coefficients would be 512 MB


@pytest.mark.parametrize("operation", [
    check_jpeg,  # 35 s, to fail at the end on "two SOF markers"
    gray_to_color,
    lambda data: decode_whole(data, 1),
    lambda data: shrink(data, 1, 64, 64, 90),
    lambda data: decode_region(data, 0, 0, 64, 64, 8),
])
def test_arithmetic_coded_images_over_pillows_pixel_limit_are_too_large_at_once(operation):
    """Arithmetic coding holds a flat block in next to nothing, and libjpeg stuffs zeros without a warning when its
    data runs into a marker, so a few bytes can keep it decoding for long: the fuzzer's 558 bytes claim 3.3 gigapixels."""
    bomb = _regression("libjpeg_check", "arithmetic_3_gigapixels")
    with pytest.raises(ValueError, match=r"^too large: 50213x65495 pixels, arithmetic-coded \(over 178956970\)$"):
        operation(bomb)
