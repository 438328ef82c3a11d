"""``recpack bench`` on a tiny dataset, and the I/O model's figures.  No timing assertions: speed lives in benchmarks/."""

import json

import pytest

from conftest import run_cli
from recpack.measure import bench, iomodel, pagecache

STAGES = ["raw", "crc", "decode", "loader"]


@pytest.fixture(scope="module")
def packed(photo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "packed"
    run_cli("pack", photo_dir, out, "--shards", "4", "--quiet")
    return out


def bench_json(*args):
    return json.loads(run_cli("bench", *args, "--json", "--quiet", "--batch-size", "16", "--size", "32").stdout)


def check_stage(stage, records):
    assert stage["records"] == records
    assert stage["bytes"] > 0 and stage["seconds"] > 0 and stage["cpu_seconds"] >= 0
    assert stage["images_per_s"] == pytest.approx(stage["records"] / stage["seconds"])
    assert stage["mb_per_s"] == pytest.approx(stage["bytes"] / 1e6 / stage["seconds"])
    assert 0 <= stage["cpu_utilisation"]
    assert stage["peak_pss"] > 0 and stage["peak_rss"] >= stage["peak_pss"] * 0.5


def test_bench_json_warm(packed):
    report = bench_json(packed)
    assert report["dataset"]["records"] == 60 and report["dataset"]["shards"] == 4
    assert [s["name"] for s in report["stages"]] == STAGES
    for stage in report["stages"]:
        check_stage(stage, 60)
        assert stage["cache"] is None
    raw, crc = report["stages"][:2]
    assert raw["bytes"] == crc["bytes"]  # the same records, checked or not
    assert report["files"] is None and report["speedup_packed_vs_files"] is None
    model = report["model"]
    assert model["decode_per_core"] > 0
    assert {(e["disk"], e["layout"]) for e in model["estimates"]} >= {("HDD", "files"), ("HDD", "shards")}
    assert all(e["images"] == 60 and e["decode_seconds"] > 0 for e in model["estimates"])
    assert any("warm" in note for note in report["notes"])


def test_bench_cold_reports_success_or_a_note(packed):
    report = bench_json(packed, "--cold", "--stages", "raw,crc")
    assert [s["name"] for s in report["stages"]] == ["raw", "crc"]
    for stage in report["stages"]:
        check_stage(stage, 60)
        cache = stage["cache"]
        assert cache["cold"] or any(note.startswith(stage["name"] + ":") for note in report["notes"])


def test_bench_vs_files(packed, photo_dir):
    report = bench_json(packed, "--cold", "--stages", "raw", "--vs-files", photo_dir, "--workers", "2")
    files = report["files"]
    check_stage(files, 60)
    assert files["cache"] is not None
    assert report["speedup_packed_vs_files"] > 0
    if report["stages"][0]["cache"]["cold"] and files["cache"]["cold"]:
        assert report["model"]["measured_disk"]["seq_mb_s"] > 0


def test_bench_limit_and_text_table(packed):
    result = run_cli("bench", packed, "--limit", "20", "--batch-size", "8", "--stages", "raw,decode", "--quiet")
    assert "images/s" in result.stdout and "I/O model" in result.stdout
    report = bench_json(packed, "--limit", "20", "--stages", "raw")
    assert 20 <= report["stages"][0]["records"] < 60


def test_bench_model_only_defaults_to_imagenet_21k():
    data = json.loads(run_cli("bench", "--model", "--json").stdout)
    assert data["images"] == 14_200_000 and data["mean_kb"] == 110
    text = run_cli("bench", "--model", "--seq-mb-s", "100", "--iops", "50").stdout
    assert "given" in text and "HDD" in text
    assert run_cli("bench", "--model", "--iops", "50", check=False).returncode == 1


def test_residency_after_eviction(packed):
    paths = bench.shard_paths(str(packed))
    for path in paths:  # read them into the cache first
        with open(path, "rb") as handle:
            handle.read()
    state = pagecache.make_cold(paths)
    assert state.evicted
    assert state.cold or state.note  # either it worked or it says why not


# --- the I/O model -------------------------------------------------------------------------


HOUR = 3600


def imagenet_21k(disk, layout, **kw):
    return iomodel.epoch_time(iomodel.IMAGENET_21K_IMAGES, iomodel.IMAGENET_MEAN_KB, disk, None, 1, layout, **kw)


def test_imagenet_21k_on_hdd_order_of_magnitude():
    """170 MB/s, 110 IOPS: tens to hundreds of hours of random reads, a few hours sequential."""
    disk = iomodel.DiskProfile("HDD", 170, 110)
    files, shards = imagenet_21k(disk, "files"), imagenet_21k(disk, "shards")
    assert 30 * HOUR < files.epoch_seconds < 50 * HOUR  # 14.2M seeks at 110/s alone are 36 h
    assert 100 * HOUR < imagenet_21k(disk, "files", ios_per_file=3).epoch_seconds < 150 * HOUR
    assert 2 * HOUR < shards.epoch_seconds < 5 * HOUR  # 1.56 TB at 170 MB/s is 2.6 h
    assert files.epoch_seconds / shards.epoch_seconds > 10


def test_layout_comparison_says_no_faster_when_decoding_sets_the_pace():
    disk = iomodel.DiskProfile("NVMe", 3000, 500_000)
    slow_decode = dict(images=100_000, mean_kb=110, disk=disk, decode_per_core=50, cores=1)
    files, shards = (iomodel.epoch_time(**slow_decode, layout=layout) for layout in ("files", "shards"))
    assert iomodel.compare_layouts(files, shards) == "shards are no faster than files per epoch here " \
        "(decode sets the pace of both)"
    hdd = iomodel.DiskProfile("HDD", 170, 110)
    files, shards = (iomodel.epoch_time(100_000, 110, hdd, None, 1, layout) for layout in ("files", "shards"))
    ratio = files.epoch_seconds / shards.epoch_seconds
    assert ratio > 10 and iomodel.compare_layouts(files, shards) == f"shards are {ratio:.1f}x faster than files per epoch"


def test_model_monotonic():
    base = dict(images=100_000, mean_kb=110, disk=iomodel.HDD, decode_per_core=500, cores=8)
    for layout in ("files", "shards"):
        e = iomodel.epoch_time(**base, layout=layout)
        assert iomodel.epoch_time(**{**base, "images": 200_000}, layout=layout).epoch_seconds > e.epoch_seconds
        assert iomodel.epoch_time(**{**base, "mean_kb": 500}, layout=layout).io_seconds > e.io_seconds
        faster = iomodel.DiskProfile("x", 2 * base["disk"].seq_mb_s, 2 * base["disk"].random_iops)
        assert iomodel.epoch_time(**{**base, "disk": faster}, layout=layout).io_seconds < e.io_seconds
        assert iomodel.epoch_time(**{**base, "cores": 16}, layout=layout).decode_seconds < e.decode_seconds
    for disk in iomodel.PRESETS:  # shards never lose
        assert iomodel.epoch_time(**{**base, "disk": disk}, layout="shards").io_seconds <= \
            iomodel.epoch_time(**{**base, "disk": disk}, layout="files").io_seconds
    gaps = [iomodel.io_seconds(10**6, 110, d, "files") / iomodel.io_seconds(10**6, 110, d, "shards") for d in iomodel.PRESETS]
    assert gaps[0] == max(gaps) > 10  # seeks are what an HDD is slow at


def test_epoch_is_the_slower_of_io_and_decode():
    e = iomodel.epoch_time(1000, 100, iomodel.NVME, decode_per_core=10, cores=1, layout="shards")
    assert e.bound == "decode" and e.epoch_seconds == e.decode_seconds == 100
    e = iomodel.epoch_time(1000, 100, iomodel.HDD, decode_per_core=None, cores=1, layout="files")
    assert e.bound == "I/O" and e.decode_seconds is None and e.epoch_seconds == e.io_seconds
    with pytest.raises(ValueError):
        iomodel.io_seconds(1, 1, iomodel.HDD, "tar")


def test_iops_from_file_rate_inverts_the_model():
    disk = iomodel.DiskProfile("d", 200, 150)
    rate = 1000 / iomodel.io_seconds(1000, 120, disk, "files")
    assert iomodel.iops_from_file_rate(rate, 120, 200) == pytest.approx(150)
