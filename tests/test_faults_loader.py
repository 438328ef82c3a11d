"""Faults in the training loop: a DataLoader worker killed mid-epoch, an exception in the user's transform,
Ctrl-C.  The loop must get a clear error within seconds, never hang, and leave no process, thread,
shared memory or file descriptor behind.

The loops run in child processes (``reading_child.py``), which report what they saw and held.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import corpus
import process_resources as pr
from recpack.pack.packer import PackOptions, pack
from recpack.pack.sources import open_source

pytestmark = [pytest.mark.timeout(300), pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")]

CHILD = Path(__file__).with_name("reading_child.py")
WITHIN = 15.0  # seconds from the fault to the error in the loop (torch checks its workers every 5)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    for label in range(2):
        corpus.make_small_jpegs(root / "images" / f"c{label}", 80, size=(40, 32), seed=label)
    pack(open_source(str(root / "images")), str(root / "out"), PackOptions(shards=4, workers=2), show_progress=False)
    return root / "out"


def fault(small, mode: str, kind: str) -> dict:
    result = subprocess.run([sys.executable, str(CHILD), "fault", str(small), mode, kind], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_killed_worker_ends_the_loop_within_seconds_and_leaves_nothing(small):
    """torch's own words name the worker, unless the batch in flight was the victim's: then torch's handover of
    its shared memory (a socket to the dead worker) fails first, with EOFError or ConnectionResetError -- torch's
    race, outside the dataset; the loop still ends at once and nothing is left behind."""
    found = fault(small, "workers", "kill-worker")
    named = (f"RuntimeError: DataLoader worker (pid {found['victim']}) is killed by signal: Killed",
             f"RuntimeError: DataLoader worker (pid(s) {found['victim']}) exited unexpectedly")
    in_handover = found["handover"] and found["error"].split(":")[0] in ("EOFError", "ConnectionResetError")
    assert found["error"].startswith(named) or in_handover, found
    assert found["seconds"] < WITHIN
    assert found["leaks"] == {}


@pytest.mark.parametrize("mode", ["threads", "workers"])
def test_an_exception_in_the_transform_reaches_the_loop_as_itself(small, mode):
    found = fault(small, mode, "transform-error")
    assert found["error"].startswith("ZeroDivisionError: ") and "user bug in transform" in found["error"]
    assert found["seconds"] < WITHIN and found["leaks"] == {}


def test_a_value_error_in_the_transform_is_the_users_not_a_skipped_record(small):
    """on_error='skip' is for damaged records: a ValueError from the user's code must not be taken for one."""
    found = fault(small, "threads", "transform-valueerror")
    assert found["error"] == "ValueError: user bug in transform"
    assert found["leaks"] == {}


@pytest.mark.parametrize("mode", ["threads", "workers"])
def test_ctrl_c_stops_the_loop_within_seconds_and_leaves_no_process(small, mode):
    process = subprocess.Popen([sys.executable, str(CHILD), "forever", str(small), mode], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    steps = 0
    while steps < 5:  # some batches in, mid-epoch
        line = process.stdout.readline()
        assert line, process.stderr.read()[-3000:]
        steps += line == "step\n"
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole foreground group
    interrupted = time.monotonic()
    try:
        _, stderr = process.communicate(timeout=WITHIN)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"the loop was still running {WITHIN} s after Ctrl-C")
    assert time.monotonic() - interrupted < WITHIN
    assert process.returncode != 0 and stderr.rstrip().endswith("KeyboardInterrupt")
    assert stderr.count("Traceback") == 1, stderr  # the loop's own: no worker or thread adds its own
    deadline = time.monotonic() + 5
    while pr.in_group(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pr.in_group(process.pid) == []
