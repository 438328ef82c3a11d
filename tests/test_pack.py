"""`recpack pack` end to end on generated photos and hostile files."""

import errno
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from recpack.format import manifest as mf
from recpack.pack import packer as packer_module
from recpack.pack import resume
from recpack.pack import writer as writer_module
from recpack.jpeg._libjpeg import check as check_jpeg
from recpack.jpeg._libjpeg import gray_to_color
from recpack.jpeg.scales import dct_eighths
from recpack.errors import BadImageError, PackError
from recpack.format.schema import unpack_payload
from recpack.jpeg.header import read_jpeg_header
from recpack.pack.packer import PackOptions, pack
from recpack.pack.prepare import PrepareOptions, prepare_image
from recpack.read.shard_reader import ShardReader
from recpack.pack.sources import SourceItem, open_source
from recpack.pack.writer import ShardWriter, StagingBuffers
from turbojpeg import TurboJPEG


def records(out):
    """Every record of a packed dataset as (labels, id, image bytes, mask bytes), in shard order."""
    manifest = mf.load(str(out))
    rows = []
    for shard in manifest.shards:
        reader = ShardReader(str(out / shard.rec.name), str(out / shard.rpi.name), shard.stem)
        for index, payload in reader.iter_records():
            parsed = unpack_payload(payload, (int(reader.rows[index]["mask_length"]),))
            rows.append((parsed.labels.tolist(), parsed.record_id, bytes(parsed.image), bytes(parsed.mask)))
    return rows


def shard_digests(out):
    return {
        name: hashlib.sha256((out / name).read_bytes()).hexdigest()
        for name in sorted(os.listdir(out))
        if name.startswith("shard-")
    }


def write_list(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def pack_quietly(source, out, **options):
    prepare = PrepareOptions(**{k: options.pop(k) for k in ("check", "resize", "quality") if k in options})
    return pack(open_source(str(source)), str(out), PackOptions(prepare=prepare, **options), show_progress=False)


def test_pack_stores_every_image_byte_identical_with_its_label(photo_dir, tmp_path):
    out = tmp_path / "out"
    result = pack_quietly(photo_dir, out, shards=4, workers=2)
    assert (result.records, result.skipped, result.reencoded) == (60, 0, 0)
    manifest = mf.load(str(out))
    assert manifest.classes == ("cat", "dog")
    assert sorted(shard.records for shard in manifest.shards) == [15, 15, 15, 15]
    source = {item.line: item for item in open_source(str(photo_dir))}
    stored = records(out)
    assert sorted(record_id for _, record_id, _, _ in stored) == sorted(source)
    for labels, record_id, image, mask in stored:
        item = source[record_id]
        assert labels == list(item.labels) and mask == b""
        assert image == open(item.path, "rb").read()
    assert [record_id for _, record_id, _, _ in stored] != sorted(source)  # shuffled


def test_same_seed_gives_byte_identical_shards_whatever_the_workers(photo_dir, tmp_path):
    pack_quietly(photo_dir, tmp_path / "a", shards=3, workers=1, seed=7)
    pack_quietly(photo_dir, tmp_path / "b", shards=3, workers=2, seed=7)
    pack_quietly(photo_dir, tmp_path / "c", shards=3, workers=2, seed=8)
    assert shard_digests(tmp_path / "a") == shard_digests(tmp_path / "b")
    assert shard_digests(tmp_path / "a") != shard_digests(tmp_path / "c")


def test_cli_summary_counts_in_words_and_notes_empty_shards(photo_dir, tmp_path):
    """Bad inputs skipped can leave fewer records than shards: the summary says so."""
    good = f"{photo_dir}/cat/small_0002.jpg\t0"
    listing = write_list(tmp_path / "one_good.txt", [good, f"{tmp_path}/missing.jpg\t0"])
    packed = run_cli("pack", listing, tmp_path / "out", "--shards", "2", "--quiet").stdout
    assert "packed 1 image into 2 shards" in packed and "skipped 1 bad input:" in packed
    assert "note: 1 of the 2 shards is empty: fewer good images than --shards" in packed
    full = run_cli("pack", write_list(tmp_path / "good.txt", [good]), tmp_path / "one", "--shards", "1", "--quiet")
    assert "packed 1 image into 1 shard " in full.stdout and "empty" not in full.stdout


def test_cli_list_pack_info_verify_get(photo_dir, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(run_cli("list", photo_dir).stdout)
    out = tmp_path / "out"
    packed = run_cli("pack", listing, out, "--shards", "5", "--quiet")
    assert "packed 60 images into 5 shards" in packed.stdout
    info = json.loads(run_cli("info", out, "--json").stdout)
    assert info["num_records"] == 60 and info["num_shards"] == 5
    assert sum(shard["records"] for shard in info["shards"]) == 60
    assert sum(shard["bytes"] for shard in info["shards"]) == info["bytes"] > 0
    assert "60 in 5 shards" in run_cli("info", out).stdout
    assert "every checksum matches" in run_cli("verify", out, "--quiet").stdout
    extracted = tmp_path / "x.jpg"
    run_cli("get", out, "dog/small_0003.jpg", "-o", extracted)
    assert extracted.read_bytes() == (photo_dir / "dog" / "small_0003.jpg").read_bytes()
    missing = run_cli("get", out, "dog/nope.jpg", check=False)
    assert missing.returncode == 1 and "no record has the key 'dog/nope.jpg'" in missing.stderr


def test_bad_inputs_are_skipped_and_reported(photo_dir, hostile, tmp_path):
    good = sorted((photo_dir / "cat").iterdir())[:3]
    bad = {name: hostile[name] for name in ("empty", "truncated", "random_bytes", "directory")}
    listing = write_list(
        tmp_path / "list.txt",
        [f"{path}\t0" for path in good] + [f"{path}\t1" for path in bad.values()] + ["nowhere.jpg\t1"],
    )
    out = tmp_path / "out"
    result = run_cli("pack", listing, out, "--shards", "2", "--quiet")
    assert "packed 3 images" in result.stdout and "skipped 5 bad inputs" in result.stdout
    report = (out / mf.REPORT_NAME).read_text().splitlines()
    assert report[0] == "line\tpath\treason"
    reasons = {row.split("\t")[1]: row.split("\t")[2] for row in report[1:]}
    assert reasons[str(bad["empty"])] == "empty file"
    assert "truncated" in reasons[str(bad["truncated"])]
    assert "not a decodable image" in reasons[str(bad["random_bytes"])]
    assert reasons[str(bad["directory"])] == "is a directory"
    assert reasons["nowhere.jpg"] == "no such file"
    assert [row.split("\t")[0] for row in report[1:]] == ["4", "5", "6", "7", "8"]


def _png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (what Pillow's bomb guard reads)."""
    import struct
    import zlib

    data = io.BytesIO()
    Image.new("L", (1, 1)).save(data, format="PNG")
    png = bytearray(data.getvalue())
    png[16:24] = struct.pack(">II", width, height)  # IHDR's width and height, after signature, length, type
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def test_an_image_over_pillows_size_limit_is_a_reported_bad_input(photo_dir, tmp_path):
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_claiming_size(14000, 14000))
    good = sorted((photo_dir / "cat").iterdir())[0]
    listing = write_list(tmp_path / "list.txt", [f"{good}\t0", f"{huge}\t1"])
    result = run_cli("pack", listing, tmp_path / "out", "--shards", "1", "--quiet")
    assert "skipped 1 bad input" in result.stdout and "Traceback" not in result.stderr
    row = (tmp_path / "out" / mf.REPORT_NAME).read_text().splitlines()[1].split("\t")
    assert row[:2] == ["2", str(huge)] and row[2].startswith("too large to convert (Image size (196000000 pixels)")


def test_strict_fails_without_a_manifest(photo_dir, hostile, tmp_path):
    listing = write_list(tmp_path / "list.txt", [f"{photo_dir}/cat/small_0000.jpg\t0", f"{hostile['truncated']}\t0"])
    result = run_cli("pack", listing, tmp_path / "out", "--shards", "1", "--strict", "--quiet", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"recpack: error: {hostile['truncated']} (list line 2): truncated (no end-of-image marker) [--strict]"
    ]
    assert not (tmp_path / "out" / mf.MANIFEST_NAME).exists()
    reading = run_cli("info", tmp_path / "out", check=False)
    assert reading.returncode == 1 and "incomplete dataset" in reading.stderr


def _corrupt_scan(jpeg: bytes) -> bytes:
    """Put a second frame marker inside the entropy-coded data: headers stay valid, decoding fails."""
    sos = jpeg.index(b"\xff\xda")
    middle = sos + (len(jpeg) - sos) // 2
    return jpeg[:middle] + b"\xff\xc0\x00\x11" + b"\x08" * 13 + jpeg[middle + 17 :]


def test_decode_check_catches_what_the_header_check_cannot(photo_dir, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(_corrupt_scan((photo_dir / "cat" / "small_0001.jpg").read_bytes()))
    read_jpeg_header(broken.read_bytes())  # the markers before the scan are intact
    listing = write_list(tmp_path / "list.txt", [f"{photo_dir}/cat/small_0000.jpg\t0", f"{broken}\t0"])
    decoded = pack_quietly(listing, tmp_path / "decode", shards=1, check="decode")
    header = pack_quietly(listing, tmp_path / "header", shards=1, check="header")
    assert (decoded.records, decoded.skipped) == (1, 1)
    assert (header.records, header.skipped) == (2, 0)
    assert "does not decode" in (tmp_path / "decode" / mf.REPORT_NAME).read_text()


def test_header_mode_writes_plain_jpegs_from_where_they_were_read_and_declines_the_rest(photo_dir, hostile, tmp_path):
    plain = photo_dir / "cat" / "small_0000.jpg"
    declined = ["empty", "truncated", "random_bytes", "directory", "gray_jpg", "cmyk_jpg", "exif_rotated", "png_as_jpg"]
    options = PrepareOptions(check="header")
    with ShardWriter(str(tmp_path), "shard-00000", StagingBuffers()) as shard:
        for name in declined:
            assert packer_module._write_in_place(shard, SourceItem(1, name, str(hostile[name]), (0.0,)), options) is None
        assert packer_module._write_in_place(shard, SourceItem(2, "gone", str(tmp_path / "gone.jpg"), (0.0,)), options) is None
        assert shard.records == 0
        assert packer_module._write_in_place(shard, SourceItem(3, "x", str(plain), (0.0,)), PrepareOptions()) is None
        offset, size = packer_module._write_in_place(shard, SourceItem(4, "cat", str(plain), (2.0, 5.0)), options)
        assert (offset, size, shard.records) == (0, plain.stat().st_size, 1)
    reader = ShardReader(str(tmp_path / "shard-00000.rec"), str(tmp_path / "shard-00000.rpi"), "shard-00000")
    parsed = unpack_payload(reader.read(0))
    assert (parsed.labels.tolist(), parsed.record_id, bytes(parsed.image)) == ([2.0, 5.0], 4, plain.read_bytes())


def test_header_mode_packs_as_if_every_image_took_the_ordinary_path(photo_dir, hostile, tmp_path, monkeypatch):
    names = ["empty", "truncated", "random_bytes", "directory", "gray_jpg", "cmyk_jpg", "exif_rotated", "png_as_jpg"]
    lines = [f"{path}\t{i % 2}" for i, path in enumerate(sorted((photo_dir / "dog").iterdir()))]
    listing = write_list(tmp_path / "list.txt", lines + [f"{hostile[name]}\t1" for name in names] + ["gone.jpg\t0"])
    pack_quietly(listing, tmp_path / "in_place", shards=3, check="header")
    monkeypatch.setattr(packer_module, "_write_in_place", lambda *args: None)  # forked workers inherit this
    pack_quietly(listing, tmp_path / "ordinary", shards=3, check="header")
    assert shard_digests(tmp_path / "in_place") == shard_digests(tmp_path / "ordinary")
    report = (tmp_path / "in_place" / mf.REPORT_NAME).read_text()
    assert report == (tmp_path / "ordinary" / mf.REPORT_NAME).read_text() and len(report.splitlines()) == 6


def test_decode_check_reads_the_scan_to_its_last_row(photo_dir):
    """The check skips reconstruction, not parsing: data cut short anywhere in the scan fails it."""
    jpeg = (photo_dir / "cat" / "small_0001.jpg").read_bytes()
    check_jpeg(jpeg)
    for keep in (0.5, 0.97):
        cut = jpeg[: int(len(jpeg) * keep)] + b"\xff\xd9"  # an end marker, so the header check passes
        read_jpeg_header(cut)
        with pytest.raises(ValueError, match="[Pp]remature end"):
            check_jpeg(cut)


@pytest.mark.parametrize(
    # stray bytes before the end-of-image marker, which libjpeg skips with a warning; it has already taken
    # one of them into its bit buffer, and counts one fewer
    "inserted, reported, accepted",
    [
        (17, 16, True),  # a few unused bytes after the scan: let through, as padding
        (18, 17, False),  # more: scan data that no block used, a damaged scan
    ],
)
@pytest.mark.parametrize("options", [{}, {"resize": 32}], ids=["decode-check", "resize"])
def test_unused_bytes_after_the_scan_are_damage_beyond_a_few(photo_dir, inserted, reported, accepted, options):
    jpeg = sorted((photo_dir / "cat").iterdir())[0].read_bytes()
    damaged = jpeg[:-2] + b"\x5a" * inserted + jpeg[-2:]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TurboJPEG().decode(damaged)
    assert {str(w.message) for w in caught} == {f"Corrupt JPEG data: {reported} extraneous bytes before marker 0xd9"}
    if accepted:
        assert read_jpeg_header(prepare_image(damaged, PrepareOptions(**options)).stored).components == 3
    else:
        with pytest.raises(BadImageError, match=f"^does not decode cleanly \\(Corrupt JPEG data: {reported} extraneous"):
            prepare_image(damaged, PrepareOptions(**options))


def _stored_image(tmp_path, path, **options):
    listing = write_list(tmp_path / f"{path.name}.txt", [f"{path}\t0"])
    out = tmp_path / f"out-{path.name}"
    result = pack_quietly(listing, out, shards=1, **options)
    assert result.skipped == 0, (out / mf.REPORT_NAME).read_text()
    (image,) = [record[2] for record in records(out)]
    info = read_jpeg_header(image)
    assert info.components == 3 and info.orientation == 1
    return Image.open(io.BytesIO(image)), result


@pytest.mark.parametrize("name", ["png_as_jpg", "gif", "bmp", "webp", "cmyk_jpg", "gray_jpg"])
def test_non_rgb_jpeg_inputs_become_rgb_jpegs(hostile, tmp_path, name):
    image, result = _stored_image(tmp_path, hostile[name])
    assert image.format == "JPEG" and image.mode == "RGB" and result.reencoded == 1
    reference = Image.open(hostile[name]).convert("RGB")
    assert image.size == reference.size
    # compare 4x4 block means: the same picture, whatever JPEG does to a dithered GIF's noise
    blocks = [np.asarray(im, np.float32).reshape(16, 4, 24, 4, 3).mean(axis=(1, 3)) for im in (image, reference)]
    difference = np.abs(blocks[0] - blocks[1]).mean()
    assert difference < 6, f"{name}: mean block difference {difference:.1f}"


def test_transparent_pixels_become_white(hostile, tmp_path):
    image, _ = _stored_image(tmp_path, hostile["rgba_png"])
    pixels = np.asarray(image, np.int16)
    right_half = pixels[:, pixels.shape[1] // 2 + 4 :]
    assert right_half.min() > 235  # white, not the magenta hidden under alpha 0


def test_16_bit_images_are_scaled_not_clipped(hostile, tmp_path):
    image, _ = _stored_image(tmp_path, hostile["gray16_png"])
    row = np.asarray(image.convert("L"), np.int16)[16]
    assert abs(row[128] - 128) <= 6 and abs(row[64] - 64) <= 6 and row[-1] > 245


def test_exif_orientation_is_applied_at_pack_time(hostile, tmp_path):
    image, result = _stored_image(tmp_path, hostile["exif_rotated"])
    assert image.size == (64, 96) and result.reencoded == 1
    red, green, blue = np.asarray(image, np.int16)[4, -4]
    assert red > 180 and green < 80 and blue < 80  # the red block is now top-right


def test_resize_shrinks_only_larger_images(photo_dir, tmp_path):
    image, result = _stored_image(tmp_path, photo_dir / "cat" / "small_0002.jpg", resize=24)
    assert image.size == (32, 24) and result.reencoded == 1
    listing = write_list(tmp_path / "small.txt", [f"{photo_dir}/cat/small_0002.jpg\t0"])
    pack_quietly(listing, tmp_path / "kept", shards=1, resize=100)
    assert records(tmp_path / "kept")[0][2] == (photo_dir / "cat" / "small_0002.jpg").read_bytes()


@pytest.mark.parametrize(("shorter", "size", "eighths"), [
    (2048, 256, 1), (2047, 256, 2), (1024, 256, 2), (600, 256, 4), (512, 256, 4),
    (511, 256, 8), (400, 256, 8), (256, 256, 8), (100, 224, 8),
])
def test_dct_scale_is_the_smallest_simd_scale_that_covers_the_output(shorter, size, eighths):
    assert dct_eighths(shorter, size) == eighths


@pytest.mark.parametrize("source_size", [(400, 300), (200, 150), (90, 61), (60, 45), (33, 25)])  # 1/8 ... 1
def test_resize_gives_exactly_the_shorter_side_whatever_the_dct_scale(photo_dir, source_size):
    source = Image.open(photo_dir / "cat" / "small_0002.jpg").convert("RGB").resize(source_size)
    encoded = io.BytesIO()
    source.save(encoded, "JPEG", quality=90)
    converted = prepare_image(encoded.getvalue(), PrepareOptions(resize=24))
    stored = Image.open(io.BytesIO(converted.stored))
    assert min(stored.size) == 24 and stored.size == converted.size
    assert abs(stored.size[0] / stored.size[1] - source_size[0] / source_size[1]) < 0.05
    original = np.asarray(source.resize(stored.size, Image.Resampling.BOX), np.float32)
    difference = np.abs(np.asarray(stored.convert("RGB"), np.float32) - original).mean()
    assert difference < 8  # the same picture: its mirror image is ~16 off


def _mask(path, size, mode="L"):
    values = (np.arange(size[0] * size[1]) % 5).astype(np.uint8).reshape(size[1], size[0])
    Image.fromarray(values, "L").convert(mode).save(path)
    return path


def test_segmentation_records_carry_their_mask(photo_dir, tmp_path):
    image = photo_dir / "cat" / "small_0004.jpg"
    good_mask = _mask(tmp_path / "m.png", (64, 48))
    wrong_size = _mask(tmp_path / "small.png", (10, 10))
    jpeg_mask = tmp_path / "lossy.jpg"
    Image.open(good_mask).save(jpeg_mask, "JPEG")
    listing = write_list(
        tmp_path / "seg.txt",
        [f"{image}\t3\t{good_mask}", f"{image}\t3\t{wrong_size}", f"{image}\t3\t{jpeg_mask}", f"{image}\t3\tnone.png"],
    )
    out = tmp_path / "out"
    result = pack_quietly(listing, out, shards=1)
    assert (result.records, result.skipped) == (1, 3)
    ((labels, _, stored_image, stored_mask),) = records(out)
    assert labels == [3.0] and stored_image == image.read_bytes() and stored_mask == good_mask.read_bytes()
    assert mf.load(str(out)).has_masks
    report = (out / mf.REPORT_NAME).read_text()
    assert "mask is 10x10 but its image is 64x48" in report
    assert "not a lossless format" in report and "none.png: no such file" in report
    run_cli("get", out, str(image), "-o", tmp_path / "i.jpg", "--mask-output", tmp_path / "m_out.png")
    assert (tmp_path / "m_out.png").read_bytes() == good_mask.read_bytes()


def test_resized_masks_follow_their_image_with_nearest_neighbour(photo_dir, tmp_path):
    image = photo_dir / "dog" / "small_0000.jpg"
    mask = _mask(tmp_path / "m.png", (64, 48))
    listing = write_list(tmp_path / "seg.txt", [f"{image}\t{mask}"])
    pack_quietly(listing, tmp_path / "out", shards=1, resize=24)
    ((_, _, stored_image, stored_mask),) = records(tmp_path / "out")
    stored = Image.open(io.BytesIO(stored_mask))
    assert Image.open(io.BytesIO(stored_image)).size == stored.size == (32, 24)
    assert set(np.unique(np.asarray(stored)).tolist()) <= {0, 1, 2, 3, 4}


def test_multi_label_lst_records_store_label_vectors(photo_dir, tmp_path):
    paths = sorted((photo_dir / "cat").iterdir())[:2]
    listing = write_list(tmp_path / "multi.lst", [f"0\t1\t0\t1\t{paths[0]}", f"1\t0\t1\t1\t{paths[1]}"])
    out = tmp_path / "out"
    pack_quietly(listing, out, shards=1)
    assert sorted(labels for labels, *_ in records(out)) == [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]]
    assert mf.load(str(out)).label_width == 3


def test_bad_list_line_is_one_line_error_without_traceback(tmp_path):
    listing = write_list(tmp_path / "list.txt", ["a.jpg 1", "b.jpg two"])
    result = run_cli("pack", listing, tmp_path / "out", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"recpack: error: {listing}:2: label 'two' is not a number "
                                     "(a path with spaces needs a tab before its label)")


def test_a_missing_root_is_named_in_one_line_and_leaves_no_folder(tmp_path):
    listing = write_list(tmp_path / "list.txt", ["a/x.jpg 1", "b/y.jpg 0"])
    result = run_cli("pack", listing, tmp_path / "out", "--root", tmp_path / "gone", check=False)
    assert result.returncode == 1
    assert result.stderr == (f"recpack: error: {tmp_path / 'gone'}: no such folder, and the list's paths are relative "
                             "to it (set it with --root, or the list's '# root:' first line)\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--seed", "-1"], "argument --seed: must be at least 0, not -1"),
        (["--seed", "x"], "argument --seed: 'x' is not a whole number"),
        (["--shards", "0"], "argument --shards: must be at least 1, not 0"),
        (["--workers", "0"], "argument --workers: must be at least 1, not 0"),
        (["--quality", "101"], "argument --quality: must be between 1 and 100, not 101"),
        (["--resize", "0"], "argument --resize: must be at least 1, not 0"),
    ],
)
def test_bad_options_are_one_line_errors_that_leave_no_folder(photo_dir, tmp_path, options, message):
    result = run_cli("pack", photo_dir, tmp_path / "out", *options, check=False)
    assert result.returncode == 2
    assert result.stderr == f"recpack pack: error: {message} (see recpack pack --help)\n"  # one line, no usage block
    assert not (tmp_path / "out").exists()


def test_refuses_to_overwrite_a_complete_dataset(photo_dir, tmp_path):
    out = tmp_path / "out"
    pack_quietly(photo_dir, out, shards=2)
    with pytest.raises(PackError, match="already holds a complete dataset"):
        pack_quietly(photo_dir, out, shards=2)
    (out / "notes.txt").write_text("mine")
    result = pack_quietly(photo_dir, out, shards=3, overwrite=True)
    assert result.shards == 3 and sorted(n for n in os.listdir(out) if n.endswith(".rec")) == [
        "shard-00000.rec", "shard-00001.rec", "shard-00002.rec"]
    assert (out / "notes.txt").read_text() == "mine"


def test_a_full_disk_is_a_one_line_error_naming_the_shard(photo_dir, tmp_path, monkeypatch):
    def disk_full(*_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writer_module, "_write_all", disk_full)  # the forked workers inherit it
    with pytest.raises(PackError, match=r"shard-0000\d: cannot write \(No space left on device\)"):
        pack_quietly(photo_dir, tmp_path / "out", shards=2, workers=1)
    assert not (tmp_path / "out" / mf.MANIFEST_NAME).exists()


def test_an_output_folder_that_cannot_be_made_is_one_line(photo_dir, tmp_path):
    (tmp_path / "file").write_text("")
    result = run_cli("pack", photo_dir, tmp_path / "file" / "sub" / "out", "--shards", "2", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"recpack: error: {tmp_path / 'file'}")


def test_more_shards_than_images_is_an_error(photo_dir, tmp_path):
    result = run_cli("pack", photo_dir, tmp_path / "out", "--shards", "61", check=False)
    assert result.returncode == 1 and "--shards 61 exceeds the number of images (60)" in result.stderr


def test_rerun_after_failure_keeps_finished_shards_and_matches_a_clean_pack(photo_dir, tmp_path):
    images = sorted(photo_dir.rglob("*.jpg"))
    late = tmp_path / "late.jpg"
    late.write_bytes(b"")  # bad until "fixed" below
    listing = write_list(tmp_path / "list.txt", [f"{p}\t0" for p in images] + [f"{late}\t1"])
    out = tmp_path / "out"
    with pytest.raises(PackError, match="late.jpg"):
        pack_quietly(listing, out, shards=6, workers=1, strict=True)
    finished = sorted(os.listdir(out / ".recpack-pack"))
    assert "plan.json" in finished and len(finished) >= 2  # some shards finished before the failure
    late.write_bytes(images[0].read_bytes())
    result = pack_quietly(listing, out, shards=6, workers=1, strict=True)
    assert result.resumed_shards == len(finished) - 1
    pack_quietly(listing, tmp_path / "clean", shards=6, workers=1)
    assert shard_digests(out) == shard_digests(tmp_path / "clean")
    assert not (out / ".recpack-pack").exists()


def test_a_changed_list_starts_clean_instead_of_mixing_runs(photo_dir, tmp_path):
    images = sorted(photo_dir.rglob("*.jpg"))
    listing = write_list(tmp_path / "list.txt", [f"{p}\t0" for p in images] + ["missing.jpg\t0"])
    out = tmp_path / "out"
    with pytest.raises(PackError):
        pack_quietly(listing, out, shards=4, workers=1, strict=True)
    write_list(listing, [f"{p}\t1" for p in images])  # other labels: other shard bytes
    result = pack_quietly(listing, out, shards=4, workers=1)
    assert result.resumed_shards == 0
    assert {labels[0] for labels, *_ in records(out)} == {1.0}


def test_killed_pack_leaves_no_manifest_and_rerun_completes(tmp_path):
    import corpus

    corpus.make_small_jpegs(tmp_path / "imgs" / "a", 400, size=(96, 64))
    command = [sys.executable, "-m", "recpack", "pack", str(tmp_path / "imgs"), str(tmp_path / "out"),
               "--shards", "40", "--workers", "1", "--quiet"]
    process = subprocess.Popen(command, start_new_session=True)
    work = tmp_path / "out" / ".recpack-pack"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(n.endswith(".done.json") for n in (os.listdir(work) if work.exists() else [])):
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "out" / mf.MANIFEST_NAME).exists(), "pack finished before it could be killed"
    assert "incomplete dataset" in run_cli("verify", tmp_path / "out", check=False).stderr
    rerun = run_cli("pack", tmp_path / "imgs", tmp_path / "out", "--shards", "40", "--quiet")
    assert "resumed: kept" in rerun.stdout
    run_cli("pack", tmp_path / "imgs", tmp_path / "clean", "--shards", "40", "--quiet")
    assert shard_digests(tmp_path / "out") == shard_digests(tmp_path / "clean")
    assert not [name for name in os.listdir(tmp_path / "out") if name.endswith(".tmp")]


def _live_processes_in_group(group: int) -> list[int]:
    """Processes of a process group that still run (zombies, which hold nothing, not counted)."""
    live = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[2]) == group:
            live.append(int(entry))
    return live


@pytest.mark.skipif(sys.platform != "linux", reason="workers die with their parent through Linux's prctl")
def test_workers_die_with_a_killed_pack_before_finishing_their_shard(tmp_path):
    import corpus

    corpus.make_small_jpegs(tmp_path / "imgs" / "a", 300, size=(320, 240))
    command = [sys.executable, "-m", "recpack", "pack", str(tmp_path / "imgs"), str(tmp_path / "out"),
               "--shards", "2", "--workers", "2", "--resize", "64", "--quiet"]  # two shards of ~1 s each
    process = subprocess.Popen(command, start_new_session=True)
    out = tmp_path / "out"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(n.endswith(".rec.tmp") for n in (os.listdir(out) if out.exists() else [])):
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)  # the pack process alone, not its workers
    process.wait()
    deadline = time.monotonic() + 10
    while _live_processes_in_group(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _live_processes_in_group(process.pid) == [], "workers outlived the killed pack"
    assert not [name for name in os.listdir(out) if name.endswith(".rec")], "a worker finished its shard after the kill"
    run_cli("pack", tmp_path / "imgs", out, "--shards", "2", "--resize", "64", "--quiet")
    run_cli("pack", tmp_path / "imgs", tmp_path / "clean", "--shards", "2", "--resize", "64", "--quiet")
    assert shard_digests(out) == shard_digests(tmp_path / "clean")


def test_a_second_pack_into_a_folder_being_packed_is_refused(photo_dir, tmp_path):
    out = tmp_path / "out"
    with resume.exclusive(str(out)):
        result = run_cli("pack", photo_dir, out, "--shards", "2", "--quiet", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"recpack: error: {out}: another recpack pack is writing into this folder; "
                                     "wait for it to finish, or stop it and rerun")
    assert os.listdir(out) == []
    run_cli("pack", photo_dir, out, "--shards", "2", "--quiet")  # the lock went with its holder


def test_jpeg_header_reads_size_components_and_orientation(photo_dir, hostile):
    data = (photo_dir / "cat" / "small_0000.jpg").read_bytes()
    info = read_jpeg_header(data)
    assert (info.width, info.height, info.components, info.orientation) == (64, 48, 3, 1)
    assert read_jpeg_header(memoryview(data), require_end=False) == info
    assert read_jpeg_header(hostile["exif_rotated"].read_bytes()).orientation == 6
    assert read_jpeg_header(hostile["cmyk_jpg"].read_bytes()).components == 4
    assert read_jpeg_header(hostile["gray_jpg"].read_bytes()).components == 1


def test_user_errors_about_paths_are_one_line(tmp_path, photo_dir):
    missing = run_cli("list", tmp_path / "nope", check=False)
    assert missing.returncode == 1 and missing.stderr.strip() == f"recpack: error: {tmp_path / 'nope'}: no such folder (expected DIR/<class>/<image>)"
    (tmp_path / "afile").write_text("x")
    not_a_folder = run_cli("pack", photo_dir, tmp_path / "afile", "--shards", "2", check=False)
    assert not_a_folder.returncode == 1 and "Traceback" not in not_a_folder.stderr
    assert not_a_folder.stderr.strip() == f"recpack: error: {tmp_path / 'afile'}: exists and is not a folder"
    bench = run_cli("bench", check=False)
    assert bench.returncode == 1 and "--model" in bench.stderr and "Traceback" not in bench.stderr


def test_grayscale_jpegs_become_color_jpegs_losslessly(hostile, tmp_path):
    image, result = _stored_image(tmp_path, hostile["gray_jpg"])
    pixels = np.asarray(image, np.int16)
    reference = np.asarray(Image.open(hostile["gray_jpg"]), np.int16)
    assert result.reencoded == 1 and image.size == (reference.shape[1], reference.shape[0])
    for channel in range(3):  # flat chroma over the grey coefficients as they were: R = G = B = grey
        assert np.array_equal(pixels[..., channel], reference)


def test_grayscale_conversion_fails_on_damaged_data_like_the_decode_check(hostile):
    gray = hostile["gray_jpg"].read_bytes()
    with pytest.raises(ValueError, match="[Pp]remature end|[Cc]orrupt"):
        gray_to_color(gray[: len(gray) // 2] + b"\xff\xd9")
