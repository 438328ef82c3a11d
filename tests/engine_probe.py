"""Drives recpack's engine drivers through failures, in one engine session; run by tests/test_engines.py.

    python engine_probe.py ENGINE SOURCE WORK MARKS

Prints one JSON line: what each run did.  Its tasks are recpack's own range task
with faults put in front of it, decided per attempt by marker files in MARKS (an
attempt is a new process, so only a file tells it whether an earlier one ran):

  broken   shard 4's task kills its own process (SIGKILL) on every attempt
  flaky    shard 0's first attempt raises; shard 2's first attempt is killed
           (SIGKILL) in the middle of writing, leaving its temporary files
  plain    no fault

Runs, each with the engine's own retries: ``broken`` into WORK/killed (must
fail, naming shard 4, and leave no manifest), ``flaky`` into WORK/retried (must
succeed), then ``plain`` into WORK/killed again (must finish what the first run
left and commit).  Functions defined here reach the workers by value (cloudpickle).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from recpack.errors import PackError
from recpack.pack.engines import pack_on_engine, range_task
from recpack.pack.plan import PackOptions
from recpack.pack.sources import open_source

ENGINE, SOURCE, WORK, MARKS = sys.argv[1:5]
OPTIONS = PackOptions(shards=6, seed=3)  # the default --check decode: every item goes through packer.prepare


def _first_attempt(name: str) -> bool:
    """True once per name across all processes: the marker file is created exclusively."""
    try:
        os.close(os.open(os.path.join(MARKS, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _die_while_writing() -> None:
    """Kill this process at the third image it prepares: its shard's .tmp files are open and half written."""
    import recpack.pack.packer as packer

    real, calls = packer.prepare, [0]

    def dying(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    packer.prepare = dying


def broken(out_dir: str, first: int, stop: int):
    if first <= 4 < stop:
        _die_while_writing()
    return range_task(out_dir, first, stop)


def flaky(out_dir: str, first: int, stop: int):
    if first == 0 and _first_attempt("raise-0"):
        raise RuntimeError("the first attempt at shard 0 fails")
    if first == 2 and _first_attempt("kill-2"):
        _die_while_writing()
    return range_task(out_dir, first, stop)


def run(out_dir: str, task, conf: dict) -> dict:
    started = time.monotonic()
    try:
        result = pack_on_engine(open_source(SOURCE), out_dir, OPTIONS, ENGINE, conf, task=task)
    except PackError as error:
        return {"ok": False, "error": str(error), "seconds": time.monotonic() - started}
    return {"ok": True, "records": result.records, "seconds": time.monotonic() - started,
            "leftovers": sorted(name for name in os.listdir(out_dir) if name.endswith(".tmp"))}


def refused(out_dir: str) -> str:
    """What a reader says of the folder (the exception's type), or "" if it opened it."""
    from recpack.read.opening import open_shards

    try:
        open_shards(out_dir)
    except Exception as error:  # IncompleteDatasetError expected
        return type(error).__name__
    return ""


def main() -> None:
    report: dict = {}
    if ENGINE == "spark":
        from pyspark.sql import SparkSession

        os.environ["PYSPARK_PYTHON"] = sys.executable
        # local[2,3]: two cores, and a task fails the job only at its third failure
        session = (SparkSession.builder.master("local[2,3]").config("spark.ui.enabled", "false")
                   .config("spark.driver.host", "127.0.0.1").getOrCreate())
        conf = {}
    else:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 << 20)
        conf = {"task.max_retries": 2}
    try:
        report["killed"] = run(os.path.join(WORK, "killed"), broken, conf)
        report["killed_has_manifest"] = os.path.exists(os.path.join(WORK, "killed", "recpack.json"))
        report["killed_refused"] = refused(os.path.join(WORK, "killed"))
        report["retried"] = run(os.path.join(WORK, "retried"), flaky, conf)
        report["rerun"] = run(os.path.join(WORK, "killed"), range_task, conf)
        report["marks"] = sorted(os.listdir(MARKS))
    finally:
        if ENGINE == "spark":
            session.stop()
        else:
            ray.shutdown()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
