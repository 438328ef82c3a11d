"""Packing on 2 local Spark or Ray workers against the local multiprocess packer, alternated rounds.

Why: ``recpack pack --engine`` must not cost much over ``recpack pack`` for the
same work, or a cluster's first nodes only pay back the overhead.  All contenders
pack the same list (the benchmark corpus, default --check decode, 64 shards) from
a warm page cache, each in its own process inside a loopback-only network
namespace (Ray binds the machine's address otherwise), one after the other in
every round (rounds.py: targets are medians of per-round ratios):

Each engine task writes 8 of the 64 shards (``--shards-per-task 8``: 2,500 images a
task).  Why: a task costs an engine ~0.1 s of a core to schedule and hand to a Python
worker (Spark: ~90 ms between two tasks of one worker, 64 tasks against 8 and 2 in one
warm session; recpack's own part, 3 ms), which 312-image shards would not amortise
while ImageNet-21k's shards (14k images each at 1,024 shards) do.

* ``local``: ``recpack pack LIST OUT --workers 2``, the whole process.
* ``spark`` / ``ray``: ``recpack pack LIST OUT --engine spark|ray`` with two
  cores (``spark.master=local[2]``, ``num_cpus=2``), the whole process: the
  engine's start (a JVM, a Ray instance) is inside the clock.
* ``spark_up`` / ``ray_up``: the engine started first, untimed, as a cluster's
  would be; the clock covers plan, the shard tasks and commit
  (benchmarks/engine_child.py).  The engine's first job is in the clock.
* ``spark_warm`` / ``ray_warm``: as ``_up``, and two one-shard tasks of another
  pack run first, untimed (engine_child.py --warm): the engine has run a job, as
  a cluster in use has.  ``_up`` minus ``_warm`` is the first job's fixed cost.

    python benchmarks/bench_engines.py [--images 20000] [--rounds 3] [--out benchmarks/results/engines.md]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ceilings import cat_files
from corpus_cache import load_corpus
from harness import run_child
from prefault import prefault
from report import fmt, load_average, machine_lines, per_round, table
from rounds import Target, median, per_round_ratios, schedule, targets_table
from settings import HERE, RESULTS, WORK

NAMESPACE = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]


@dataclass
class Contender:
    key: str
    text: str
    seconds: list[float | None] = field(default_factory=list)


PER_TASK = 8


def command(key: str, listing: Path, out: Path, shards: int) -> list[str]:
    recpack = [sys.executable, "-m", "recpack", "pack", str(listing), str(out), "--shards", str(shards), "--quiet"]
    if key == "local":
        return recpack + ["--workers", "2", "--order", "list"]
    recpack += ["--shards-per-task", str(PER_TASK)]
    if key == "spark":
        return recpack + ["--engine", "spark", "--engine-conf", "spark.master=local[2]", "--engine-conf",
                          "spark.ui.enabled=false", "--engine-conf", "spark.driver.host=127.0.0.1"]
    if key == "ray":
        return recpack + ["--engine", "ray", "--engine-conf", "num_cpus=2", "--engine-conf", "log_to_driver=false"]
    engine, _, state = key.partition("_")
    return [sys.executable, str(HERE / "engine_child.py"), engine, str(listing), str(out), str(shards), str(PER_TASK),
            *(["--warm"] if state == "warm" else [])]


CONTENDERS = {
    "local": "recpack pack --workers 2 (local processes), whole process",
    "spark": "recpack pack --engine spark, local[2], whole process (JVM start included)",
    "ray": "recpack pack --engine ray, num_cpus=2, whole process (Ray start included)",
    "spark_up": "Spark local[2] already up: plan + tasks + commit",
    "ray_up": "Ray (2 CPUs) already up: plan + tasks + commit",
    "spark_warm": "Spark local[2] up and warm (has run a job): plan + tasks + commit",
    "ray_warm": "Ray (2 CPUs) up and warm (has run a job): plan + tasks + commit",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--only", default=None, help="comma-separated contender keys")
    parser.add_argument("--out", type=Path, default=RESULTS / "engines.md")
    args = parser.parse_args()
    corpus = load_corpus(args.images, 0)
    work = WORK / f"engines-{args.images}"
    out = work / "out"
    contenders = [Contender(key, text) for key, text in CONTENDERS.items()
                  if not args.only or key in args.only.split(",")]
    prefault()
    load_before = load_average()
    for round_index, contender in schedule(contenders, args.rounds, rotate=True):
        shutil.rmtree(out, ignore_errors=True)
        cat_files(corpus.paths)  # every contender from a warm page cache
        done = run_child(NAMESPACE + command(contender.key, corpus.list_file, out, args.shards),
                         work / "logs" / f"{contender.key}-r{round_index + 1}", cwd=corpus.root)
        if not done.ok:
            print(f"{contender.key} failed: {done.error_tail(1000)}", file=sys.stderr)
            contender.seconds.append(None)
            continue
        seconds = done.result["seconds"] if done.result and "seconds" in done.result else done.wall
        contender.seconds.append(seconds)
        print(f"round {round_index + 1}: {contender.key} {seconds:.1f} s ({corpus.count / seconds:,.0f} images/s)",
              flush=True)
    shutil.rmtree(out, ignore_errors=True)
    rate = lambda c: [corpus.count / s if s else None for s in c.seconds]  # noqa: E731
    by_key = {c.key: c for c in contenders}
    targets = []
    for key, required in (("spark_up", 0.8), ("ray_up", 0.8), ("spark_warm", None), ("ray_warm", None),
                          ("spark", None), ("ray", None)):
        if key in by_key and "local" in by_key:
            targets.append(Target(f"{CONTENDERS[key]} / local", required,
                                  per_round_ratios(rate(by_key[key]), rate(by_key["local"]))))
    report = [f"# recpack pack on engines ({corpus.count:,} images)", "",
              *machine_lines(["python benchmarks/bench_engines.py", *sys.argv[1:]]),
              f"- corpus: {corpus.count:,} JPEGs, {corpus.total_bytes / 1e6:,.0f} MB, page cache warm; "
              f"--shards {args.shards}, --check decode (default); {PER_TASK} shards per engine task",
              f"- {args.rounds} rounds, contenders rotated each round; load average before: {load_before}, "
              f"after: {load_average()}",
              "", "## Targets", "", *targets_table(targets), "", "## Contenders", "",
              *table(["contender", "images/s (median)", "per round", "seconds (median)"], "lrrr",
                     ([c.text, fmt(median([r for r in rate(c) if r])), per_round(rate(c)),
                       fmt(median([s for s in c.seconds if s]), ".1f")] for c in contenders)), ""]
    text = "\n".join(report)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
