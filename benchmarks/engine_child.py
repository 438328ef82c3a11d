"""One timed pack on an engine that is already up: what bench_engines.py's "engine up" contenders run.

    python benchmarks/engine_child.py ENGINE LIST OUT SHARDS SHARDS_PER_TASK

Starts the engine first, untimed (a local Spark session or Ray instance with two
cores, as a cluster's would already be running), then times ``pack_on_engine``:
plan, one task per shard on the engine, commit.  Prints {"seconds": ...}.
"""

from __future__ import annotations

import json
import os
import sys
import time

from recpack.pack.engines import pack_on_engine
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
    started = time.perf_counter()
    result = pack_on_engine(open_source(listing), out, PackOptions(shards=shards), engine, {}, per_task)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "records": result.records}))


if __name__ == "__main__":
    main()
