"""Deterministic, realistic image corpora for recpack's tests and benchmarks.

Synthetic noise images compress and decode nothing like real photos, and the
machines only reach PyPI, so every pixel here is cut from real photographs that
ship inside the scikit-image wheel (``skimage/data/``).  Install it without its
dependencies -- we only read its data files, and its ``pillow`` requirement
would overwrite pillow-simd::

    pip install --no-deps scikit-image==0.26.0

Every image is derived from ``numpy.random.default_rng((seed, index))``, so the
output is byte-identical for a given seed (on the same Pillow/libjpeg build)
no matter how many worker processes render it or in which order.

CLI::

    python tools/corpus.py OUT --images N --classes C --seed S [--workers W]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import io
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFilter

# Colour photographs with enough texture to crop from; pinned by name so the
# corpus does not change when scikit-image adds files.
SOURCE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "ihc.png",
)
INSTALL_HINT = "pip install --no-deps scikit-image==0.26.0"

# Shape of the ImageNet-like distribution (fractions and ranges tuned so the
# mean file is ~110 KB, like ImageNet's training set).
SMALL_FRACTION, LARGE_FRACTION = 0.05, 0.05
CORE_LONG_SIDE = (400, 600)  # with aspect <= 4/3 the short side stays >= 300
SMALL_LONG_SIDE = (64, 400)
LARGE_LONG_SIDE = (600, 1100)
PROGRESSIVE_FRACTION = 0.03
GRAYSCALE_FRACTION = 0.03
QUALITY_RANGE = (85, 95)  # inclusive
MIN_CROP_AREA = 0.35  # smaller crops are upscaled too much and look (and compress) flat
SHARPEN = ImageFilter.UnsharpMask(radius=1.5, percent=200, threshold=1)
GRAIN_SIGMA = (4.0, 9.0)  # std-dev of added sensor-like luma noise, in 0..255 units


@dataclass(frozen=True)
class CorpusSummary:
    """What make_imagenet_like wrote; printed by the CLI as one line."""

    out_dir: Path
    count: int
    classes: int
    total_bytes: int

    @property
    def mean_bytes(self) -> float:
        return self.total_bytes / self.count if self.count else 0.0

    def __str__(self) -> str:
        return (f"{self.count} images, {self.classes} classes, "
                f"{self.total_bytes / 1e6:.1f} MB total, "
                f"{self.mean_bytes / 1e3:.1f} KB mean -> {self.out_dir}")


# --------------------------------------------------------------------------
# Source photos and rendering primitives
# --------------------------------------------------------------------------

def source_dir() -> Path:
    """skimage/data, found without importing skimage (its deps are absent)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"tools/corpus.py needs scikit-image's photos: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


@functools.lru_cache(maxsize=1)
def _sources() -> tuple[Image.Image, ...]:
    """Decoded RGB source photos, loaded once per process."""
    root = source_dir()
    images = []
    for name in SOURCE_PHOTOS:
        with Image.open(root / name) as im:
            images.append(im.convert("RGB"))
    return tuple(images)


def _random_view(rng: np.random.Generator, size: tuple[int, int],
                 min_area: float = 0.1) -> Image.Image:
    """A random crop of a random source with ``size``'s aspect, resized to ``size``.

    The crop covers ``min_area``..1 of the source's area (clamped to fit), so
    the same photo yields both close-ups and wide views.
    """
    src = _sources()[rng.integers(len(_sources()))]
    sw, sh = src.size
    aspect = size[0] / size[1]
    area = rng.uniform(min_area, 1.0) * sw * sh
    cw, ch = np.sqrt(area * aspect), np.sqrt(area / aspect)
    shrink = max(cw / sw, ch / sh, 1.0)
    cw, ch = min(cw / shrink, sw), min(ch / shrink, sh)
    x0, y0 = rng.uniform(0, sw - cw), rng.uniform(0, sh - ch)
    view = src.resize(size, Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return view


def _add_detail(img: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    """Sharpening, mild colour jitter and luma/chroma grain.

    Crops of ~500 px sources resized to ~500 px are smoother than downscaled
    camera output and compress to ~70 KB instead of ImageNet's ~110 KB; this
    restores realistic high-frequency entropy.
    """
    arr = np.asarray(img.filter(SHARPEN), dtype=np.float32)
    h, w, _ = arr.shape
    arr = arr * rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    arr += rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(sigma)
    arr += rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(sigma / 3)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


def _jpeg_bytes(img: Image.Image, quality: int, progressive: bool = False) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(quality), progressive=progressive)
    return buf.getvalue()


# --------------------------------------------------------------------------
# ImageNet-like ImageFolder tree
# --------------------------------------------------------------------------

def _target_size(rng: np.random.Generator) -> tuple[int, int]:
    """(w, h): mostly 300-600 px a side, a few smaller/larger, aspect 3/4..4/3."""
    tail = rng.random()
    if tail < SMALL_FRACTION:
        lo, hi = SMALL_LONG_SIDE
    elif tail < SMALL_FRACTION + LARGE_FRACTION:
        lo, hi = LARGE_LONG_SIDE
    else:
        lo, hi = CORE_LONG_SIDE
    long_side = int(rng.integers(lo, hi + 1))
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    short_side = max(16, round(long_side / max(aspect, 1 / aspect)))
    return (long_side, short_side) if aspect >= 1 else (short_side, long_side)


def image_relpath(index: int, num_classes: int) -> tuple[str, int]:
    """Relative path and label of image ``index`` (classes assigned round-robin)."""
    label = index % num_classes
    return f"class_{label:03d}/img_{index:06d}.jpg", label


class ImagePlan(NamedTuple):
    """Per-image choices, drawn before any pixels so they are cheap to inspect."""

    size: tuple[int, int]
    grain: float
    quality: int
    grayscale: bool
    progressive: bool


def plan_image(rng: np.random.Generator) -> ImagePlan:
    return ImagePlan(
        size=_target_size(rng),
        grain=float(rng.uniform(*GRAIN_SIGMA)),
        quality=int(rng.integers(QUALITY_RANGE[0], QUALITY_RANGE[1] + 1)),
        grayscale=bool(rng.random() < GRAYSCALE_FRACTION),
        progressive=bool(rng.random() < PROGRESSIVE_FRACTION),
    )


def _image_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng((seed, index))


def imagenet_like_plan(seed: int, index: int) -> ImagePlan:
    """The choices render_imagenet_like(seed, index) makes, without rendering."""
    return plan_image(_image_rng(seed, index))


def render_imagenet_like(seed: int, index: int) -> bytes:
    """JPEG bytes of image ``index``; depends only on (seed, index)."""
    rng = _image_rng(seed, index)
    plan = plan_image(rng)
    img = _add_detail(_random_view(rng, plan.size, MIN_CROP_AREA), rng, plan.grain)
    if plan.grayscale:
        img = img.convert("L")
    return _jpeg_bytes(img, plan.quality, plan.progressive)


def _write_one(job: tuple[str, int, int, int]) -> int:
    """Pool task: render and write one image; returns its size in bytes."""
    out_dir, num_classes, seed, index = job
    relpath, _ = image_relpath(index, num_classes)
    data = render_imagenet_like(seed, index)
    Path(out_dir, relpath).write_bytes(data)
    return len(data)


def make_imagenet_like(out_dir, num_images: int, num_classes: int = 10, seed: int = 0,
                       workers: int | None = None, progress: bool = True) -> CorpusSummary:
    """Write ``out_dir/class_XXX/img_XXXXXX.jpg`` plus ``out_dir/list.txt``.

    list.txt has one ``relative/path<TAB>label`` line per image, sorted by path
    (ImageFolder order).  ``workers`` defaults to the CPU count; 1 renders in
    this process.  Files from an earlier, larger run are left alone but not
    listed.
    """
    if num_images < 0 or num_classes < 1:
        raise ValueError("num_images must be >= 0 and num_classes >= 1")
    out = Path(out_dir)
    for label in range(num_classes):
        (out / f"class_{label:03d}").mkdir(parents=True, exist_ok=True)
    _sources()  # load before forking so workers inherit the decoded photos
    jobs = [(str(out), num_classes, seed, i) for i in range(num_images)]
    workers = workers or os.cpu_count() or 1
    total = 0
    with _progress(progress, num_images) as bar:
        for nbytes in _map(_write_one, jobs, workers):
            total += nbytes
            bar.update(1)
    entries = sorted(image_relpath(i, num_classes) for i in range(num_images))
    (out / "list.txt").write_text("".join(f"{p}\t{label}\n" for p, label in entries))
    return CorpusSummary(out, num_images, num_classes, total)


def _map(fn, jobs, workers: int):
    """Unordered map, in-process for one worker (tests, debugging)."""
    if workers <= 1 or len(jobs) < 2:
        yield from map(fn, jobs)
        return
    with multiprocessing.get_context().Pool(workers) as pool:
        yield from pool.imap_unordered(fn, jobs, chunksize=16)


def _progress(enabled: bool, total: int):
    from tqdm import tqdm
    return tqdm(total=total, unit="img", disable=not enabled, file=sys.stderr)


# --------------------------------------------------------------------------
# Small files for unit tests
# --------------------------------------------------------------------------

def make_small_jpegs(out_dir, n: int, size: tuple[int, int] = (64, 48),
                     seed: int = 0) -> list[Path]:
    """``n`` tiny real-photo JPEGs ``small_XXXX.jpg`` (quality 90); returns their paths.

    Downscaled crops keep real photographic detail, so decoders and resizers
    are exercised on realistic content while tests stay fast.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = out / f"small_{i:04d}.jpg"
        path.write_bytes(_jpeg_bytes(_random_view(rng, tuple(size)), 90))
        paths.append(path)
    return paths


# --------------------------------------------------------------------------
# Hostile inputs
# --------------------------------------------------------------------------

def make_hostile_files(out_dir) -> dict[str, Path]:
    """Write inputs a robust packer must survive; returns name -> path.

    - ``empty``: ``empty.jpg``, zero bytes.
    - ``truncated``: ``truncated.jpg``, the first half of a valid 320x240 JPEG
      (SOI and headers intact, no EOI).
    - ``random_bytes``: ``random_bytes.jpg``, 4096 random bytes (no image magic).
    - ``png_as_jpg``: ``png_as_jpg.jpg``, a valid RGB PNG; the content, not the
      extension, must decide the decoder.
    - ``rgba_png``: ``rgba.png``, 96x64 RGBA; the right half has alpha 0 over
      pure magenta RGB, so dropping alpha without compositing is visible.
    - ``gray16_png``: ``gray16.png``, 256x32 16-bit grayscale whose columns ramp
      0..65535 (column x = x * 257); clipping to 255 vs. scaling by 1/257 is
      detectable (Pillow opens it as ``I;16`` or ``I``).
    - ``cmyk_jpg``: ``cmyk.jpg``, a CMYK JPEG (Adobe, inverted, as Pillow writes).
    - ``gray_jpg``: ``gray.jpg``, a single-channel (L) JPEG.
    - ``gif``: ``anim.gif``, a 2-frame palette GIF (first frame is what counts).
    - ``bmp``: ``image.bmp``, a 24-bit BMP.
    - ``webp``: ``image.webp``, a lossy WebP.
    - ``exif_rotated``: ``exif_orient6.jpg``, stored 96x64 (landscape) with EXIF
      Orientation = 6 and a pure red 16x16 block in the stored top-left corner.
      Displayed correctly (rotated 90 deg clockwise) it is 64x96 portrait with
      the red block in the top-right corner.
    - ``directory``: ``dir.jpg/``, a directory with an image extension.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    photo = _random_view(rng, (96, 64), min_area=0.3)
    files = {
        "empty": ("empty.jpg", b""),
        "truncated": ("truncated.jpg", _truncated_jpeg(rng)),
        "random_bytes": ("random_bytes.jpg", _random_bytes(rng, 4096)),
        "png_as_jpg": ("png_as_jpg.jpg", _encode(photo, "PNG")),
        "rgba_png": ("rgba.png", _encode(_half_transparent(photo), "PNG")),
        "gray16_png": ("gray16.png", _encode(_gray16_ramp(), "PNG")),
        "cmyk_jpg": ("cmyk.jpg", _encode(photo.convert("CMYK"), "JPEG", quality=90)),
        "gray_jpg": ("gray.jpg", _encode(photo.convert("L"), "JPEG", quality=90)),
        "gif": ("anim.gif", _two_frame_gif(photo)),
        "bmp": ("image.bmp", _encode(photo, "BMP")),
        "webp": ("image.webp", _encode(photo, "WEBP", quality=80)),
        "exif_rotated": ("exif_orient6.jpg", _exif_orient6(photo)),
    }
    paths = {}
    for name, (filename, data) in files.items():
        paths[name] = out / filename
        paths[name].write_bytes(data)
    paths["directory"] = out / "dir.jpg"
    paths["directory"].mkdir(exist_ok=True)
    return paths


def _encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _truncated_jpeg(rng: np.random.Generator) -> bytes:
    data = _jpeg_bytes(_random_view(rng, (320, 240)), 90)
    return data[: len(data) // 2]


def _random_bytes(rng: np.random.Generator, n: int) -> bytes:
    data = bytearray(rng.integers(0, 256, size=n, dtype=np.uint8).tobytes())
    data[:4] = b"\x00RND"  # never accidentally a JPEG/PNG/GIF/BMP/RIFF magic
    return bytes(data)


def _half_transparent(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    w, h = rgba.size
    rgba.paste((255, 0, 255, 0), (w // 2, 0, w, h))
    return rgba


def _gray16_ramp() -> Image.Image:
    ramp = (np.arange(256, dtype=np.uint16) * 257)[None, :].repeat(32, axis=0)
    return Image.fromarray(ramp)  # mode I;16


def _two_frame_gif(img: Image.Image) -> bytes:
    frames = [img.convert("P"), img.transpose(Image.Transpose.FLIP_TOP_BOTTOM).convert("P")]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:],
                   duration=100, loop=0)


def _exif_orient6(img: Image.Image) -> bytes:
    marked = img.copy()
    marked.paste((255, 0, 0), (0, 0, 16, 16))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    return _encode(marked, "JPEG", quality=95, exif=exif.tobytes())


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """Shared by this file and benchmarks/make_corpus.py."""
    p = argparse.ArgumentParser(prog=prog, description="Write an ImageNet-like JPEG "
                                "ImageFolder tree cut from real photos.")
    p.add_argument("out", type=Path, help="output directory")
    p.add_argument("--images", type=int, default=1000, help="number of images")
    p.add_argument("--classes", type=int, default=10, help="number of class folders")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPUs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    start = time.perf_counter()
    summary = make_imagenet_like(args.out, args.images, args.classes, args.seed,
                                 workers=args.workers, progress=not args.quiet)
    elapsed = time.perf_counter() - start
    print(f"{summary}; {elapsed:.1f} s, {summary.count / max(elapsed, 1e-9):.0f} img/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
