"""Each geometry mode against bare full-size decoding, and whole-image resize against torchvision, in one run.

Contenders, alternated round by round (the order rotates) so that noise on a
shared machine hits all alike; each round every contender takes the same
images once, and the figure kept is the median over rounds of its ratio to
the bare decode of that same round.  Two clocks: wall time (images/s), and
the CPU time the contender's processes spent (images per CPU-second, times
the cores: what it would do on idle cores), which other users of a shared
machine disturb far less:

  bare          libjpeg-turbo full-size decode of every JPEG (recpack's _libjpeg.decode_region over the
                whole image, no crop, no scale), bytes pre-read, one thread per core (the GIL is released)
  <mode>        RecordDataset epoch over the same images packed into 16 shards: batch mode (64), one decode
                thread per core, num_workers=0, from the page cache, CRC checked -- everything a training
                loop gets; ``full`` runs in per-sample mode, the only one it has
  torchvision   torchvision.io.decode_jpeg + transforms.v2.Resize((H, W), antialias=True) on the same
                pre-read bytes, one process per core (torch.set_num_threads(1)); the same H x W as ``resize``

    benchmarks/.venv-peers/bin/python benchmarks/bench_geometry.py [--images 4000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from corpus_cache import ensure_corpus  # noqa: E402
from prefault import prefault  # noqa: E402
from rounds import median, per_round_ratios, schedule  # noqa: E402

CORES = os.cpu_count() or 1
TORCHVISION = "torchvision decode_jpeg + v2.Resize 240x320"
RESIZE = (240, 320)
MODES = {  # contender -> Augment options
    "random_resized_crop 224": dict(size=224),
    "center_crop 224": dict(size=224, train=False),
    "resize 240x320": dict(size=RESIZE, mode="resize"),
    "resize 224x224": dict(size=224, mode="resize"),
    "letterbox 240x320": dict(size=RESIZE, mode="letterbox"),
    "scale_crop 256x256": dict(size=256, mode="scale_crop"),
    "full": dict(mode="full", train=False),
}


def packed(images: int) -> Path:
    out = HERE / ".work" / f"geometry-{images}"
    if not (out / "recpack.json").exists():
        corpus = ensure_corpus(images, 0)
        subprocess.run([sys.executable, "-m", "recpack", "pack", str(corpus / "list.txt"), str(out), "--shards", "16",
                        "--overwrite", "--quiet"], check=True)
    return out


def jpeg_bytes(dataset: Path) -> list[bytes]:
    """Every record's JPEG, in memory: what the bare decode and torchvision take."""
    from recpack import RecordDataset

    return [image for images, _ in RecordDataset(str(dataset), augment=None, batch_size=256) for image in images]


def bare(datas: list[bytes]) -> int:
    from recpack.jpeg._libjpeg import decode_region
    from recpack.jpeg.header import read_jpeg_header

    def decode(chunk: list[bytes]) -> int:
        for data in chunk:
            info = read_jpeg_header(data, require_end=False)
            decode_region(data, 0, 0, info.width, info.height, 8)
        return len(chunk)

    with ThreadPoolExecutor(CORES) as pool:
        return sum(pool.map(decode, [datas[i : i + 16] for i in range(0, len(datas), 16)]))


def recpack_epoch(dataset: Path, options: dict) -> int:
    from recpack import Augment, RecordDataset

    augment = Augment(**options)
    if augment.canvas is None:
        return sum(1 for _ in RecordDataset(str(dataset), augment=augment))
    return sum(len(images) for images, _ in RecordDataset(str(dataset), batch_size=64, augment=augment))


def _torchvision_part(datas: list[bytes]) -> tuple[int, float]:
    """(images, CPU seconds) of one worker process."""
    import torch
    from torchvision.io import decode_jpeg
    from torchvision.transforms import v2

    torch.set_num_threads(1)
    resize = v2.Resize(RESIZE, antialias=True)
    started = time.process_time()
    for data in datas:
        resize(decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8)))
    return len(datas), time.process_time() - started


def torchvision_resize(pool: ProcessPoolExecutor, datas: list[bytes]) -> tuple[int, float]:
    parts = list(pool.map(_torchvision_part, [datas[i::CORES] for i in range(CORES)]))
    return sum(count for count, _ in parts), sum(cpu for _, cpu in parts)


def in_process(run):
    """A contender that runs in this process, timed: (images, CPU seconds of all its threads)."""
    def timed() -> tuple[int, float]:
        started = time.process_time()
        count = run()
        return count, time.process_time() - started
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "geometry.md")
    parser.add_argument("--no-prefault", action="store_true",
                        help="skip touching the free memory first (a machine up for a while needs none, and on one "
                             "shared with other work it can run them or this out of memory)")
    args = parser.parse_args()

    dataset = packed(args.images)
    if not args.no_prefault:
        prefault()
    datas = jpeg_bytes(dataset)
    with ProcessPoolExecutor(CORES) as pool:
        pool.map(_torchvision_part, [datas[:2]] * CORES)  # import torch and torchvision before the clock
        contenders = {"bare": in_process(lambda: bare(datas)),
                      **{name: in_process(lambda o=options: recpack_epoch(dataset, o)) for name, options in MODES.items()},
                      TORCHVISION: lambda: torchvision_resize(pool, datas)}
        names = list(contenders)
        rates: dict[str, list[float]] = {name: [] for name in names}
        cpu_rates: dict[str, list[float]] = {name: [] for name in names}
        for round_index, name in schedule(names, args.rounds, rotate=True):
            started = time.perf_counter()
            count, cpu = contenders[name]()
            rates[name].append(count / (time.perf_counter() - started))
            cpu_rates[name].append(count / cpu * CORES)
            assert count == len(datas), (name, count)
            if all(len(values) == round_index + 1 for values in rates.values()):
                print(f"round {round_index + 1}: " + ", ".join(f"{n} {rates[n][-1]:.0f}/{cpu_rates[n][-1]:.0f}"
                                                              for n in names), flush=True)
    write_report(args, rates, cpu_rates, len(datas))


def write_report(args, rates: dict[str, list[float]], cpu_rates: dict[str, list[float]], images: int) -> None:
    import PIL
    import torch
    import torchvision

    lines = [
        "# Geometry modes against bare decoding",
        "",
        f"{datetime.now(timezone.utc).isoformat(timespec='minutes')}, {platform.processor() or platform.machine()}, "
        f"{CORES} cores, {images} corpus images (benchmarks/corpus_cache.py ensure_corpus({args.images}, 0), "
        f"packed into 16 shards), {args.rounds} rounds, contenders alternated with the order rotating each round. "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, PIL {PIL.__version__}.",
        "",
        "Command: `benchmarks/.venv-peers/bin/python benchmarks/bench_geometry.py "
        f"--images {args.images} --rounds {args.rounds}{' --no-prefault' if args.no_prefault else ''}`",
        "",
        "Ratios: the median over rounds of (contender / bare decode of the same round), on each clock. "
        f"CPU clock: images per CPU-second of the contender's processes, times {CORES} cores.",
        "",
        "| contender | images/s, wall (median) | vs bare, wall | images/s, CPU clock (median) | vs bare, CPU clock "
        "| rounds, wall/CPU clock |",
        "|---|---:|---:|---:|---:|---|",
    ]
    ratio = lambda ours, theirs: median(per_round_ratios(ours, theirs))  # noqa: E731
    for name in rates:
        rounds = " ".join(f"{w:.0f}/{c:.0f}" for w, c in zip(rates[name], cpu_rates[name]))
        lines.append(f"| {name} | {median(rates[name]):,.0f} | {ratio(rates[name], rates['bare']):.2f}x | "
                     f"{median(cpu_rates[name]):,.0f} | {ratio(cpu_rates[name], cpu_rates['bare']):.2f}x | {rounds} |")
    lines += ["", f"recpack `resize 240x320` / torchvision decode_jpeg + v2.Resize: "
              f"{ratio(rates['resize 240x320'], rates[TORCHVISION]):.2f}x wall, "
              f"{ratio(cpu_rates['resize 240x320'], cpu_rates[TORCHVISION]):.2f}x CPU clock "
              "(medians of per-round ratios).", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
