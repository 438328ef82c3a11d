"""The README's demo and the training example run as a new user would run them."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_demo_script_runs_end_to_end(tmp_path):
    result = subprocess.run(["bash", str(REPO / "tools" / "demo.sh"), "60", str(tmp_path / "demo")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "packed 60 images into 16 shards" in result.stdout
    assert "every checksum matches" in result.stdout and "byte-identical" in result.stdout
    assert "60 images in 1 batches of (3, 224, 224) torch.uint8" in result.stdout


def test_training_example_reports_data_wait(tmp_path, photo_dir):
    subprocess.run([sys.executable, "-m", "recpack", "pack", str(photo_dir), str(tmp_path / "ds"), "--shards", "2",
                    "--quiet"], check=True)
    result = subprocess.run([sys.executable, str(REPO / "tools" / "train_example.py"), str(tmp_path / "ds"),
                             "--steps", "20", "--batch-size", "8", "--size", "32", "--norm", "group"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("step   20  loss") and "waiting for data" in last
