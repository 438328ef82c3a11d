"""Packing in steps (plan, shard ranges, commit): the same dataset as one ``recpack pack``, whatever runs the ranges.

Every test compares against a local pack of the same list, seed and options: the
shards, dataset.idx and bad_inputs.tsv byte for byte, the manifest but for its date,
the key index entry for entry.
"""

import json
import os
import signal
import subprocess
import sys
import threading

import lmdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_cli
from recpack.errors import IncompleteDatasetError, PackError
from recpack.format import manifest as mf
from recpack.pack import resume
from recpack.pack.commit import commit, spans_text
from recpack.pack.packer import pack
from recpack.pack.plan import PackOptions, shuffled_order
from recpack.pack.shard_range import pack_range, parse_range, task_ranges
from recpack.pack.sources import Source, read_list
from recpack.pack.stored_plan import StoredPlan, plan
from recpack.read.opening import open_shards

OPTIONS = PackOptions(shards=6, seed=3, workers=2, order="list")


def key_index(dataset) -> dict:
    env = lmdb.open(os.path.join(dataset, mf.KEY_INDEX_NAME), readonly=True, lock=False, subdir=True)
    try:
        with env.begin() as txn:
            return dict(txn.cursor())
    finally:
        env.close()


def assert_same_dataset(expected, actual) -> None:
    """Byte-identical shards, indexes and report; the same manifest but its date; the same key index."""
    names = sorted(os.listdir(expected))
    assert sorted(os.listdir(actual)) == names
    for name in names:
        path = os.path.join(expected, name)
        if name == mf.MANIFEST_NAME:
            first, second = (json.load(open(os.path.join(folder, name))) for folder in (expected, actual))
            del first["created"]["date"], second["created"]["date"]
            assert first == second
        elif os.path.isfile(path):
            with open(path, "rb") as a, open(os.path.join(actual, name), "rb") as b:
                assert a.read() == b.read(), name
    assert key_index(expected) == key_index(actual)


@pytest.fixture(scope="module")
def listing(photo_dir, hostile, tmp_path_factory):
    """The 60 photos, a missing file and a truncated JPEG (two bad inputs), with multi-word keys."""
    folder = tmp_path_factory.mktemp("steps")
    lines = [f"{path}\t{label}" for label, name in enumerate(["cat", "dog"])
             for path in sorted((photo_dir / name).glob("*.jpg"))]
    lines.insert(7, f"{folder / 'missing.jpg'}\t1")
    lines.insert(30, f"{hostile['truncated']}\t0")
    path = folder / "list.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def reference(listing, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "out"
    pack(read_list(str(listing)), str(out), OPTIONS, show_progress=False)
    return out


@pytest.mark.parametrize("per_task", [1, 4, 6])
def test_ranges_in_any_order_then_commit_write_the_local_pack(listing, reference, tmp_path, per_task):
    out = str(tmp_path / "out")
    plan(read_list(str(listing)), out, OPTIONS)
    ranges = task_ranges(OPTIONS.shards, per_task)
    for first, stop in reversed(ranges):
        pack_range(out, first, stop, workers=2 if per_task > 1 else 1)
    with pytest.raises(IncompleteDatasetError):  # readers refuse it until the commit
        open_shards(out)
    result = commit(out)
    assert result.records == 60 and result.skipped == 2
    assert_same_dataset(reference, out)


def test_duplicate_attempts_at_once_and_a_killed_attempt_change_nothing(listing, reference, tmp_path):
    out = str(tmp_path / "out")
    plan(read_list(str(listing)), out, OPTIONS)
    # an attempt killed in the middle of its shard leaves its temporary files behind
    child = subprocess.run([sys.executable, "-c", f"""
import os, signal
import recpack.pack.packer as packer
from recpack.pack.shard_range import pack_range
real, calls = packer.prepare, [0]
def dying(*args, **kwargs):
    calls[0] += 1
    if calls[0] == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
packer.prepare = dying
pack_range({out!r}, 2, 3)
"""], capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    leftovers = [name for name in os.listdir(out) if name.endswith(".tmp")]
    assert leftovers and all(name.startswith("shard-00002.") for name in leftovers)
    # two attempts at the same shards at the same time, as a speculative duplicate runs
    threads = [threading.Thread(target=pack_range, args=(out, 0, 6)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    commit(out)
    assert not [name for name in os.listdir(out) if name.endswith(".tmp")]
    assert_same_dataset(reference, out)


def test_commit_names_missing_and_damaged_shards_in_one_line(listing, reference, tmp_path):
    out = str(tmp_path / "out")
    plan(read_list(str(listing)), out, OPTIONS)
    pack_range(out, 0, 4)
    with open(os.path.join(out, "shard-00001.rec"), "r+b") as handle:  # one byte flipped in a finished shard
        handle.seek(40)
        byte = handle.read(1)
        handle.seek(40)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(PackError) as caught:
        commit(out)
    message = str(caught.value)
    assert "\n" not in message and "2 of 6 shards missing (4-5)" in message and "1 damaged" in message
    assert "(1)" in message and "--shard-range 1:2" in message
    assert not os.path.exists(os.path.join(out, mf.MANIFEST_NAME))
    pack_range(out, 0, 6)  # rewrites the damaged shard and the missing ones, keeps the rest
    commit(out)
    assert_same_dataset(reference, out)


def test_a_failed_shard_says_why_and_commit_repeats_it(listing, tmp_path):
    out = str(tmp_path / "out")
    strict = PackOptions(shards=6, seed=3, strict=True)
    plan(read_list(str(listing)), out, strict)
    failed = []
    for first, stop in task_ranges(6, 1):
        try:
            pack_range(out, first, stop)
        except PackError:
            failed.append(first)
    assert len(failed) == 2  # the two bad inputs, under --strict
    with pytest.raises(PackError, match=rf"shard {failed[0]} failed: .*\[--strict\]"):
        commit(out)


def test_plain_pack_over_ranges_rewrites_their_shards_and_indexes_every_key(listing, reference, tmp_path):
    """A range's shards have no keys in the index (commit builds it): a whole pack writes them again."""
    out = str(tmp_path / "out")
    source = read_list(str(listing))
    plan(source, out, OPTIONS)
    pack_range(out, 1, 3)
    result = pack(source, out, OPTIONS, show_progress=False)
    assert result.resumed_shards == 0
    assert_same_dataset(reference, out)


def test_planning_again_keeps_finished_shards_and_another_plan_starts_clean(listing, tmp_path):
    out = str(tmp_path / "out")
    source = read_list(str(listing))
    plan(source, out, OPTIONS)
    pack_range(out, 0, 2)
    first = open(os.path.join(out, resume.WORK_DIR, "plan.bin"), "rb").read()
    plan(source, out, OPTIONS)
    assert open(os.path.join(out, resume.WORK_DIR, "plan.bin"), "rb").read() == first
    assert pack_range(out, 0, 2).kept == (0, 1)
    plan(source, out, PackOptions(shards=6, seed=4))
    assert not os.path.exists(os.path.join(out, "shard-00000.rec"))
    assert pack_range(out, 0, 1).written == (0,)


def test_a_range_waits_for_no_other_range_but_not_beside_a_whole_pack(listing, tmp_path):
    out = str(tmp_path / "out")
    plan(read_list(str(listing)), out, OPTIONS)
    from recpack.pack.shard_range import shared_claim

    with shared_claim(out):  # another range running
        pack_range(out, 0, 1)
    with resume.exclusive(out):  # a pack, plan or commit running
        with pytest.raises(PackError, match="a recpack pack, plan or commit is using this folder"):
            pack_range(out, 1, 2)
    with shared_claim(out):
        with pytest.raises(PackError, match="another recpack pack is writing"):
            commit(out)


def test_stored_plan_holds_each_shard_items_as_the_source_orders_them(tmp_path):
    source = Source("test", str(tmp_path))
    rng = np.random.default_rng(5)
    for line in range(1, 301):
        labels = tuple(float(v) for v in rng.integers(0, 4, size=3))
        source.append(line * 2, f"dir {line % 7}/ünï-{line}.jpg", labels, f"masks/{line}.png")
    options = PackOptions(shards=7, seed=11)
    plan(source, str(tmp_path), options)
    stored = StoredPlan.open(str(tmp_path))
    order = shuffled_order(len(source), 11).tolist()
    from recpack.pack.plan import plan_tasks, shard_spans

    expected = list(plan_tasks(source, str(tmp_path), options, shard_spans(source, options)))
    assert [stored.task(i, str(tmp_path)).items for i in range(7)] == [task.items for task in expected]
    assert [item.line for i in range(7) for item in stored.task(i, str(tmp_path)).items] == [
        source.lines[p] for p in order]


@settings(max_examples=30, deadline=None)
@given(keys=st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n\r"),
                             min_size=1, max_size=12), min_size=1, max_size=40),
       seed=st.integers(0, 2**32), shards=st.integers(1, 5))
def test_stored_plan_round_trips_any_keys(tmp_path_factory, keys, seed, shards):
    folder = str(tmp_path_factory.mktemp("plan"))
    source = Source("test", folder)
    for line, key in enumerate(keys, 1):
        source.append(line, key, (float(line % 3),))
    options = PackOptions(shards=min(shards, len(keys)), seed=seed)
    plan(source, folder, options)
    stored = StoredPlan.open(folder)
    order = shuffled_order(len(keys), seed).tolist()
    got = [item.key for index in range(options.shards) for item in stored.task(index, folder).items]
    assert got == [keys[p] for p in order]


def test_shard_range_and_task_arithmetic():
    assert task_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert parse_range("3:5", 10) == (3, 5) and parse_range("7", 10) == (7, 8) and parse_range(":", 10) == (0, 10)
    for bad in ("5:3", "0:11", "x:1", "-1:2"):
        with pytest.raises(PackError, match="--shard-range"):
            parse_range(bad, 10)
    assert spans_text([9, 1, 2, 3, 7]) == "1-3, 7, 9"


def test_cli_plan_xargs_ranges_commit(listing, reference, tmp_path):
    """The README's recipe: plan, ranges run by xargs -P 2, commit."""
    out = tmp_path / "out"
    planned = run_cli("plan", listing, out, "--shards", "6", "--seed", "3")
    assert "planned 62 images into 6 shards" in planned.stdout
    recpack = f"{sys.executable} -m recpack"
    subprocess.run(f"printf '0:2\\n2:4\\n4:6\\n' | xargs -P 2 -I{{}} {recpack} pack {out} --shard-range {{}} "
                   "--workers 1 --quiet", shell=True, check=True, capture_output=True)
    assert "committed 60 images in 6 shards" in run_cli("commit", out).stdout
    assert_same_dataset(reference, out)
    again = run_cli("pack", out, "--shard-range", "0:1", check=False)
    assert again.returncode == 1 and "already holds a complete dataset" in again.stderr
    both = run_cli("pack", listing, out, "--shard-range", "0:1", check=False)
    assert both.returncode == 1 and both.stderr.count("\n") == 1 and "give OUT alone" in both.stderr


def test_cli_commit_of_an_unfinished_plan_is_one_line(listing, tmp_path):
    out = tmp_path / "out"
    run_cli("plan", listing, out, "--shards", "6", "--seed", "3")
    run_cli("pack", out, "--shard-range", "0:3", "--quiet")
    refused = run_cli("commit", out, check=False)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "3 of 6 shards missing (3-5)" in refused.stderr


def test_an_engine_that_is_not_installed_is_one_line(monkeypatch, tmp_path):
    import importlib.util

    from recpack.pack import engines

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(PackError, match=r"^--engine ray needs ray, which is not installed: pip install 'recpack\[ray\]'$"):
        engines.run_ranges("ray", str(tmp_path), [(0, 1)], {})
    with pytest.raises(PackError, match="--engine must be one of spark, ray"):
        engines.run_ranges("dask", str(tmp_path), [(0, 1)], {})
    assert engines.engine_conf(["spark.master=local[2,3]", "num_cpus=2", "x=true"]) == {
        "spark.master": "local[2,3]", "num_cpus": 2, "x": True}
    with pytest.raises(PackError, match="expected KEY=VALUE"):
        engines.engine_conf(["nothing"])


def test_shards_read_back_early_are_not_read_again_unless_they_changed(listing, reference, tmp_path, monkeypatch):
    import time

    from recpack.pack import commit as commit_module

    out = str(tmp_path / "out")
    plan(read_list(str(listing)), out, OPTIONS)
    with commit_module.EarlyChecks(out, OPTIONS.shards, every=0.02) as early:
        pack_range(out, 0, 6)
        deadline = time.monotonic() + 30
        while len(early._checked) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert len(early._checked) == 6
    with open(os.path.join(out, "shard-00003.rec"), "r+b") as handle:  # changed after its early read-back
        handle.seek(40)
        byte = handle.read(1)
        handle.seek(40)
        handle.write(bytes([byte[0] ^ 0xFF]))
    read = []
    real = commit_module._crc32c
    monkeypatch.setattr(commit_module, "_crc32c", lambda path: read.append(os.path.basename(path)) or real(path))
    with pytest.raises(PackError, match=r"1 damaged, their files differ from their notes \(3\)"):
        commit(out, early=early)
    assert read == ["shard-00003.rec"]  # the changed one alone; its .rec is found damaged first
    pack_range(out, 3, 4)
    commit(out, early=early)
    assert_same_dataset(reference, out)
