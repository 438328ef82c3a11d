"""recpack stats against bare decoding and the usual recipe, side by side in one run.

Contenders, alternated round by round so that the shared machine's noise hits all alike
(the figures that count are the per-round ratios, medians over the rounds).  Each is measured
twice: by the wall clock, and by the CPU time of its whole process tree.  On a machine shared
with other jobs the wall clock says how much of the cores each contender happened to get; CPU
time says what each image costs, which on idle cores is what sets images/s on all of them:
  bare        libjpeg-turbo full-size decode (PyTurboJPEG, RGB) of every record's image, the bytes
              read into memory first, one process per core: the ceiling a pass that must see every
              pixel works against
  stats       `recpack stats DATASET` as a user runs it (a whole process: start, plan, the pass,
              the manifest); its pass alone is timed too (the manifest's computed.seconds)
  interleaved the two per-image costs side by side at a finer grain: in one process per core, each
              shard's images decoded bare and then measured by the stats pass (``_Measurer``, the
              order alternating), CPU time of each summed.  This VM's speed drifts by 10-30% over
              tens of seconds; contenders a shard apart meet the same drift, where whole runs do not
  sample      `recpack stats DATASET --sample 2000`, a whole process: the target is under 5 s
  torchvision the usual recipe: ImageFolder(ToTensor()) + DataLoader(num_workers=cores), batch 1 (the
              images differ in size), float64 sums of values and squares per channel; on the first
              --recipe-images images of the corpus, in the peers' venv
The seed issue's figure, 32 images/s (1.4M images in 12 hours), is quoted beside them.

    .venv/bin/python benchmarks/bench_stats.py [--images 20000] [--rounds 3]    (the recipe runs in benchmarks/.venv-peers)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from corpus_cache import WORK, ensure_corpus  # noqa: E402
from prefault import prefault  # noqa: E402

RECPACK_PYTHON = HERE.parent / ".venv" / "bin" / "python"
PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"
CORES = os.cpu_count() or 1
SEED_ISSUE_RATE = 32.0  # images/s: 1.4M images in "more than 12 hours"


def packed(images: int) -> Path:
    """The corpus packed once for this benchmark (its own folder: stats writes into the manifest)."""
    corpus = ensure_corpus(images, 0)
    out = WORK / f"stats-{images}"
    if not (out / "recpack.json").exists():
        subprocess.run([str(RECPACK_PYTHON), "-m", "recpack", "pack", str(corpus / "list.txt"), str(out),
                        "--shards", "64", "--check", "header", "--overwrite", "--quiet"], check=True)
    return out


# --- bare decode ------------------------------------------------------------------------------

def _decode_shards(args: tuple[str, list[int]]) -> tuple[float, float, int]:
    """Read the given shards' images into memory, then time only their full-size decoding (wall, CPU)."""
    from turbojpeg import TJPF_RGB, TurboJPEG

    from recpack.format import manifest as mf
    from recpack.read.opening import shard_reader

    dataset, shards = args
    manifest = mf.load(dataset)
    images = [bytes(shard_reader(dataset, manifest.shards[s]).read_payload(i).image)
              for s in shards for i in range(manifest.shards[s].records)]
    decoder = TurboJPEG()
    started, cpu_started = time.perf_counter(), time.process_time()
    for data in images:
        decoder.decode(data, pixel_format=TJPF_RGB)
    return time.perf_counter() - started, time.process_time() - cpu_started, len(images)


def bare(dataset: Path) -> dict:
    """One process per core, each decoding its shards; the rate is the sum of their rates."""
    shards = len(json.loads((dataset / "recpack.json").read_text())["shards"])
    with ProcessPoolExecutor(CORES) as pool:
        results = list(pool.map(_decode_shards, [(str(dataset), list(range(c, shards, CORES))) for c in range(CORES)]))
    count = sum(n for _, _, n in results)
    rate = sum(n / seconds for seconds, _, n in results)
    cpu = sum(cpu for _, cpu, _ in results)
    return {"images": count, "seconds": count / rate, "rate": rate, "cpu_rate": count / cpu * CORES}


def _interleave_shards(args: tuple[str, list[int]]) -> tuple[float, float, int]:
    """Per shard, its images decoded bare and measured by the stats pass, one after the other (the order
    alternating), in this process: CPU seconds of each, summed.  Both meet the same moment's machine."""
    from turbojpeg import TJPF_RGB, TurboJPEG

    from recpack.format import manifest as mf
    from recpack.measure.stats import run
    from recpack.read.opening import shard_reader

    dataset, shards = args
    manifest, decoder = mf.load(dataset), TurboJPEG()
    spec = run._Spec(224, False, False, None)  # as `recpack stats` measures by default: no masks, 224 px average
    bare_cpu = stats_cpu = 0.0
    count = 0
    for position, shard in enumerate(shards):
        reader = shard_reader(dataset, manifest.shards[shard])
        records = manifest.shards[shard].records
        images = [bytes(reader.read_payload(i).image) for i in range(records)]
        for which in ((0, 1) if position % 2 == 0 else (1, 0)):
            started = time.process_time()
            if which == 0:
                for data in images:
                    decoder.decode(data, pixel_format=TJPF_RGB)
                bare_cpu += time.process_time() - started
            else:
                measurer = run._Measurer(spec)
                measurer.part(reader, shard, ((0, records),))
                measurer.finish()
                stats_cpu += time.process_time() - started
        count += records
    return bare_cpu, stats_cpu, count


def interleaved(dataset: Path) -> dict:
    """The pass's per-image CPU against bare decoding's, interleaved shard by shard: one process per core."""
    shards = len(json.loads((dataset / "recpack.json").read_text())["shards"])
    with ProcessPoolExecutor(CORES) as pool:
        parts = [(str(dataset), list(range(c, shards, CORES))) for c in range(CORES)]
        results = list(pool.map(_interleave_shards, parts))
    bare_cpu, stats_cpu, count = (sum(values) for values in zip(*results))
    return {"images": count, "seconds": stats_cpu / CORES, "rate": count / stats_cpu * CORES,
            "cpu_rate": count / stats_cpu * CORES, "bare_cpu_rate": count / bare_cpu * CORES,
            "ratio": bare_cpu / stats_cpu}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- recpack stats ----------------------------------------------------------------------------

def recpack_stats(dataset: Path, *extra: str) -> dict:
    """One run of the command; its figures from its own --json output (a sample is not written over a full pass)."""
    started, cpu_started = time.perf_counter(), _children_cpu()
    out = subprocess.run([str(RECPACK_PYTHON), "-m", "recpack", "stats", str(dataset), "--quiet", "--json", *extra],
                         check=True, capture_output=True, text=True).stdout
    seconds, cpu = time.perf_counter() - started, _children_cpu() - cpu_started
    computed = json.loads(out)["computed"]
    images = computed["records"]
    return {"images": images, "seconds": seconds, "rate": images / seconds, "cpu_rate": images / cpu * CORES,
            "pass_seconds": computed["seconds"], "pass_rate": images / computed["seconds"],
            "pass_cpu_rate": images / computed["cpu_seconds"] * CORES}


# --- the usual recipe -------------------------------------------------------------------------

RECIPE = r'''
import json, sys, time
import torch
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

root, count, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
folder = datasets.ImageFolder(root, transform=transforms.ToTensor())
loader = DataLoader(Subset(folder, range(min(count, len(folder)))), batch_size=1, num_workers=workers)
started = time.perf_counter()
total = torch.zeros(3, dtype=torch.float64)
squares = torch.zeros(3, dtype=torch.float64)
pixels = 0
for images, _ in loader:
    values = images.to(torch.float64).flatten(2)           # (1, 3, H*W), 0-1 scale
    total += values.sum((0, 2))
    squares += (values * values).sum((0, 2))
    pixels += values.shape[2]
seconds = time.perf_counter() - started
mean = total / pixels
print(json.dumps({"images": len(loader), "seconds": seconds, "mean": mean.tolist(),
                  "std": (squares / pixels - mean * mean).sqrt().tolist()}))
'''


def torchvision_recipe(corpus: Path, images: int) -> dict:
    """The loop's wall time; CPU time of the whole process tree (start-up and imports included: an upper bound)."""
    cpu_started = _children_cpu()
    out = subprocess.run([str(PEERS_PYTHON), "-c", RECIPE, str(corpus), str(images), str(CORES)],
                         check=True, capture_output=True, text=True).stdout
    cpu = _children_cpu() - cpu_started
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "rate": result["images"] / result["seconds"], "cpu_rate": result["images"] / cpu * CORES}


# --- the run ----------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--recipe-images", type=int, default=2000)
    parser.add_argument("--interleaved-extra", type=int, default=0, metavar="K",
                        help="after the rounds, the interleaved contender K more times back to back: the steadiest "
                             "estimate of the pass's per-image CPU against bare decoding")
    parser.add_argument("--out", default=str(HERE / "results" / "stats.md"), help="the report (and beside it the "
                        "rounds' raw figures as .json)")
    args = parser.parse_args()
    args.load_before = " / ".join(f"{value:.1f}" for value in os.getloadavg())

    dataset = packed(args.images)
    corpus = ensure_corpus(args.images, 0)
    prefault()
    subprocess.run(["cat", *map(str, sorted(dataset.glob("shard-*.rec")))], stdout=subprocess.DEVNULL, check=True)
    contenders = {
        "bare": lambda: bare(dataset),
        "stats": lambda: recpack_stats(dataset),
        "interleaved": lambda: interleaved(dataset),
        "sample": lambda: recpack_stats(dataset, "--sample", str(args.sample)),
        "torchvision": lambda: torchvision_recipe(corpus, args.recipe_images),
    }
    rounds: list[dict[str, dict]] = []
    for number in range(args.rounds):
        results = {}
        for name, contender in contenders.items():
            results[name] = contender()
            print(f"round {number + 1} {name:12s} {results[name]['rate']:8.1f} images/s "
                  f"({results[name]['seconds']:.2f} s), by CPU time {results[name]['cpu_rate']:8.1f}", flush=True)
        rounds.append(results)
    extra = []
    for number in range(args.interleaved_extra):
        extra.append(interleaved(dataset)["ratio"])
        print(f"interleaved, extra {number + 1}: {extra[-1]:.3f}", flush=True)
    recpack_stats(dataset)  # a last full pass: its statistics stay in the manifest and go into the report
    full = json.loads((dataset / "recpack.json").read_text())["stats"]
    text = report(rounds, args, full, extra)
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(json.dumps({"rounds": rounds, "interleaved_extra": extra},
                                                              indent=1) + "\n")
    print(text)
    return 0


def _median(rounds, name, key="rate") -> float:
    return statistics.median(r[name][key] for r in rounds)


def _ratios(rounds, top, bottom, key="rate") -> list[float]:
    return [r[top][key] / r[bottom]["rate"] for r in rounds]


def report(rounds: list[dict], args, full: dict, extra: list[float]) -> str:
    fmt = lambda values: " / ".join(f"{v:.2f}" for v in values)  # noqa: E731
    ratios = {
        "pass, wall": _ratios(rounds, "stats", "bare", "pass_rate"),
        "pass, CPU": [r["stats"]["pass_cpu_rate"] / r["bare"]["cpu_rate"] for r in rounds],
        "command, wall": _ratios(rounds, "stats", "bare"),
        "command, CPU": [r["stats"]["cpu_rate"] / r["bare"]["cpu_rate"] for r in rounds],
        "the pass's per-image CPU, interleaved shard by shard with bare decoding in the same processes":
            [r["interleaved"]["ratio"] for r in rounds],
    }
    recipe_wall = _ratios(rounds, "stats", "torchvision", "pass_rate")
    recipe_cpu = [r["stats"]["pass_cpu_rate"] / r["torchvision"]["cpu_rate"] for r in rounds]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    load = os.getloadavg()
    lines = [
        "# recpack stats: benchmark",
        "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {CORES} cores ({cpu}), Python {platform.python_version()}, "
        f"{args.images:,} corpus images (benchmarks/corpus_cache.py), {args.rounds} rounds, contenders alternated; "
        f"medians. Load average (1/5/15 min) before: {args.load_before}; at the end: {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} (the benchmark's own {CORES} processes count in it). On a shared VM images/s by the wall "
        "clock is how much of the cores each contender got; 'by CPU' is images per CPU-second of the contender's "
        f"whole process tree, times {CORES} cores: what it would do alone on idle cores.",
        "",
        "Command: `.venv/bin/python benchmarks/bench_stats.py "
        f"--images {args.images} --rounds {args.rounds} --sample {args.sample} --recipe-images {args.recipe_images}"
        f"{f' --interleaved-extra {len(extra)}' if extra else ''}`",
        "",
        "| contender | images/s, wall | images/s, by CPU | seconds, wall |",
        "|---|---:|---:|---:|",
        f"| bare libjpeg-turbo full-size decode, {CORES} processes, bytes pre-read | {_median(rounds, 'bare'):,.0f} "
        f"| {_median(rounds, 'bare', 'cpu_rate'):,.0f} | {_median(rounds, 'bare', 'seconds'):.1f} |",
        f"| **recpack stats**, the pass | **{_median(rounds, 'stats', 'pass_rate'):,.0f}** "
        f"| **{_median(rounds, 'stats', 'pass_cpu_rate'):,.0f}** | {_median(rounds, 'stats', 'pass_seconds'):.1f} |",
        f"| **recpack stats**, the whole command | {_median(rounds, 'stats'):,.0f} | {_median(rounds, 'stats', 'cpu_rate'):,.0f} "
        f"| {_median(rounds, 'stats', 'seconds'):.1f} |",
        f"| **recpack stats --sample {args.sample}**, the whole command | {_median(rounds, 'sample'):,.0f} "
        f"| {_median(rounds, 'sample', 'cpu_rate'):,.0f} | **{_median(rounds, 'sample', 'seconds'):.2f}** |",
        f"| torchvision ImageFolder + DataLoader({CORES} workers), batch 1, float64 sums; first {args.recipe_images:,} "
        f"images | {_median(rounds, 'torchvision'):,.0f} | {_median(rounds, 'torchvision', 'cpu_rate'):,.0f} "
        f"| {_median(rounds, 'torchvision', 'seconds'):.1f} |",
        f"| the seed issue's toolbox (1.4M images in 12 h) | {SEED_ISSUE_RATE:.0f} | | |",
        "",
        "recpack stats / bare decode, per round and median:",
        "",
    ]
    lines += [f"- {name}: **{statistics.median(values):.2f}x** (rounds {fmt(values)})" for name, values in ratios.items()]
    if extra:
        lines.append(f"- the same, {len(extra)} more times back to back after the rounds: "
                     f"**{statistics.median(extra):.3f}x** (range {min(extra):.3f}-{max(extra):.3f}; "
                     f"{' / '.join(f'{v:.3f}' for v in extra)})")
    lines += [
        "",
        f"recpack stats' pass / the torchvision recipe: {statistics.median(recipe_wall):.1f}x by the wall clock "
        f"(rounds {fmt(recipe_wall)}), {statistics.median(recipe_cpu):.1f}x by CPU (rounds {fmt(recipe_cpu)}); "
        f"/ the seed issue's 32 images/s: {_median(rounds, 'stats', 'pass_rate') / SEED_ISSUE_RATE:.0f}x "
        f"by the wall clock, {_median(rounds, 'stats', 'pass_cpu_rate') / SEED_ISSUE_RATE:.0f}x by CPU.",
        f"`--sample {args.sample}`, the whole command: {_median(rounds, 'sample', 'seconds'):.2f} s "
        f"(rounds {fmt([r['sample']['seconds'] for r in rounds])}).",
        "",
        "Statistics of the corpus (a last full pass after the rounds, 0-1 scale): mean "
        + " ".join(f"{v:.4f}" for v in full["mean"]) + ", std " + " ".join(f"{v:.4f}" for v in full["std"])
        + "; the torchvision recipe on its subset: mean "
        + " ".join(f"{v:.4f}" for v in rounds[-1]["torchvision"]["mean"]) + ", std "
        + " ".join(f"{v:.4f}" for v in rounds[-1]["torchvision"]["std"]) + ".",
        "",
        "Per round (images/s, wall clock | by CPU):",
        "",
        "| round | bare | stats pass | stats command | sample (s) | torchvision |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for number, r in enumerate(rounds, 1):
        lines.append(f"| {number} | {r['bare']['rate']:,.0f} \\| {r['bare']['cpu_rate']:,.0f} "
                     f"| {r['stats']['pass_rate']:,.0f} \\| {r['stats']['pass_cpu_rate']:,.0f} "
                     f"| {r['stats']['rate']:,.0f} \\| {r['stats']['cpu_rate']:,.0f} | {r['sample']['seconds']:.2f} "
                     f"| {r['torchvision']['rate']:,.0f} \\| {r['torchvision']['cpu_rate']:,.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
