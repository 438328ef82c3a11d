"""recpack stats: exact statistics of what the reader decodes, mergeable over any split, safely written.

Reference numbers come from numpy float64 over the very pixels RecordDataset's decoder
yields at full size (``decode_image`` with ``Augment(mode="full")``), record by record.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import corpus
from recpack.cli import main
from recpack.errors import BadImageError, ManifestError
from recpack.format import framing
from recpack.format import manifest as mf
from recpack.format import stats as contract
from recpack.format.schema import Payload, pack_payload
from recpack.measure.stats import _pixels
from recpack.measure.stats.run import (StatsOptions, _measure_record, _Spec, finer_tail, measure_unit, plan_units,
                                      run)
from recpack.measure.stats.summary import mean_std, median_frequency_weights, sample_intervals
from recpack.measure.stats.tally import Tally, merge
from recpack.pack.importer import import_rec
from recpack.pack.packer import pack
from recpack.pack.plan import PackOptions
from recpack.pack.sources import open_source
from recpack.read.decode import Augment, decode_image
from recpack.read.opening import shard_reader

SIDE = 16  # the average image's side in these tests
# Every path of the kernel this CPU can run (0 plain C, 1 AVX2), not only the one a pass takes.
PATHS = list(range(_pixels.best_path() + 1))


# --- fixtures -----------------------------------------------------------------------------

def _photo(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A small real-photo crop (tools/corpus.py), so decoders see photographic content."""
    return corpus._random_view(rng, size)


def _encoded(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """36 images of varied sizes in 3 classes, with a grayscale JPEG, a CMYK JPEG and a PNG among them."""
    root = tmp_path_factory.mktemp("stats")
    rng = np.random.default_rng(7)
    for index in range(36):
        folder = root / "images" / f"class{index % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        size = (int(rng.integers(9, 70)), int(rng.integers(9, 70)))
        image = _photo(rng, size)
        data = {0: _encoded(image.convert("L"), "JPEG", quality=90), 1: _encoded(image.convert("CMYK"), "JPEG"),
                2: _encoded(image, "PNG")}.get(index, _encoded(image, "JPEG", quality=85))
        (folder / f"{index:03d}.jpg").write_bytes(data)  # the content decides the type
    out = root / "out"
    pack(open_source(str(root / "images")), str(out), PackOptions(shards=3, workers=1, fsync=False), show_progress=False)
    return out


@pytest.fixture(scope="session")
def full_stats(dataset) -> dict:
    """The dataset's statistics from one full pass (tests that change the manifest work on copies)."""
    return run(str(dataset), StatsOptions(mean_size=SIDE, workers=2, progress=False)).stats


def _copy(dataset_dir, folder):
    """The dataset's shards and manifest in another folder (the manifest may name an average image not copied)."""
    folder.mkdir()
    for name in os.listdir(dataset_dir):
        if name.startswith("shard-") or name == mf.MANIFEST_NAME:
            (folder / name).write_bytes((dataset_dir / name).read_bytes())
    return folder


def _records(dataset_dir) -> list[tuple[int, int, Payload]]:
    manifest = mf.load(str(dataset_dir))
    found = []
    for shard_index, shard in enumerate(manifest.shards):
        reader = shard_reader(str(dataset_dir), shard)
        for index in range(shard.records):
            found.append((shard_index, index, reader.read_payload(index)))
    return found


def _reader_pixels(image) -> np.ndarray:
    """The full-size (H, W, 3) uint8 pixels RecordDataset yields for an image."""
    pixels, _ = decode_image(image, Augment(mode="full", train=False), None)
    return np.ascontiguousarray(pixels)


def _numpy_stats(images: list[np.ndarray]) -> dict:
    flat = np.concatenate([image.reshape(-1, 3).astype(np.float64) for image in images])
    return {"mean": flat.mean(0) / 255, "std": flat.std(0) / 255, "min": flat.min(0) / 255, "max": flat.max(0) / 255}


def _squash(image: np.ndarray, side: int) -> np.ndarray:
    """The average image's resize, written plainly: nearest neighbour, the input pixel under each output centre."""
    height, width = image.shape[:2]
    rows = [(2 * k + 1) * height // (2 * side) for k in range(side)]
    columns = [(2 * k + 1) * width // (2 * side) for k in range(side)]
    return image[np.ix_(rows, columns)][..., :3].astype(np.int64)


# --- the kernel ---------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.integers(1, 90), st.integers(1, 40), st.integers(0, 2**32 - 1), st.sampled_from([1, 3, 31]),
       st.sampled_from([1, 5, 16, 64]))
def test_kernel_sums_squares_extremes_histogram_and_average(width, height, seed, step, side):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    if seed % 3 == 0:
        pixels[..., :3] = rng.integers(100, 102, (height, width, 3))  # few values: long runs
    histogram, resized = np.zeros((3, 256), np.uint64), np.zeros((side, side, 4), np.uint16)
    sums, squares, low, high = _pixels.measure_rgbx(pixels, width, height, side, resized, histogram, step)
    values = pixels[..., :3].reshape(-1, 3).astype(np.int64)
    assert list(sums) == values.sum(0).tolist() and list(squares) == (values ** 2).sum(0).tolist()
    assert list(low) == values.min(0).tolist() and list(high) == values.max(0).tolist()
    sampled = values[::step]
    assert histogram.tolist() == [np.bincount(sampled[:, c], minlength=256).tolist() for c in range(3)]
    assert np.array_equal(resized[..., :3], _squash(pixels, side))
    _pixels.measure_rgbx(pixels, width, height, side, resized, histogram, step, True)  # undo
    assert not histogram.any() and not resized[..., :3].any()


# The average image's vector pick moves up to 8 outputs out of each 8-pixel window of a row (its last window
# clamped to the row's end); it stands aside under 8 pixels and past 16 inputs an output (3585 / 224).
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("width", [8, 9, 15, 223, 224, 225, 447, 470, 1791, 3584, 3585])
def test_average_image_pick_over_widths_around_its_windows(width, path):
    side = 224
    pixels = np.random.default_rng(width).integers(0, 256, (3, width, 4), dtype=np.uint8)
    histogram, resized = np.zeros((3, 256), np.uint64), np.zeros((side, side, 4), np.uint16)
    _pixels.measure_rgbx(pixels, width, 3, side, resized, histogram, 7, False, path)
    assert np.array_equal(resized[..., :3], _squash(pixels, side))
    _pixels.measure_rgbx(pixels, width, 3, side, resized, histogram, 7, True, path)
    assert not resized.any()


def _moments_of(pixels: np.ndarray, path: int) -> tuple[list, list, list, list]:
    height, width = pixels.shape[:2]
    histogram = np.zeros((3, 256), np.uint64)
    sums, squares, low, high = _pixels.measure_rgbx(pixels, width, height, 0, None, histogram, 1 << 40, False, path)
    return list(sums), list(squares), list(low), list(high)


def _numpy_moments(pixels: np.ndarray) -> tuple[list, list, list, list]:
    values = pixels[..., :3].reshape(-1, 3).astype(np.uint64)
    return (values.sum(0).tolist(), (values * values).sum(0).tolist(), values.min(0).tolist(),
            values.max(0).tolist())


# Widths around the vector paths' 8-pixel blocks (7: no block; 8, 16: whole blocks only; the rest a partial
# last block), and long rows that cross the AVX2 path's flushes of its 16-bit sums (every 257 blocks) within a row.
LANE_WIDTHS = [1, 7, 8, 9, 13, 16, 17, 31, 470, 2056, 2057, 8 * 257 * 3 + 5]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("width", LANE_WIDTHS)
def test_kernel_moments_keep_each_channel_in_its_own_lanes(width, path):
    """Each channel drawn from its own range (R 0-63, G 96-159, B 192-255, X anything): a value counted in
    another channel's lane moves that channel's sum, squares and extremes away from numpy's."""
    rng = np.random.default_rng(width)
    height = max(1, 60_000 // width)
    pixels = np.empty((height, width, 4), np.uint8)
    for channel, start in enumerate((0, 96, 192)):
        pixels[..., channel] = rng.integers(start, start + 64, (height, width))
    pixels[..., 3] = rng.integers(0, 256, (height, width))  # X: must count nowhere
    assert _moments_of(pixels, path) == _numpy_moments(pixels)
    pixels[..., 3] = 255 - pixels[..., 3]
    assert _moments_of(pixels, path) == _numpy_moments(pixels)
    # each channel's extremes at one place each, the rest of the image held inside them
    low, high = pixels.copy(), pixels.copy()
    for channel in range(3):
        y, x = rng.integers(height), rng.integers(width)
        low[y, x, channel] = 0 if channel else 255  # R's maximum, G's and B's minimum
        high[y, x, channel] = 255 if channel < 2 else 0
    for image in (low, high):
        assert _moments_of(image, path) == _numpy_moments(image)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("width", [8, 470, 2057, 8 * 257 + 3])
def test_kernel_moments_do_not_overflow_their_lanes(width, path):
    """All-255 pixels: every lane of the 16-bit sums and 32-bit squares at its largest, over more blocks than the
    squares' flush period (33025 blocks of 8 pixels: 264,200 pixels and more), so a flush one block late shows."""
    height = -(-33025 * 8 * 5 // 4 // width)  # about 1.25 flush periods of whole and partial blocks
    pixels = np.full((height, width, 4), 255, np.uint8)
    sums, squares, low, high = _moments_of(pixels, path)
    count = width * height
    assert sums == [255 * count] * 3 and squares == [255 * 255 * count] * 3
    assert low == [255] * 3 and high == [255] * 3
    pixels[..., :3] = 254  # and below 255, with X still 255
    pixels[-1, -1, 1] = 3
    assert _moments_of(pixels, path) == _numpy_moments(pixels)


def test_kernel_refuses_a_path_this_cpu_lacks():
    pixels = np.zeros((1, 8, 4), np.uint8)
    with pytest.raises(ValueError, match="path"):
        _pixels.measure_rgbx(pixels, 8, 1, 0, None, np.zeros((3, 256), np.uint64), 1, False, _pixels.best_path() + 1)


def test_streaming_decode_measures_the_pixels_the_reader_decodes(dataset, hostile):
    jpegs = [payload.image for _, _, payload in _records(dataset)][:12] + [hostile["gray_jpg"].read_bytes()]
    for data in jpegs:
        pixels = _reader_pixels(data)
        histogram = np.zeros((3, 256), np.uint64)
        width, height, (sums, squares, low, high) = _pixels.measure_jpeg(data, 0, None, histogram, 1, 1 << 40)
        values = pixels.reshape(-1, 3).astype(np.int64)
        assert (width, height) == (pixels.shape[1], pixels.shape[0])
        assert list(sums) == values.sum(0).tolist() and list(squares) == (values ** 2).sum(0).tolist()
        assert list(low) == values.min(0).tolist() and list(high) == values.max(0).tolist()
        assert histogram.sum(1).tolist() == [len(values)] * 3


def test_a_jpeg_that_does_not_decode_adds_nothing(hostile):
    histogram, resized = np.zeros((3, 256), np.uint64), np.zeros((4, 4, 4), np.uint16)
    for data in (hostile["random_bytes"].read_bytes(), hostile["cmyk_jpg"].read_bytes(), b""):
        with pytest.raises(ValueError):
            _pixels.measure_jpeg(data, 4, resized, histogram, 1, 1 << 40)
    big = _encoded(Image.new("RGB", (300, 200)), "JPEG")
    with pytest.raises(ValueError, match="limit"):
        _pixels.measure_jpeg(big, 4, resized, histogram, 1, 300 * 200 - 1)
    assert not histogram.any() and not resized.any()


# --- the whole pass -----------------------------------------------------------------------

def test_full_pass_equals_numpy_float64_over_the_decoded_pixels(dataset, full_stats):
    stats = full_stats
    mean_image = contract.load_mean_image(str(dataset), stats)
    images = [_reader_pixels(payload.image) for _, _, payload in _records(dataset)]
    expected = _numpy_stats(images)
    for name in ("mean", "std", "min", "max"):
        np.testing.assert_allclose(stats[name], expected[name], rtol=1e-6, err_msg=name)
    assert stats["scale"] == "0-1" and stats["computed"]["method"] == "full"
    assert stats["images"] == len(images) and stats["failed"] == {"count": 0, "records": []}
    assert stats["pixels"] == sum(image.shape[0] * image.shape[1] for image in images)
    average = np.sum([_squash(image, SIDE) for image in images], 0) / (255 * len(images))
    np.testing.assert_allclose(mean_image, average, rtol=1e-6)
    assert stats["labels"] == {"kind": "single", "values": [0, 1, 2], "records": [12, 12, 12]}
    widths = sorted(image.shape[1] for image in images)
    assert stats["width"]["min"] == widths[0] and stats["width"]["max"] == widths[-1]
    assert stats["width"]["median"] == widths[(len(widths) - 1) // 2]
    assert json.loads(json.dumps(stats)) == stats


def test_records_that_are_not_plain_jpegs_count_as_the_reader_decodes_them(tmp_path, hostile):
    """An imported .rec may hold CMYK JPEGs, PNGs and grayscale JPEGs as they are: three channels each."""
    images = [hostile[name].read_bytes() for name in ("cmyk_jpg", "png_as_jpg", "gray_jpg", "rgba_png", "bmp")]
    framed = b"".join(bytes(piece) for i, data in enumerate(images)
                      for piece in framing.frame_record(b"".join(bytes(p) for p in pack_payload(Payload([i], i, data)))))
    (tmp_path / "foreign.rec").write_bytes(framed)  # as MXNet's im2rec --pass-through stores what it finds
    import_rec([str(tmp_path / "foreign.rec")], str(tmp_path / "out"), show_progress=False)
    stats = run(str(tmp_path / "out"), StatsOptions(mean_size=SIDE, workers=1, progress=False)).stats
    expected = _numpy_stats([_reader_pixels(data) for data in images])
    for name in ("mean", "std", "min", "max"):
        np.testing.assert_allclose(stats[name], expected[name], rtol=1e-6, err_msg=name)
    assert stats["images"] == len(images)


def test_a_corrupt_record_is_counted_and_named_not_fatal(tmp_path, dataset, capsys):
    copy = _copy(dataset, tmp_path / "copy")
    manifest = mf.load(str(copy))
    reader = shard_reader(str(copy), manifest.shards[1])
    offset = int(reader.rows[2]["offset"]) + 40
    with open(copy / manifest.shards[1].rec.name, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert main(["stats", str(copy), "--quiet", "--mean-size", "0", "--workers", "1"]) == 0
    assert f"failed {manifest.shards[1].stem}: record 2: CRC32C mismatch\n" in capsys.readouterr().out
    stats = mf.load(str(copy)).stats
    assert stats["failed"] == {"count": 1, "records": [f"{manifest.shards[1].stem}: record 2: CRC32C mismatch"]}
    assert stats["images"] == manifest.num_records - 1 and "mean_image" not in stats


def _unit_tallies(dataset_dir, units, keep_per_image=False):
    manifest = mf.load(str(dataset_dir))
    spec = _Spec(SIDE, keep_per_image, manifest.has_masks, None)
    return [measure_unit(spec, shard_reader(str(dataset_dir), manifest.shards[shard]), shard, runs)
            for unit in units for shard, runs in unit]


def _same(a: Tally, b: Tally) -> bool:
    fields = [name for name in vars(a) if name not in ("mean_image", "pixel_histogram", "mask_pixels", "mask_image_pixels")]
    arrays = ("mean_image", "pixel_histogram", "mask_pixels", "mask_image_pixels")
    return (all(getattr(a, f) == getattr(b, f) for f in fields)
            and all(np.array_equal(getattr(a, f), getattr(b, f)) for f in arrays))


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 40), st.randoms(use_true_random=False))
def test_tallies_merged_from_any_split_equal_one_pass(dataset, unit_records, shuffler):
    sizes = [shard.records for shard in mf.load(str(dataset)).shards]
    whole = _unit_tallies(dataset, plan_units(sizes, None, 0, unit_records=10**6), keep_per_image=True)
    one_pass = whole[0]
    for part in whole[1:]:
        one_pass = merge(one_pass, part)
    parts = _unit_tallies(dataset, plan_units(sizes, None, 0, unit_records=unit_records), keep_per_image=True)
    shuffler.shuffle(parts)
    merged = Tally(SIDE, True)
    for part in parts:
        merged = merge(merged, part) if shuffler.random() < 0.5 else merge(part, merged)
    assert _same(merged, one_pass)


def test_plan_covers_every_record_once_and_a_sample_is_seeded():
    sizes = [5, 0, 700, 3]
    plan = plan_units(sizes, None, 0, unit_records=64)
    assert all(len(unit) == 1 and len(unit[0][1]) == 1 for unit in plan)  # a full pass: one run of one shard a unit
    covered = [(shard, i) for unit in plan for shard, runs in unit for first, stop in runs for i in range(first, stop)]
    assert covered == [(shard, i) for shard, size in enumerate(sizes) for i in range(size)]
    sample = plan_units(sizes, 50, 3, unit_records=8)
    drawn = [(shard, i) for unit in sample for shard, runs in unit for first, stop in runs for i in range(first, stop)]
    assert len(set(drawn)) == 50 and drawn == sorted(drawn)
    assert all(sum(stop - first for _, runs in unit for first, stop in runs) <= 8 for unit in sample)
    assert len(sample) == 7  # a sample's units take records from several shards: ceil(50 / 8), not one per shard
    assert sample == plan_units(sizes, 50, 3, unit_records=8) and sample != plan_units(sizes, 50, 4, unit_records=8)
    # the draw does not depend on how it is cut into units
    assert drawn == [(shard, i) for unit in plan_units(sizes, 50, 3, unit_records=13) for shard, runs in unit
                     for first, stop in runs for i in range(first, stop)]
    assert plan_units(sizes, 10**6, 0) == plan_units(sizes, None, 0)


def test_the_last_units_of_a_full_pass_are_finer_and_cover_the_same_records():
    sizes = [5, 0, 700, 3]
    plan = plan_units(sizes, None, 0, unit_records=64)
    finer = finer_tail(plan, workers=2)

    def records(units):
        return [(shard, i) for unit in units for shard, runs in unit
                for first, stop in runs for i in range(first, stop)]

    assert records(finer) == records(plan)
    assert finer[:len(plan) - 4] == plan[:-4]  # only the last 2 x workers units are cut
    assert [_unit_size(u) for u in finer[len(plan) - 4:]] == [16] * 8 + [15] * 4 + [1] * 3
    assert finer_tail(plan[:3], workers=4)[0] == ((0, ((0, 2),)),)  # fewer units than that: all of them cut
    several = [((0, ((0, 5),)), (2, ((0, 3),))), ((2, ((3, 4), (6, 9))),)]  # runs of a sample: left whole
    assert finer_tail(several, workers=2) == several


def _unit_size(unit) -> int:
    return sum(stop - first for _, runs in unit for first, stop in runs)


# --- summaries ----------------------------------------------------------------------------

def test_mean_and_std_are_exact_however_many_pixels():
    """(N*Q - S^2) / N^2 on integers: no cancellation, where E[x^2] - E[x]^2 in float64 loses every digit."""
    pixels = 10**15 + 1
    sums = [200 * 10**15 + 300]  # 10^15 pixels of 200 and one of 300: the mean just above 200
    squares = [40000 * 10**15 + 90000]
    mean, std = mean_std(pixels, sums, squares)
    exact = np.sqrt(10**15) / (10**15 + 1) * 100  # the standard deviation of 10^15 x 200 and one 300
    assert mean[0] == pytest.approx(200 + 100 / pixels, rel=1e-15) and std[0] == pytest.approx(exact, rel=1e-9)


def test_median_frequency_weights_by_hand():
    # image A (4 px): 3 of class 0, 1 of class 1; image B (4 px): 2 of class 1, 2 of class 3; class 2 never occurs
    pixels = np.zeros(256, np.uint64)
    image_pixels = np.zeros(256, np.uint64)
    for counts in ({0: 3, 1: 1}, {1: 2, 3: 2}):
        for c, n in counts.items():
            pixels[c] += n
            image_pixels[c] += sum(counts.values())
    frequency, weights = median_frequency_weights(pixels, image_pixels)
    # freq: class 0 3/4, class 1 3/8, class 3 2/4; median of (0.75, 0.375, 0.5) = 0.5
    assert frequency == [0.75, 0.375, 0.0, 0.5]
    assert weights == pytest.approx([0.5 / 0.75, 0.5 / 0.375, 0.0, 1.0])


def test_segmentation_dataset_gets_pixel_counts_and_weights(tmp_path):
    """Masks packed with their images; 255 is ignored: left out of every count."""
    masks = [np.array([[0, 0], [0, 1]]), np.array([[1, 1], [3, 255]]), np.array([[3, 3], [255, 255]])]
    lines = []
    rng = np.random.default_rng(1)
    for index, mask in enumerate(masks):
        big = np.kron(mask, np.ones((8, 8), int)).astype(np.uint8)  # 16x16
        Image.fromarray(big, "L").save(tmp_path / f"m{index}.png")
        _photo(rng, (16, 16)).save(tmp_path / f"i{index}.jpg", quality=90)
        lines.append(f"i{index}.jpg\t0\tm{index}.png")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    pack(open_source(str(tmp_path / "list.txt")), str(tmp_path / "out"), PackOptions(shards=2, fsync=False),
         show_progress=False)
    stats = run(str(tmp_path / "out"), StatsOptions(mean_size=None, ignore_index=255, progress=False)).stats
    masks_stats = stats["masks"]
    # per image, 64 px per mask cell: class 0: 192 of image 0 (256 labelled px); class 1: 64 of image 0 and
    # 128 of image 1 (192 labelled); class 3: 64 of image 1 and 128 of image 2 (128 labelled)
    assert masks_stats["ignore_index"] == 255
    assert masks_stats["pixels"] == [192, 192, 0, 192]
    assert masks_stats["image_pixels"] == [256, 256 + 192, 0, 192 + 128]
    frequency = [192 / 256, 192 / 448, 0.0, 192 / 320]
    median = float(np.median([f for f in frequency if f]))
    assert masks_stats["frequency"] == pytest.approx(frequency)
    assert masks_stats["weights"] == pytest.approx([median / f if f else 0.0 for f in frequency])


def test_sampled_interval_holds_the_full_value(tmp_path, dataset, full_stats):
    full_mean, full_std = full_stats["mean"], full_stats["std"]
    sampled = run(str(_copy(dataset, tmp_path / "copy")), StatsOptions(sample=24, seed=5, mean_size=None,
                                                                        progress=False)).stats
    assert sampled["computed"]["method"] == "sample" and sampled["computed"]["records"] == 24
    for name, truth in (("mean", full_mean), ("std", full_std)):
        for (low, high), value in zip(sampled["interval95"][name], truth):
            assert low <= value <= high, (name, low, value, high)


def test_interval_coverage_over_many_samples():
    """On a synthetic population of per-image moments, the 95% intervals hold the truth about 95% of the time."""
    rng = np.random.default_rng(0)
    population = 4000
    counts = rng.integers(1000, 5000, population)
    means = rng.beta(2, 3, (population, 3)) * 255
    spreads = rng.uniform(10, 70, (population, 3))
    sums = counts[:, None] * means
    squares = counts[:, None] * (spreads ** 2 + means ** 2)
    rows = np.concatenate([counts[:, None], sums, squares], 1)
    truth_mean = sums.sum(0) / counts.sum()
    truth_std = np.sqrt(squares.sum(0) / counts.sum() - truth_mean ** 2)
    hits = np.zeros(2)
    trials = 300
    for trial in range(trials):
        chosen = rng.choice(population, 200, replace=False)
        mean_ci, std_ci = sample_intervals(rows[chosen], population)
        hits[0] += np.mean((mean_ci[:, 0] <= truth_mean) & (truth_mean <= mean_ci[:, 1]))
        hits[1] += np.mean((std_ci[:, 0] <= truth_std) & (truth_std <= std_ci[:, 1]))
    coverage = hits / trials
    assert np.all(coverage > 0.9) and np.all(coverage < 0.99), coverage


# --- reading them back --------------------------------------------------------------------

def test_normalize_uses_the_stats_and_refuses_another_scale(tmp_path, dataset, full_stats):
    torch = pytest.importorskip("torch")
    from recpack.read.dataset import RecordDataset

    stats = mf.load(str(dataset)).stats
    ds = RecordDataset(str(dataset), batch_size=4, augment=Augment(size=8, train=False), normalize=True)
    mean, std = ds.normalize
    np.testing.assert_allclose(mean, np.float32(stats["mean"]) * 255, rtol=1e-6)
    np.testing.assert_allclose(std, np.float32(stats["std"]) * 255, rtol=1e-6)
    images, _ = next(iter(ds))
    assert images.dtype == torch.float32
    copy = _copy(dataset, tmp_path / "copy")
    for bad in ({**stats, "mean": [v * 255 for v in stats["mean"]]}, {**stats, "scale": "0-255"},
                {**stats, "std": [0.0, 0.1, 0.1]}):
        data = json.loads((dataset / mf.MANIFEST_NAME).read_text())
        data["stats"] = bad
        mf.write_json_atomic(str(copy / mf.MANIFEST_NAME), data, durable=False)
        with pytest.raises(ManifestError, match="0-1 scale"):
            RecordDataset(str(copy), normalize=True)


def test_cli_stats_json_info_and_plot(tmp_path, dataset, full_stats, capsys):
    result = run_cli("stats", dataset, "--json", "--quiet", "--mean-size", SIDE, "--plot", tmp_path / "report.png")
    stats = json.loads(result.stdout)
    assert stats["computed"]["records"] == 36 and len(stats["mean"]) == 3
    with Image.open(tmp_path / "report.png") as picture:
        assert picture.size[0] > 800 and picture.format == "PNG"
    assert main(["info", str(dataset)]) == 0
    info = capsys.readouterr().out
    assert "stats     every record (36)" in info and f"mean  {stats['mean'][0]:.4f}" in info
    assert main(["info", str(dataset), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stats"] == stats
    with pytest.raises(SystemExit) as refused:
        main(["stats", str(dataset), "--ignore-index", "300"])
    assert refused.value.code == 2 and "between 0 and 255" in capsys.readouterr().err
    assert main(["stats", str(tmp_path / "nowhere")]) == 1
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "nowhere").exists()


def test_a_sample_does_not_replace_a_full_pass_and_bad_options_stop_before_any_pass(tmp_path, dataset, full_stats):
    copy = _copy(dataset, tmp_path / "copy")
    manifest = (copy / mf.MANIFEST_NAME).read_bytes()  # holds the full pass's statistics
    sampled = run_cli("stats", copy, "--sample", 10, "--quiet")
    assert "not written" in sampled.stdout and "full pass" in sampled.stdout
    assert (copy / mf.MANIFEST_NAME).read_bytes() == manifest
    for extra, message in ((["--plot", tmp_path / "nowhere" / "report.png"], "no such folder"),
                           (["--plot", tmp_path], "a folder"), (["--ignore-index", 255], "no masks")):
        refused = run_cli("stats", copy, "--quiet", *extra, check=False)
        assert refused.returncode == 1 and message in refused.stderr and refused.stderr.count("\n") == 1
        assert (copy / mf.MANIFEST_NAME).read_bytes() == manifest  # a pass would have written it again
    not_a_folder = run_cli("stats", copy / mf.MANIFEST_NAME, check=False)
    assert not_a_folder.stderr == f"recpack: error: {copy / mf.MANIFEST_NAME}: a file, not a dataset folder\n"
    fresh = _copy(dataset, tmp_path / "fresh")
    data = json.loads((fresh / mf.MANIFEST_NAME).read_text())
    data["stats"] = None
    mf.write_json_atomic(str(fresh / mf.MANIFEST_NAME), data, durable=False)
    kept = run_cli("stats", fresh, "--sample", 10, "--quiet", "--mean-size", 0).stdout
    assert kept.splitlines()[-1].startswith(f"written to {fresh / mf.MANIFEST_NAME} in ")
    assert mf.load(str(fresh)).stats["computed"]["method"] == "sample"  # with nothing better, a sample is kept


# --- crash safety ---------------------------------------------------------------------------

def _stats_process(dataset_dir, *extra):
    return subprocess.Popen([sys.executable, "-m", "recpack", "stats", str(dataset_dir), "--quiet", *map(str, extra)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except FileNotFoundError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _consistent(dataset_dir) -> dict | None:
    """The manifest loads; its stats are whole and name an average image that exists."""
    stats = mf.load(str(dataset_dir)).stats
    if stats is not None:
        assert stats["computed"]["records"] == 36 and len(stats["mean"]) == 3
        image = contract.load_mean_image(str(dataset_dir), stats)
        assert image is None or image.shape == (stats["mean_image"]["side"],) * 2 + (3,)
    return stats


def test_kill_at_any_moment_leaves_the_old_or_the_new_manifest(tmp_path, dataset):
    """SIGKILL at moments spread over a run, most near its end, where it writes."""
    copy = _copy(dataset, tmp_path / "copy")
    started = time.monotonic()
    process = _stats_process(copy, "--mean-size", 8)
    assert process.wait() == 0
    duration = time.monotonic() - started
    rng = random.Random(14)
    sides = iter(range(9, 100))
    for moment in [rng.uniform(0.2, 0.8)] + [rng.uniform(0.8, 1.1) for _ in range(4)]:
        before = _consistent(copy)
        process = _stats_process(copy, "--mean-size", next(sides))
        time.sleep(moment * duration)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        after = _consistent(copy)
        assert after == before or after["mean_image"]["side"] != before["mean_image"]["side"]
    # kill -9 of the command alone: its workers die with it, and with them the folder's lock
    process = _stats_process(copy, "--mean-size", 6)
    deadline = time.monotonic() + 20
    while not _children(process.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    workers = _children(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(0.3)
    assert workers and not [pid for pid in workers if _alive(pid)]
    process = _stats_process(copy, "--mean-size", 7)
    assert process.wait() == 0, process.stderr.read()
    assert _consistent(copy)["mean_image"]["side"] == 7
    leftovers = [name for name in os.listdir(copy) if contract.is_mean_image(name)]
    assert leftovers == [_consistent(copy)["mean_image"]["file"]]  # a finished run clears what killed ones left


@pytest.fixture
def long_pass(tmp_path, dataset):
    """A dataset whose pass is long enough to interrupt: the dataset's images 200 times over (with --mean-size 512).

    40 times over, an idle machine finished the pass before the Ctrl-C test's signal came (exit 0, not 130).
    """
    root = dataset.parent / "images"
    paths = sorted(str(path) for path in root.rglob("*.jpg"))
    (tmp_path / "list.txt").write_text("".join(f"{path}\t0\n" for path in paths * 200))
    pack(open_source(str(tmp_path / "list.txt")), str(tmp_path / "big"), PackOptions(shards=4, fsync=False),
         show_progress=False)
    return tmp_path / "big"


def _started_workers(process, count: int = 2, settle: float = 0.2) -> list[int]:
    deadline = time.monotonic() + 20
    while len(_children(process.pid)) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(settle)
    return _children(process.pid)


def test_ctrl_c_leaves_the_manifest_as_it_was_and_no_worker_behind(long_pass):
    before = (long_pass / mf.MANIFEST_NAME).read_bytes()
    process = _stats_process(long_pass, "--mean-size", 512, "--workers", 2)
    workers = _started_workers(process)
    os.kill(process.pid, signal.SIGINT)
    assert process.wait(timeout=20) == 130
    assert process.stderr.read().strip().endswith("recpack: interrupted")
    assert (long_pass / mf.MANIFEST_NAME).read_bytes() == before
    assert not [name for name in os.listdir(long_pass) if contract.is_mean_image(name)]
    time.sleep(0.2)
    assert len(workers) == 2 and not [pid for pid in workers if _alive(pid)]


@pytest.mark.skipif(sys.platform != "linux", reason="finds the workers through /proc")
@pytest.mark.parametrize("worker", [0, 1])
def test_a_killed_worker_ends_the_command_in_one_line_and_leaves_the_manifest(long_pass, worker):
    """kill -9 of one worker (the OOM killer's way): an error at once, not a pool waiting forever for its unit."""
    before = (long_pass / mf.MANIFEST_NAME).read_bytes()
    process = _stats_process(long_pass, "--mean-size", 512, "--workers", 2)
    workers = _started_workers(process, settle=0.05)
    assert len(workers) == 2 and process.poll() is None, (f"{len(workers)} workers seen, exit {process.poll()}: "
                                                          "the pass ended before both workers were at work")
    killed = time.monotonic()
    os.kill(sorted(workers)[worker], signal.SIGKILL)
    try:
        _, stderr = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("recpack stats hung after one of its workers was killed")
    assert time.monotonic() - killed < 10
    assert process.returncode == 1
    assert stderr == ("recpack: error: a worker process died (killed by signal 9: out of memory, or kill -9); "
                      "the manifest is unchanged: rerun the same command\n")
    assert (long_pass / mf.MANIFEST_NAME).read_bytes() == before
    assert not [name for name in os.listdir(long_pass) if contract.is_mean_image(name)]
    time.sleep(0.2)
    assert not [pid for pid in workers if _alive(pid)]
    run_cli("stats", long_pass, "--quiet", "--mean-size", 0, "--sample", 50)  # nothing left holds the lock


@pytest.mark.parametrize("mask_kind", ["wrong size", "missing"])
@pytest.mark.parametrize("image_kind", ["JPEG", "PNG"])
def test_a_record_whose_mask_fails_leaves_only_its_labels(image_kind, mask_kind):
    """Its image was measured before the mask was read: that share of the histogram and average image goes again."""
    rng = np.random.default_rng(3)
    image = _encoded(_photo(rng, (40, 30)), image_kind)
    mask = b"" if mask_kind == "missing" else _encoded(Image.new("L", (39, 30)), "PNG")
    payload = Payload([2.0], 7, image, mask)
    tally = Tally(SIDE)
    resized = np.zeros((SIDE, SIDE, 4), np.uint16)
    with pytest.raises(BadImageError, match="mask"):
        _measure_record(tally, _Spec(SIDE, False, True, None), b"".join(bytes(p) for p in pack_payload(payload)),
                        payload.trailing_lengths(), resized)
    assert tally.records == 1 and tally.labels == {2.0: 1} and tally.images == 0
    assert not tally.pixel_histogram.any() and not resized.any() and not tally.mask_pixels.any()


def test_multi_label_records_are_counted_once_per_distinct_label(tmp_path):
    rng = np.random.default_rng(4)
    lines = []
    for index, labels in enumerate([(1, 3), (3, 3), (2, 5), (1, 2)]):
        _photo(rng, (12, 10)).save(tmp_path / f"{index}.jpg", quality=90)
        lines.append(f"{index}.jpg\t" + "\t".join(map(str, labels)))
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    pack(open_source(str(tmp_path / "list.txt")), str(tmp_path / "out"), PackOptions(shards=1, fsync=False),
         show_progress=False)
    stats = run(str(tmp_path / "out"), StatsOptions(mean_size=None, progress=False)).stats
    assert stats["labels"] == {"kind": "multi", "values": [1, 2, 3, 5], "records": [2, 2, 2, 1]}
