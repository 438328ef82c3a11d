"""One timed pack on an engine that is already up: what bench_engines.py's "engine up" contenders run.

    python benchmarks/engine_child.py ENGINE LIST OUT SHARDS SHARDS_PER_TASK [--warm]

Starts the engine first, untimed (a local Spark session or Ray instance with two
cores, as a cluster's would already be running), then times ``pack_on_engine``:
plan, one task per range of shards on the engine, commit.  Prints {"seconds": ...}.

``--warm``: before the clock, also run two one-shard tasks of the same plan in a
scratch folder (one per core), as a cluster that has run a job before would be:
the engine's first job (Spark: its JIT compiling the scheduler's paths, the
Python daemon and workers starting, each worker importing recpack) is then
outside the clock.  The difference between the two is that first job's cost.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

from recpack.pack.engines import pack_on_engine, run_ranges
from recpack.pack.stored_plan import plan
from recpack.pack.plan import PackOptions
from recpack.pack.sources import open_source


def main() -> None:
    engine, listing, out, shards, per_task = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    if engine == "spark":
        from pyspark.sql import SparkSession

        os.environ["PYSPARK_PYTHON"] = sys.executable
        session = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
                   .config("spark.driver.host", "127.0.0.1").getOrCreate())
        session.sparkContext.setLogLevel("ERROR")
    else:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 << 20, log_to_driver=False)
    if "--warm" in sys.argv[6:]:
        scratch = out.rstrip("/") + "-warm-up"
        plan(open_source(listing), scratch, PackOptions(shards=shards))
        failures = run_ranges(engine, scratch, [(0, 1), (1, 2)], {})
        shutil.rmtree(scratch)
        if failures:
            raise SystemExit(f"warm-up tasks failed: {failures}")
    started = time.perf_counter()
    result = pack_on_engine(open_source(listing), out, PackOptions(shards=shards), engine, {}, per_task)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "records": result.records}))


if __name__ == "__main__":
    main()
