"""Reading from a local S3 server (moto's, on 127.0.0.1) against reading the same shards from local disk.

    .venv/bin/python benchmarks/bench_s3.py [--images 4000] [--shards 16] [--rounds 3]

Contenders, each one epoch in its own child process, in alternated, rotating rounds:

    local-decoded   RecordDataset(folder), RandomResizedCrop 224 + flip, decode threads on every core
    s3-decoded      the same from s3://bench/ds on the moto server
    local-raw       records only (augment=None, no CRC)
    s3-raw          the same from the server
    bare-get        what the server serves to a bare loop: the same 64-record windows' byte ranges,
                    shuffled, fetched by boto3 get_object(Range=...) on as many threads as recpack
                    keeps requests in flight (8)

Targets (#16), as medians of per-round ratios: s3-decoded >= 0.8 x local-decoded;
s3-raw >= 0.5 x bare-get.  Local shards are warm in the page cache, as the server's
objects are in its memory: both sides read from RAM, so the ratios are the
reading paths' and not the disks'.  The server runs on the same 2 cores as the
reader: its CPU time is part of every remote figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

from corpus_cache import load_corpus
from report import load_average, machine_lines, per_round, table
from rounds import Target, median, per_round_ratios, schedule, targets_table
from settings import CPUS, REPO, RESULTS, WORK

PYTHON = REPO / ".venv" / "bin" / "python"
IN_FLIGHT = 8
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "benchkeyid", "AWS_SECRET_ACCESS_KEY": "bench-secret-not-real",
               "AWS_DEFAULT_REGION": "us-east-1"}
CONTENDERS = ("local-decoded", "s3-decoded", "local-raw", "s3-raw", "bare-get")


# --- the child: one epoch ----------------------------------------------------------------------


def child(kind: str, path: str) -> None:
    import torch  # noqa: F401  (imported before the clock starts, as a training process has it)

    from recpack import Augment, RecordDataset
    from recpack.read.options import ReadOptions

    if kind == "bare-get":
        print(json.dumps(bare_get(path)))
        return
    decoded = kind.endswith("decoded")
    dataset = RecordDataset(path, batch_size=256, augment=Augment(size=224) if decoded else None,
                            read=ReadOptions(verify=decoded, threads=CPUS))
    started, cpu = time.perf_counter(), time.process_time()
    records = nbytes = 0
    for images, labels in dataset:
        records += len(labels)
        if not decoded:
            nbytes += sum(len(image) for image in images)
    seconds = time.perf_counter() - started
    print(json.dumps({"records": records, "seconds": seconds, "bytes": nbytes,
                      "cpu_seconds": time.process_time() - cpu}))


def bare_get(url: str) -> dict:
    """Every 64-record window of every shard, as one ranged GET each, shuffled, IN_FLIGHT at a time."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    from botocore.config import Config

    from recpack.read.opening import open_shards

    manifest, readers = open_shards(url)
    bucket, prefix = url[len("s3://"):].split("/", 1)
    ranges = []
    for shard, reader in zip(manifest.shards, readers):
        offsets = reader.rows["offset"].tolist() + [shard.rec.bytes]
        ranges += [(f"{prefix}/{shard.rec.name}", offsets[i], offsets[min(i + 64, len(offsets) - 1)])
                   for i in range(0, len(offsets) - 1, 64)]
    random.Random(0).shuffle(ranges)
    client = boto3.client("s3", config=Config(max_pool_connections=2 * IN_FLIGHT))

    def get(item) -> int:
        key, start, end = item
        body = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")["Body"].read()
        return len(body)

    started = time.perf_counter()
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        nbytes = sum(pool.map(get, ranges))
    return {"records": manifest.num_records, "seconds": time.perf_counter() - started, "bytes": nbytes,
            "requests": len(ranges)}


# --- the parent: server, data, rounds, report ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server() -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen([str(REPO / ".venv" / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("moto_server did not start")


def packed(images: int, shards: int) -> Path:
    corpus = load_corpus(images, 0)
    out = WORK / f"s3-{images}-{shards}"
    if not (out / "recpack.json").exists():
        subprocess.run([str(PYTHON), "-m", "recpack", "pack", str(corpus.list_file), str(out), "--shards", str(shards),
                        "--root", str(corpus.root), "--quiet", "--check", "header"], check=True)
    return out


def upload(local: Path, endpoint: str) -> str:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, **{k.lower(): v for k, v in CREDENTIALS.items()
                                                          if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1")
    client.create_bucket(Bucket="bench")
    for path in sorted(local.iterdir()):
        if path.is_file():
            client.upload_file(str(path), "bench", f"ds/{path.name}")
    return "s3://bench/ds"


def warm(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                while handle.read(8 << 20):
                    pass


def run(kind: str, path: str, environment: dict) -> dict | None:
    result = subprocess.run([str(PYTHON), __file__, "--child", kind, path], env=environment, capture_output=True,
                            text=True, timeout=1800)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        print(f"{kind}: failed\n{result.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "s3.md"))
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    local = packed(args.images, args.shards)
    server, endpoint = start_server()
    try:
        environment = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
        os.environ.update(environment)
        url = upload(local, endpoint)
        paths = {kind: (str(local) if kind.startswith("local") else url) for kind in CONTENDERS}
        results: dict[str, list[dict | None]] = {kind: [None] * args.rounds for kind in CONTENDERS}
        for round_index, kind in schedule(CONTENDERS, args.rounds, rotate=True):
            if kind.startswith("local"):
                warm(local)
            results[kind][round_index] = outcome = run(kind, paths[kind], environment)
            rate = f"{outcome['records'] / outcome['seconds']:,.0f} records/s" if outcome else "failed"
            print(f"round {round_index + 1} {kind:14s} {rate}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    write_report(args, local, results)


def rate(outcome: dict | None) -> float | None:
    return outcome["records"] / outcome["seconds"] if outcome else None


def write_report(args, local: Path, results: dict) -> None:
    rates = {kind: [rate(o) for o in results[kind]] for kind in CONTENDERS}
    mb = {kind: [o["bytes"] / 1e6 / o["seconds"] if o and o["bytes"] else None for o in results[kind]]
          for kind in CONTENDERS}
    size = sum(path.stat().st_size for path in local.glob("*.rec"))
    records = next(o["records"] for kinds in results.values() for o in kinds if o)
    targets = [
        Target("s3-decoded / local-decoded (RandomResizedCrop 224)", 0.8,
               per_round_ratios(rates["s3-decoded"], rates["local-decoded"])),
        Target("s3-raw / bare-get (records vs the server's bare ranged GETs)", 0.5,
               per_round_ratios(rates["s3-raw"], rates["bare-get"])),
        Target("s3-raw / local-raw", None, per_round_ratios(rates["s3-raw"], rates["local-raw"])),
    ]
    lines = ["# Reading from S3 (moto's server on 127.0.0.1) against local disk", "",
             *machine_lines([".venv/bin/python", "benchmarks/bench_s3.py", "--images", str(args.images),
                             "--shards", str(args.shards), "--rounds", str(args.rounds)]),
             f"- data: benchmarks/corpus_cache.py load_corpus({args.images}, 0) packed into {args.shards} shards "
             f"({size / 1e6:,.0f} MB, {records:,} records); one epoch per run, batch 256, shuffled windows of 64",
             f"- remote reads: {IN_FLIGHT} ranged GETs in flight per process (StorageOptions.requests_in_flight), "
             "no cache; the server is moto_server in its own process on the same cores",
             f"- load average (1 / 5 / 15 min) when the rounds ended: {load_average()} (the machine is shared: "
             "read the per-round ratios, not the absolute rates)", "",
             "## Targets", "", *targets_table(targets), "",
             "## Runs (records/s per round; MB/s of record bytes where measured)", "",
             *table(["contender", "median records/s", "per round", "median MB/s"], "lrrr",
                    ([kind, f"{median([r for r in rates[kind] if r]) or 0:,.0f}", per_round(rates[kind]),
                      f"{median([m for m in mb[kind] if m]) or 0:,.0f}" if any(mb[kind]) else "-"]
                     for kind in CONTENDERS)), ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
