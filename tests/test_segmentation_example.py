"""The segmentation example trains across 2 processes (torch.distributed, gloo) on generated images and masks."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import scenes
from conftest import in_loopback_namespace

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux) for a loopback-only namespace")
def test_segmentation_example_trains_on_two_processes(tmp_path):
    listing = scenes.write_segmentation_set(tmp_path / "images", 24, seed=3)
    subprocess.run([sys.executable, "-m", "recpack", "pack", str(listing), str(tmp_path / "ds"), "--shards", "4",
                    "--quiet"], check=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / "tools" / "train_segmentation.py"), str(tmp_path / "ds"), "--steps", "20",
               "--batch-size", "4", "--size", "64x80", "--geometry", "scale_crop", "--norm", "group", "--lr", "0.02"]
    # torchrun's rendezvous store listens on every interface whatever it is told: only loopback exists in here
    result = in_loopback_namespace(command, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [float(line.split()[3]) for line in result.stdout.splitlines() if line.startswith("step")]
    assert len(losses) == 2, result.stdout  # rank 0 alone prints, at steps 10 and 20
    assert losses[-1] < 1.2  # chance over 4 classes is ln 4 = 1.39: it learned something in 20 steps
