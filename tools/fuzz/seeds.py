"""Seed corpora for recpack's fuzz targets (recpack/jpeg/fuzz/), from tools/corpus.py's real photos.

Each target gets small files of every kind its C code meets or refuses: baseline JPEGs in 4:4:4, 4:2:2,
4:2:0, 4:4:0 and 4:1:1, progressive and optimised ones, grey ones, restart intervals, partial MCUs and
1x1 images, CMYK, RGB-coded (Adobe transform 0), EXIF, a truncated file and a few that are not JPEGs,
each behind the parameter bytes its target reads first (the layouts are in the targets' comments).
Given libjpeg-turbo's cjpeg (tools/fuzz.sh builds it), also what Pillow cannot write: arithmetic coding,
RGB colour space, sampling factors such as 3x1 or 2x2,2x1,1x1.

    python tools/fuzz/seeds.py OUT [--cjpeg PATH]    # writes OUT/<target>/<seed>; run by tools/fuzz.sh
"""

from __future__ import annotations

import argparse
import io
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import corpus  # noqa: E402  (tools/ is not a package)


def _jpeg(image: Image.Image, **save) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", **save)
    return out.getvalue()


def _turbo(image: Image.Image, subsampling_name: str) -> bytes | None:
    """4:4:0 and 4:1:1, which Pillow does not write; None without PyTurboJPEG."""
    try:
        import turbojpeg
        return turbojpeg.TurboJPEG().encode(np.asarray(image.convert("RGB")), quality=85,
                                            jpeg_subsample=getattr(turbojpeg, subsampling_name))
    except Exception:  # noqa: BLE001  (no libturbojpeg, or a sampling this build lacks: fewer seeds)
        return None


def _adobe_rgb(jpeg: bytes) -> bytes:
    """The same file saying its components are R, G, B (Adobe transform 0 in place of JFIF)."""
    adobe = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
    return jpeg[:2] + adobe + jpeg[4 + int.from_bytes(jpeg[4:6], "big"):]


CJPEG_OPTIONS = {  # seed name -> cjpeg options, for the colour photo (grey ones convert it)
    "arith_420": ["-arithmetic"],
    "arith_progressive": ["-arithmetic", "-progressive"],
    "arith_restarts": ["-arithmetic", "-restart", "2B"],
    "grey_arith": ["-grayscale", "-arithmetic"],
    "grey_progressive_restarts": ["-grayscale", "-progressive", "-restart", "1"],
    "rgb_colour_space": ["-rgb"],
    "sampling_3x1": ["-sample", "3x1,1x1,1x1"],
    "sampling_2x2_2x1": ["-sample", "2x2,2x1,1x1"],
    "sampling_1x4": ["-sample", "1x4,1x1,1x1", "-progressive"],
    "grey_sampling_2x2": ["-grayscale", "-sample", "2x2"],
}


def _cjpeg(cjpeg: Path, image: Image.Image, work: Path) -> dict[str, bytes]:
    """Seeds only libjpeg's own encoder writes; {} if it fails."""
    source = work / "photo.ppm"
    image.save(source)
    seeds = {}
    for name, options in CJPEG_OPTIONS.items():
        result = subprocess.run([str(cjpeg), "-quality", "85", *options, str(source)], capture_output=True)
        if result.returncode == 0 and result.stdout[:2] == b"\xff\xd8":
            seeds[name] = result.stdout
        else:
            print(f"seeds: cjpeg {' '.join(options)} failed: {result.stderr.decode(errors='replace')}", file=sys.stderr)
    return seeds


def files(work: Path, cjpeg: Path | None = None) -> dict[str, bytes]:
    """Name -> bytes of every seed file (before parameters)."""
    photos = [Image.open(path).convert("RGB") for path in corpus.make_small_jpegs(work / "photos", 3, (64, 48))]
    hostile = corpus.make_hostile_files(work / "hostile")
    photo, other = photos[0], photos[1].resize((37, 29))
    grey = photo.convert("L")
    seeds = {
        "baseline_420": _jpeg(photo, quality=90),
        "baseline_444": _jpeg(photo, quality=90, subsampling=0),
        "baseline_422": _jpeg(other, quality=75, subsampling=1),
        "partial_mcus_420": _jpeg(other, quality=90),
        "optimized_444": _jpeg(other, quality=95, subsampling=0, optimize=True),
        "quality_100": _jpeg(photo.resize((16, 16)), quality=100),
        "progressive_420": _jpeg(photo, quality=85, progressive=True),
        "progressive_444": _jpeg(other, quality=85, progressive=True, subsampling=0),
        "restarts_420": _jpeg(other, quality=85, restart_marker_blocks=2),
        "one_pixel": _jpeg(photo.resize((1, 1)), quality=90),
        "grey": _jpeg(grey, quality=90),
        "grey_partial": _jpeg(other.convert("L"), quality=80),
        "grey_1x1": _jpeg(grey.resize((1, 1)), quality=90),
        "grey_17x9": _jpeg(grey.resize((17, 9)), quality=90),
        "grey_progressive": _jpeg(grey, quality=85, progressive=True),
        "grey_optimized": _jpeg(grey, quality=85, optimize=True),
        "grey_restarts": _jpeg(other.convert("L"), quality=85, restart_marker_blocks=3),
        "rgb_coded": _adobe_rgb(_jpeg(other, quality=85, subsampling=0)),
        "exif_rotated": hostile["exif_rotated"].read_bytes(),
        "cmyk": hostile["cmyk_jpg"].read_bytes(),
        "truncated": hostile["truncated"].read_bytes()[:3000],
        "not_a_jpeg": hostile["random_bytes"].read_bytes()[:256],
        "empty": b"",
    }
    for name in ("TJSAMP_440", "TJSAMP_411"):
        data = _turbo(other, name)
        if data is not None:
            seeds[f"turbo_{name[7:]}"] = data
    if cjpeg is not None:
        seeds.update(_cjpeg(cjpeg, other, work))
    return seeds


def _region(left: int, top: int, width: int, height: int, eighths: int) -> bytes:
    return struct.pack(">IIIIB", left, top, width, height, eighths)


def _shrink(eighths: int, width: int, height: int, quality: int) -> bytes:
    return struct.pack(">BHHB", eighths, width, height, quality)


def _place(left: float, top: float, width: float, height: float, eighths: int, out_width: int, out_height: int,
           gap: int, flip: int) -> bytes:
    return struct.pack(">IIIIBHHBB", *(round(value * 16) for value in (left, top, width, height)), eighths, out_width,
                       out_height, gap, flip)


def target_seeds(files: dict[str, bytes]) -> dict[str, dict[str, bytes]]:
    """Target -> seed name -> input (parameters, then the file)."""
    plain = dict(files)
    grey = {name: data for name, data in files.items() if name.startswith("grey")}
    region = {}
    for name, data in files.items():
        for i, params in enumerate([_region(0, 0, 1 << 16, 1 << 16, 8), _region(9, 5, 20, 17, 4),
                                    _region(3, 2, 6, 4, 1), _region(40, 30, 100, 100, 16)]):
            region[f"{name}_{i}"] = params + data
    whole = {f"{name}_{e}": bytes([e]) + data for name, data in files.items() for e in (8, 2, 3)}
    shrink = {}
    for name, data in files.items():
        for i, params in enumerate([_shrink(8, 20, 15, 90), _shrink(4, 7, 5, 75), _shrink(2, 31, 23, 96),
                                    _shrink(1, 1, 1, 50)]):
            shrink[f"{name}_{i}"] = params + data
    placed = {}
    for name, data in files.items():
        for i, params in enumerate([_place(0, 0, 64, 48, 8, 32, 24, 0, 0), _place(0, 0, 37, 29, 4, 50, 40, 7, 1),
                                    _place(3.5, 2.25, 20, 17.5, 8, 9, 11, 3, 0), _place(0, 0, 1, 1, 8, 1, 1, 0, 1),
                                    _place(30, 20, 100, 100, 2, 5, 3, 1, 0)]):
            placed[f"{name}_{i}"] = params + data
    rng = np.random.default_rng(0)
    pixels = np.asarray(Image.open(io.BytesIO(files["grey"]))).tobytes()
    resample = {}
    for i in range(24):
        sizes = [int(value) for value in rng.integers(1, 200, size=4)]
        resample[f"plane_{i}"] = struct.pack(">HHHHB", *sizes, i % 16) + pixels[: int(rng.integers(1, 3000))]
    return {
        "libjpeg_check": plain,
        "libjpeg_gray_to_color": plain,
        "libjpeg_decode_region": region,
        "libjpeg_decode_whole": whole,
        "libjpeg_shrink": shrink,
        "libjpeg_place": placed,
        "resample_plane": resample,
        "jpegscan_scan_is_clean": plain,
        "jpegscan_gray_to_color": {**grey, **{name: data for name, data in plain.items() if name not in grey}},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--cjpeg", type=Path, help="libjpeg-turbo's cjpeg, for the seeds Pillow cannot write")
    args = parser.parse_args(argv)
    out = args.out
    with tempfile.TemporaryDirectory() as work:
        seeds = target_seeds(files(Path(work), args.cjpeg))
    for target, inputs in seeds.items():
        folder = out / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in inputs.items():
            (folder / name).write_bytes(data)
    print(f"seeds: {sum(map(len, seeds.values()))} inputs for {len(seeds)} targets in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
