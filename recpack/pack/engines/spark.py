"""PySpark: one Spark task per shard range, retried by Spark (``spark.task.maxFailures``; ``local[N,F]``)."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from ...errors import PackError
from .contract import Failures, RangeTask


def run(out_dir: str, ranges: list[tuple[int, int]], conf: dict[str, Any], task: RangeTask) -> Failures:
    """Run the ranges as one Spark job of one partition each; the ranges of the tasks that failed.

    An active SparkSession (a notebook's, spark-submit's) is used as it is and
    left running; otherwise one is built from ``conf`` and stopped at the end.
    Spark stops the whole job when one task fails ``maxFailures`` times: the
    tasks still running are cancelled, and the driver reports them as not
    finished (their shards that did finish are kept).
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    builder = SparkSession.builder.appName("recpack pack")
    for key, value in conf.items():
        builder = builder.config(key, str(value).lower() if isinstance(value, bool) else str(value))
    spark = active or _created(builder)
    try:
        rdd = spark.sparkContext.parallelize(list(ranges), len(ranges))
        rdd.map(lambda bounds: task(out_dir, *bounds)).collect()
        return {}
    except Exception as error:  # py4j's Py4JJavaError, whose text holds Spark's "Task N in stage ... failed"
        return _failures(str(error), ranges)
    finally:
        if active is None:
            spark.stop()


def _created(builder):
    """A new session whose Python workers run this interpreter (PySpark reads PYSPARK_PYTHON once, at start).

    Without it they would run ``python3`` from PATH, which need not have recpack;
    a PYSPARK_PYTHON set by the user (a cluster's own Python) is left as it is.
    """
    ours = "PYSPARK_PYTHON" not in os.environ
    if ours:
        os.environ["PYSPARK_PYTHON"] = sys.executable
    try:
        return builder.getOrCreate()
    except Exception as error:  # no Java, a master that does not answer, a bad setting
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise PackError(f"spark: no Spark session ({first}); PySpark needs a Java 17+ runtime, and "
                        "--engine-conf spark.master=... must name a master that answers") from None
    finally:
        if ours:
            del os.environ["PYSPARK_PYTHON"]


def _failures(text: str, ranges: list[tuple[int, int]]) -> Failures:
    """The range of the task that failed the job (partition N holds range N), with the Python error's last line."""
    task = re.search(r"Task (\d+) in stage [\d.]+ failed", text)
    raised = re.findall(r"^\s*(?:\w+\.)*(\w+(?:Error|Exception|Exit|Interrupt)): (.+)$", text, re.MULTILINE)
    crashed = re.search(r"Python worker exited unexpectedly \(crashed\)", text)
    reason = f"{raised[-1][0]}: {raised[-1][1].strip()}" if raised else (crashed.group(0) if crashed else
                                                                        text.strip().splitlines()[0][:300])
    if task is None or int(task.group(1)) >= len(ranges):
        return {bounds: reason for bounds in ranges}
    return {ranges[int(task.group(1))]: reason}
