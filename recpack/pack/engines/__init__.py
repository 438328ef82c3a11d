"""Engine drivers: a plan's shard-range tasks run on PySpark or Ray, with the engine's own retries, then commit.
Each driver hands one task per range to its engine and reports the ranges that failed past those retries;
``pack_on_engine`` plans, drives and commits only when every task succeeded.  pyspark and ray load lazily.
"""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import replace
from typing import Any

from ...errors import PackError
from ..commit import EarlyChecks, commit, spans_text
from ..plan import PackOptions
from ..publish import PackResult
from ..shard_range import FAILED, finished, note_path, pack_range, read_note, task_ranges
from ..sources import Source
from ..stored_plan import plan

from .contract import Failures, RangeTask

ENGINES = ("spark", "ray")


def range_task(out_dir: str, first: int, stop: int) -> tuple[int, int, int]:
    """What an engine runs for one range, in one of its worker processes: (first, stop, images read)."""
    return first, stop, pack_range(out_dir, first, stop, workers=1).images


def engine_conf(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as given on the command line; values that read as JSON (2, true, 0.5) become numbers."""
    conf: dict[str, Any] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise PackError(f"--engine-conf {pair!r}: expected KEY=VALUE (e.g. spark.master=local[2] or num_cpus=2)")
        try:
            conf[key.strip()] = json.loads(value)
        except ValueError:
            conf[key.strip()] = value
    return conf


def run_ranges(engine: str, out_dir: str, ranges: list[tuple[int, int]], conf: dict[str, Any],
               task: RangeTask = range_task) -> Failures:
    """Run ``task`` once per range on ``engine``; the ranges whose every attempt failed, with a reason."""
    if engine not in ENGINES:
        raise PackError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    module = {"spark": "pyspark", "ray": "ray"}[engine]
    if importlib.util.find_spec(module) is None:
        raise PackError(f"--engine {engine} needs {module}, which is not installed: pip install 'recpack[{engine}]'")
    if engine == "spark":
        from .spark import run
    else:
        from .ray import run
    return run(out_dir, ranges, conf, task)


def pack_on_engine(source: Source, out_dir: str, options: PackOptions, engine: str, conf: dict[str, Any],
                   shards_per_task: int = 1, task: RangeTask = range_task) -> PackResult:
    """``recpack pack --engine``: plan here, write the shards on the engine, commit here when all succeeded.

    The tasks write into ``out_dir``, which every worker must reach at the same
    path (a shared filesystem).  A failed run keeps what finished: rerunning the
    same command writes only the rest.
    """
    started = time.monotonic()
    plan(source, out_dir, options)
    ranges = task_ranges(options.shards, shards_per_task)
    with EarlyChecks(out_dir, options.shards) as early:  # the commit's read-back, while the tasks run
        failures = run_ranges(engine, out_dir, ranges, conf, task)
    if failures:
        raise PackError(failure_message(engine, out_dir, options.shards, failures))
    result = commit(out_dir, options.fsync, early)
    return replace(result, seconds=time.monotonic() - started)


def failure_message(engine: str, out_dir: str, shards: int, failures: Failures) -> str:
    """One line: the shards whose tasks failed past the engine's retries, why, and what else did not finish."""
    failed = sorted(index for first, stop in failures for index in range(first, stop) if not finished(out_dir, index))
    failed = failed or sorted(index for first, stop in failures for index in range(first, stop))
    first_failed = min(failed)
    note = read_note(note_path(out_dir, first_failed, FAILED))
    reason = note["error"] if note and isinstance(note.get("error"), str) else next(
        (why for (first, stop), why in sorted(failures.items()) if first <= first_failed < stop), "")
    unfinished = [index for index in range(shards) if index not in failed and not finished(out_dir, index)]
    rest = f"; {len(unfinished)} other shards did not finish as {engine} stopped" if unfinished else ""
    return (f"{engine}: shard{'s' if len(failed) > 1 else ''} {spans_text(failed)} failed after {engine}'s retries (shard {first_failed}: "
            f"{reason}){rest}; nothing was committed and the finished shards are kept in {out_dir}: "
            "rerun the same command to write the rest")
