"""Tests for tools/corpus.py, the generator of test and benchmark images."""

import hashlib
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import corpus  # noqa: E402



def _digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory):
    out = tmp_path_factory.mktemp("inet")
    summary = corpus.make_imagenet_like(out, 60, num_classes=4, seed=7, workers=2,
                                        progress=False)
    return out, summary


def test_same_seed_same_bytes_regardless_of_workers(imagenet_like, tmp_path):
    out, _ = imagenet_like
    corpus.make_imagenet_like(tmp_path, 60, num_classes=4, seed=7, workers=1,
                              progress=False)
    assert _digest_tree(tmp_path) == _digest_tree(out)


def test_different_seed_differs(tmp_path):
    a = corpus.render_imagenet_like(seed=0, index=3)
    assert a == corpus.render_imagenet_like(seed=0, index=3)
    assert a != corpus.render_imagenet_like(seed=1, index=3)


def test_tree_and_list(imagenet_like):
    out, summary = imagenet_like
    lines = (out / "list.txt").read_text().splitlines()
    assert len(lines) == summary.count == 60
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert [line.split("\t")[0] for line in lines] == files
    for line in lines:
        rel, label = line.split("\t")
        assert rel.startswith(f"class_{int(label):03d}/img_")
    assert summary.total_bytes == sum((out / f).stat().st_size for f in files)


def test_size_distribution(imagenet_like):
    out, summary = imagenet_like
    images = [Image.open(p) for p in sorted(out.rglob("*.jpg"))]
    assert all(im.format == "JPEG" for im in images)
    typical = [300 <= min(im.size) and max(im.size) <= 600 for im in images]
    assert np.mean(typical) >= 0.75
    assert all(3 / 4 - 0.02 <= im.width / im.height <= 4 / 3 + 0.02 for im in images)
    assert 60_000 <= summary.mean_bytes <= 170_000


def test_rare_variants_occur():
    """Progressive and grayscale JPEGs are a few percent of a large corpus."""
    plans = [corpus.imagenet_like_plan(0, i) for i in range(5000)]
    for attr in ("progressive", "grayscale"):
        assert 0.01 < np.mean([getattr(p, attr) for p in plans]) < 0.06, attr
    index = next(i for i, p in enumerate(plans) if p.progressive and not p.grayscale)
    with Image.open(io.BytesIO(corpus.render_imagenet_like(0, index))) as im:
        assert im.info.get("progressive") and im.mode == "RGB"
        assert im.size == plans[index].size
    index = next(i for i, p in enumerate(plans) if p.grayscale)
    with Image.open(io.BytesIO(corpus.render_imagenet_like(0, index))) as im:
        assert im.mode == "L"


def test_small_jpegs(tmp_path):
    paths = corpus.make_small_jpegs(tmp_path, 20, size=(64, 48), seed=3)
    assert len(paths) == 20
    for p in paths:
        with Image.open(p) as im:
            assert (im.format, im.size, im.mode) == ("JPEG", (64, 48), "RGB")
            assert np.asarray(im).std() > 2  # real content, not a flat fill
    again = corpus.make_small_jpegs(tmp_path / "again", 20, seed=3)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return corpus.make_hostile_files(tmp_path_factory.mktemp("hostile"))


def test_hostile_broken_files(hostile):
    assert hostile["empty"].stat().st_size == 0
    truncated = hostile["truncated"].read_bytes()
    assert truncated.startswith(b"\xff\xd8") and not truncated.endswith(b"\xff\xd9")
    with pytest.raises(OSError):
        Image.open(hostile["truncated"]).load()
    with pytest.raises(OSError):
        Image.open(hostile["random_bytes"])
    assert hostile["directory"].is_dir() and hostile["directory"].suffix == ".jpg"


@pytest.mark.parametrize("name, fmt, mode", [
    ("png_as_jpg", "PNG", "RGB"),
    ("rgba_png", "PNG", "RGBA"),
    ("cmyk_jpg", "JPEG", "CMYK"),
    ("gray_jpg", "JPEG", "L"),
    ("gif", "GIF", "P"),
    ("bmp", "BMP", "RGB"),
    ("webp", "WEBP", "RGB"),
])
def test_hostile_formats(hostile, name, fmt, mode):
    with Image.open(hostile[name]) as im:
        assert (im.format, im.mode) == (fmt, mode)
        im.load()


def test_hostile_rgba_has_transparent_pixels(hostile):
    alpha = np.asarray(Image.open(hostile["rgba_png"]).getchannel("A"))
    assert alpha.min() == 0 and alpha.max() == 255


def test_hostile_gray16_spans_full_range(hostile):
    with Image.open(hostile["gray16_png"]) as im:
        assert im.mode in ("I;16", "I")
        values = np.asarray(im)
    assert values.min() == 0 and values.max() == 65535
    assert values[0, 128] == 128 * 257


def test_hostile_gif_is_animated(hostile):
    with Image.open(hostile["gif"]) as im:
        assert im.n_frames == 2


def test_hostile_exif_orientation(hostile):
    with Image.open(hostile["exif_rotated"]) as im:
        assert im.getexif()[0x0112] == 6
        assert im.size == (96, 64)
        upright = np.asarray(ImageOps.exif_transpose(im))
    assert upright.shape[:2] == (96, 64)  # portrait: 64 wide, 96 tall
    top_right, top_left = upright[4:12, -12:-4], upright[4:12, 4:12]
    assert (top_right[..., 0] > 200).all() and (top_right[..., 1:] < 60).all()
    assert not ((top_left[..., 0] > 200).all() and (top_left[..., 1:] < 60).all())
