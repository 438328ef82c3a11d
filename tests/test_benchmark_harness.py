"""The benchmarks' shared pieces: what child processes may import, the rounds, the child-process sampler.

No timing assertions (speed lives in benchmarks/results): these hold the rules
the benchmarks rely on, so that a refactor cannot break a benchmark that is
only run now and then.
"""

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from harness import run_child  # noqa: E402
from rounds import Target, per_round_ratios, schedule, targets_table  # noqa: E402

# What runs inside benchmarks/.venv-mxnet (no recpack, numpy 1.23.5): the MXNet reader and writer's children.
CHILD_MODULES = ("compare_readers", "pack_children", "ceilings", "corpus_cache", "settings", "compare_settings")


def test_child_modules_import_the_standard_library_only():
    probe = (f"import sys; sys.path.insert(0, {str(BENCHMARKS)!r}); import {', '.join(CHILD_MODULES)}; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'recpack', 'numpy', 'torch', 'PIL'}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_schedule_alternates_and_rotates():
    assert [k for _, k in schedule("ABC", 2)] == list("ABCABC")
    assert [k for _, k in schedule("ABC", 3, rotate=True)] == list("ABCBCACAB")
    assert [r for r, _ in schedule("AB", 2)] == [0, 0, 1, 1]


def test_ratios_pair_rounds_and_skip_failed_runs():
    assert per_round_ratios([2.0, None, 9.0], [1.0, 4.0, 3.0]) == [2.0, 3.0]
    lines = targets_table([Target("a", 1.5, [2.0, 1.0, 1.8]), Target("b", None, [0.5]), Target("c", 1.0, None)])
    assert [line.rsplit("|", 2)[1].strip() for line in lines[2:]] == ["PASS", "context", "NOT RUN"]


def test_run_child_samples_the_child_tree_and_reads_its_result(tmp_path):
    # the child holds ~64 MB and starts a grandchild that holds ~32 MB; both must show in the tree's peak
    script = ("import json, subprocess, sys, time\n"
              "held = b'x' * (64 << 20)\n"
              "subprocess.run([sys.executable, '-c', 'import time; b = b\"x\" * (32 << 20); time.sleep(0.6)'])\n"
              "print('noise'); print(json.dumps({'seconds': 1.25}))\n")
    done = run_child([sys.executable, "-c", script], tmp_path / "logs" / "child", sample_every=0.05)
    assert done.ok and done.result == {"seconds": 1.25}
    assert done.peak_rss >= 90 << 20 and 0 < done.peak_pss <= done.peak_rss + (4 << 20)
    assert 64 << 20 <= done.peak_root_rss < done.peak_rss
    assert done.max_rss >= 64 << 20


def test_run_child_kills_a_child_past_its_timeout(tmp_path):
    done = run_child([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "slow", timeout=0.5)
    assert done.timed_out and not done.ok and done.wall < 10
    assert "timed out" in done.error_tail()
