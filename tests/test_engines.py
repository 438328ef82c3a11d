"""recpack pack --engine spark|ray on real engines in local mode: the local pack's bytes, through failures.

Each engine runs in a private network namespace that has only loopback (Ray binds
the machine's own address whatever it is told; Spark is told 127.0.0.1 too), so
nothing leaves 127.0.0.1.  tests/engine_probe.py drives one engine session through
a task killed on every attempt (no commit: readers refuse the folder; a rerun
finishes it), a task that fails its first attempt and one killed mid-write on its
first (both retried by the engine); the CLI test packs as the README says.
Skipped, with the reason, where the engine is not installed or no namespace can be made.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recpack.pack.packer import pack
from recpack.pack.plan import PackOptions
from recpack.pack.sources import open_source
from conftest import in_loopback_namespace
from test_pack_steps import assert_same_dataset

pytestmark = pytest.mark.engines

PROBE = Path(__file__).with_name("engine_probe.py")
ENGINE_MODULE = {"spark": "pyspark", "ray": "ray"}


def loopback_only(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    return in_loopback_namespace(command, timeout, SPARK_LOCAL_IP="127.0.0.1", RAY_USAGE_STATS_ENABLED="0")


@pytest.fixture(scope="module")
def namespace():
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2) for a loopback-only network namespace")
    probe = loopback_only(["true"], timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace here (needs root): {probe.stderr.strip()}")


def needs(engine: str) -> None:
    if importlib.util.find_spec(ENGINE_MODULE[engine]) is None:
        pytest.skip(f"{ENGINE_MODULE[engine]} is not installed (pip install 'recpack[{engine}]'; tools/setup.sh does)")


@pytest.fixture(scope="module")
def reference(photo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("engine-reference") / "out"
    pack(open_source(str(photo_dir)), str(out), PackOptions(shards=6, seed=3, workers=2, order="list"),
         show_progress=False)
    return out


@pytest.mark.parametrize("engine", ["spark", "ray"])
def test_engine_writes_the_local_pack_through_retries_and_a_killed_task(engine, namespace, photo_dir, reference,
                                                                         tmp_path):
    needs(engine)
    marks = tmp_path / "marks"
    marks.mkdir()
    run = loopback_only([sys.executable, str(PROBE), engine, str(photo_dir), str(tmp_path), str(marks)], timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    killed = report["killed"]
    assert not killed["ok"] and "\n" not in killed["error"]
    assert killed["error"].startswith(f"{engine}: shard 4 failed after {engine}'s retries")
    assert not report["killed_has_manifest"] and report["killed_refused"] == "IncompleteDatasetError"
    assert report["retried"]["ok"] and report["retried"]["leftovers"] == []
    assert report["marks"] == ["kill-2", "raise-0"]  # both faults struck once, and their retries succeeded
    assert report["rerun"]["ok"] and report["rerun"]["leftovers"] == []
    assert_same_dataset(reference, tmp_path / "retried")
    assert_same_dataset(reference, tmp_path / "killed")


@pytest.mark.parametrize("engine, conf", [
    ("spark", ["spark.master=local[2,3]", "spark.ui.enabled=false", "spark.driver.host=127.0.0.1"]),
    ("ray", ["num_cpus=2", "include_dashboard=false"]),
])
def test_cli_packs_on_the_engine_as_the_readme_says(engine, conf, namespace, photo_dir, reference, tmp_path):
    needs(engine)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "recpack", "pack", str(photo_dir), str(out), "--shards", "6", "--seed", "3",
               "--engine", engine, "--shards-per-task", "2", "--quiet"]
    for pair in conf:
        command += ["--engine-conf", pair]
    run = loopback_only(command, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "packed 60 images into 6 shards" in run.stdout
    assert_same_dataset(reference, out)


@pytest.mark.parametrize("address, said", [
    ("127.0.0.1:1", "ray: nothing answers at 127.0.0.1:1"),  # a port nothing listens on: refused at once
    ("ray://127.0.0.1:1", "ray: nothing answers at ray://127.0.0.1:1"),
    ("nowhere", "ray: address 'nowhere' is not host:port (or auto)"),
])
def test_ray_address_nothing_answers_at_is_one_line_not_minutes_of_retries(address, said, namespace, photo_dir,
                                                                           tmp_path):
    needs("ray")
    run = loopback_only([sys.executable, "-m", "recpack", "pack", str(photo_dir), str(tmp_path / "out"), "--shards",
                         "2", "--engine", "ray", "--engine-conf", f"address={address}", "--quiet"], timeout=120)
    assert run.returncode == 1, run.stderr[-3000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"recpack: error: {said}"), run.stderr[-3000:]
