"""``recpack bench --hdd``: the cgroup throttle slows cold reads and is removed after; its refusals; the model check."""

import glob
import json
import os

import pytest

import corpus
from conftest import run_cli
from recpack.measure import bench, iomodel, modelcheck, throttle
from recpack.measure.throttle import Layout, Throttle, ThrottleError


def can_throttle() -> bool:
    try:
        throttle.find_layout()
    except ThrottleError:
        return False
    return os.geteuid() == 0


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """About 1.6 MB of records: seconds at 1 MB/s, milliseconds unthrottled."""
    root = tmp_path_factory.mktemp("throttle")
    corpus.make_small_jpegs(root / "images" / "a", 16, size=(800, 600), seed=3)
    run_cli("pack", root / "images", root / "packed", "--shards", "4", "--quiet")
    return root / "packed"


def throttled_raw(dataset, *args):
    """The raw stage in its own process: the throttle must not slow this one."""
    result = run_cli("bench", dataset, "--stages", "raw", "--json", "--quiet", "--batch-size", "8", "--hdd", *args)
    report = json.loads(result.stdout)
    return report["stages"][0], report


@pytest.mark.skipif(not can_throttle(), reason="needs root and a cgroup block-I/O controller")
def test_hdd_slows_cold_reads_and_removes_its_cgroup(big):
    size = sum(os.path.getsize(path) for path in glob.glob(str(big / "*.rec")))
    assert size > 1.2e6
    free = bench.run(str(big), bench.BenchOptions(stages=("raw",), cold=True, batch_size=8, progress=False)).stages[0]
    slow, report = throttled_raw(big, "--hdd-mb-s", "1")
    assert slow["cache"]["cold"] and free.cache.cold
    assert slow["seconds"] > 0.6 * size / 1e6  # the disk's 1 MB/s bound it (a first slice may come early)
    assert slow["seconds"] > 5 * free.seconds
    assert report["hdd"]["mb_s"] == 1 and report["hdd"]["iops"] == 110
    assert [check["stage"] for check in report["hdd"]["checks"]] == ["raw"]
    hdd_rows = [row for row in report["model"]["estimates"] if row["disk"] == "HDD"]
    assert hdd_rows and all((row["seq_mb_s"], row["random_iops"]) == (1, 110) for row in hdd_rows)  # the throttle's
    assert any("the throttled disk's sequential rate" in note for note in report["notes"])
    cgroup = report["hdd"]["cgroup"]
    assert cgroup.startswith(throttle.find_layout().hierarchy) and not os.path.exists(cgroup)  # gone with the run


def test_hdd_needs_root(big, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ThrottleError, match="needs root: run it as root"):
        with throttle.throttled([str(big)], Throttle()):
            pass


def test_no_block_io_controller_is_one_clear_error(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    with pytest.raises(ThrottleError, match="no block-I/O controller"):
        throttle.find_layout(str(tmp_path))
    (tmp_path / "cgroup.controllers").write_text("cpu io memory\n")
    assert throttle.find_layout(str(tmp_path)) == Layout(2, str(tmp_path))
    (tmp_path / "blkio").mkdir()
    (tmp_path / "blkio" / "blkio.throttle.read_iops_device").write_text("")
    assert throttle.find_layout(str(tmp_path)) == Layout(1, str(tmp_path / "blkio"))


def test_a_folder_on_no_disk_is_refused():
    with pytest.raises(ThrottleError, match="not on a block device"):
        throttle.disk_of("/proc")


def test_limits_and_cgroup_of_each_version(tmp_path):
    v1, v2 = Layout(1, "/sys/fs/cgroup/blkio"), Layout(2, "/sys/fs/cgroup")
    assert throttle.limit_lines(v1, "8:0", Throttle(110, 170)) == [
        ("blkio.throttle.read_iops_device", "8:0 110"), ("blkio.throttle.read_bps_device", "8:0 170000000")]
    assert throttle.limit_lines(v2, "259:0", Throttle(200, 1.5)) == [("io.max", "259:0 riops=200 rbps=1500000")]
    proc = tmp_path / "cgroup"
    proc.write_text("9:name=systemd:/\n7:blkio:/user.slice\n0::/user.slice/session-1.scope\n")
    assert throttle.current_cgroup(v1, str(proc)) == "/sys/fs/cgroup/blkio/user.slice"
    assert throttle.current_cgroup(v2, str(proc)) == "/sys/fs/cgroup/user.slice/session-1.scope"
    with pytest.raises(ValueError):
        Throttle(0, 170)


def test_model_check_sets_each_stage_against_its_bound():
    disk = iomodel.DiskProfile("HDD", 170, 110)
    checks = modelcheck.check([("raw", 6400, 100.0, 1500.0), ("decode", 6400, 100.0, 900.0),
                               ("files", 6400, 100.0, 100.0)], disk, decode_per_core=500.0, cores=2)
    raw, decode, files = checks
    assert raw.predicted == pytest.approx(6400 / (100 / 110 + 6400 * 100e3 / 170e6)) and raw.bound == "I/O"
    assert decode.predicted == pytest.approx(1000.0) and decode.bound == "decode"  # 500/core x 2 < the disk's
    assert files.layout == "files" and files.predicted == pytest.approx(6400 / (6400 / 110 + 6400 * 100e3 / 170e6))
    assert decode.ratio == pytest.approx(0.9)
    assert "measured/model" in modelcheck.format_checks(disk, checks)
