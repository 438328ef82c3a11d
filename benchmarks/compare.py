#!/usr/bin/env python3
"""Side-by-side READ benchmark: recpack against its peers, the same job, in one run.

The job is what an ImageNet training loop asks of its input pipeline: one
shuffled epoch over the corpus, JPEG decode, RandomResizedCrop 224 + random
horizontal flip, batches of 256 uint8 (N, 3, 224, 224), W loader workers
(default: all cores).  Every contender does exactly that, with the same
interpreter, torch and Pillow (tools/setup_bench_venv.sh builds that venv);
only MXNet, which cannot live beside a current numpy, runs from its own venv
(tools/setup_mxnet_venv.sh), on recpack's shards as they are.

Why the shape of this benchmark:
- each contender runs in a fresh child process (compare_readers.py, which
  also defines the contenders), so its peak memory is its own and nothing it
  caches helps the next one;
- contenders alternate within a round and the order rotates between rounds,
  so a slow drift of the machine does not favour whoever runs first; the
  targets are medians of per-round ratios (rounds.py);
- the clock starts once the loader is built (imports, dataset construction),
  as the decode ceiling's starts once its bytes are read; worker start-up
  and the first batch are timed (and also shown apart);
- every packed format (compare_packers.py) and the corpus are read once
  before timing, so every contender reads from the page cache (the same for
  all; disk speed is what the ``cat`` ceilings are for);
- the ceilings say how close to the machine each loader gets: libjpeg-turbo
  full-size decode of every file on all cores (bytes pre-read, nothing else),
  and ``cat`` of the packed shards and of the source files.

Usage (see --help)::

    bash tools/setup_bench_venv.sh && bash tools/setup_mxnet_venv.sh
    benchmarks/.venv-peers/bin/python benchmarks/compare.py --quick     # 2,000 images
    benchmarks/.venv-peers/bin/python benchmarks/compare.py            # 20,000 images, 3 rounds

Writes benchmarks/results/compare.md and compare.png; packed data and logs
are cached in benchmarks/.work/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ceilings import warm
from compare_packers import PACKERS, ensure_packed, work_folder
from compare_readers import CONTENDERS, Contender
from compare_report import Row, chart, results_table, targets
from compare_settings import BATCH, SIZE
from corpus_cache import CLASSES, load_corpus
from harness import run_child
from prefault import prefault
from report import machine_lines
from rounds import schedule, targets_table
from settings import CPUS, HERE, MXNET_PYTHON, REPO, RESULTS, RUN_TIMEOUT_S


def measure(c: Contender, data: Path, workers: int, log: Path) -> dict:
    """One epoch of one contender in a fresh child process: its own timing, our memory sampling."""
    python = str(MXNET_PYTHON) if c.venv == "mxnet" else sys.executable
    if c.venv == "mxnet" and not MXNET_PYTHON.exists():
        return {"status": "unavailable", "note": "no benchmarks/.venv-mxnet (bash tools/setup_mxnet_venv.sh)"}
    done = run_child([python, str(HERE / "compare_readers.py"), c.key, str(data), "--workers", str(workers)], log,
                     cwd=REPO, timeout=RUN_TIMEOUT_S)
    if done.result is None or "status" not in done.result:
        return {"status": "error", "note": done.error_tail()}
    return {**done.result, "peak_rss": done.peak_rss, "peak_pss": done.peak_pss}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=20_000, help="corpus size (default 20000)")
    p.add_argument("--quick", action="store_true", help="2,000 images (a smoke run)")
    p.add_argument("--rounds", type=int, default=3, help="epochs per contender; the median is reported (default 3)")
    p.add_argument("--workers", type=int, default=CPUS, help=f"loader workers for every contender (default {CPUS})")
    p.add_argument("--seed", type=int, default=0, help="corpus seed")
    p.add_argument("--only", default=None, help="comma-separated contender keys (compare_readers.py; default: all)")
    p.add_argument("--repack", action="store_true", help="rewrite the packed formats instead of reusing them")
    p.add_argument("--out", type=Path, default=RESULTS / "compare.md", help="markdown report (PNG beside it)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    images = 2_000 if args.quick else args.images
    chosen = [c for c in CONTENDERS if not args.only or c.key in args.only.split(",")]
    corpus = load_corpus(images, args.seed)
    work = work_folder(images, args.seed)
    work.mkdir(parents=True, exist_ok=True)

    print(f"packing formats for {images} images (cached in {work}) ...", flush=True)
    packs = {key: ensure_packed(key, corpus.root, work, args.repack) for key in PACKERS
             if any(c.data == key for c in chosen)}
    data_of = {key: work / f"data-{key}" for key, p in packs.items() if p["status"] == "ok"} | {"corpus": corpus.root}
    prefault()  # a fresh VM backs memory lazily: see benchmarks/prefault.py
    warm(list(data_of.values()))

    rows = {c.key: Row(c, [], packs.get(c.data) if c.data != "corpus" else None) for c in CONTENDERS}
    for row in rows.values():
        if row.contender not in chosen:
            row.runs.append({"status": "skipped", "note": "not selected (--only)"})
        elif row.contender.data not in data_of:
            row.runs.append({"status": "unavailable", "note": packs[row.contender.data]["note"]})
    runnable = [c for c in chosen if not rows[c.key].runs]
    for round_index, c in schedule(runnable, args.rounds, rotate=True):
        if rows[c.key].runs and rows[c.key].runs[-1].get("status") == "unavailable":
            continue  # no point asking again
        result = measure(c, data_of[c.data], args.workers, work / "logs" / f"run-{c.key}-r{round_index + 1}")
        rows[c.key].runs.append(result)
        rate = f"{result['images'] / result['seconds']:,.0f} images/s" if result["status"] == "ok" else \
            f"{result['status']}: {result.get('note', '')}"
        print(f"  round {round_index + 1}/{args.rounds} {c.label}: {rate}", flush=True)

    title = f"recpack read benchmark: {images:,} images, {args.workers} workers, {CPUS} cores"
    table, goals = results_table(rows), targets_table(targets(rows))
    print("\n".join(["", *table, "", *goals]))
    report = [
        f"# {title}", "",
        *machine_lines(["python benchmarks/compare.py", *(argv if argv is not None else sys.argv[1:])]),
        f"- corpus: {images:,} JPEGs ({corpus.total_bytes / 1e6:,.0f} MB), benchmarks/make_corpus.py --classes "
        f"{CLASSES} --seed {args.seed}",
        f"- job: one shuffled epoch, decode, RandomResizedCrop {SIZE} + horizontal flip, uint8 batches of {BATCH} "
        f"(N,3,{SIZE},{SIZE}), {args.workers} loader workers each; median of {args.rounds} rounds, contenders "
        "alternating within a round, the order rotating between rounds; every dataset read once beforehand (page "
        "cache warm for all)",
        "- targets: the median of per-round ratios (each round's pair ran minutes apart at most)",
        "- peak RSS / PSS: summed over the contender's process tree, sampled every 0.1 s (recpack.measure.procstats); "
        "RSS counts shared pages once per process, PSS splits them between their sharers",
        "- pack s / packed MB: one pack of the corpus in that format, timed as the whole packing process (cached "
        "between runs; the pack benchmark is benchmarks/bench_pack.py)",
        "", "## Targets", "", *goals, "", "## Results", "", *table, "",
        f"![chart]({args.out.with_suffix('.png').name})",
    ]
    ffcv_log = Path(sys.executable).parent.parent / "ffcv-build.log"
    if not rows["ffcv"].rate and ffcv_log.exists():
        tail = ffcv_log.read_text().strip().splitlines()[-12:]
        report += ["", "## FFCV build (tools/setup_bench_venv.sh), last lines", "", "```", *tail, "```"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report) + "\n")
    chart(rows, args.out.with_suffix(".png"), title)
    (work / "results.json").write_text(json.dumps({k: r.runs for k, r in rows.items()}, indent=1))
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
