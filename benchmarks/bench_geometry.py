"""Each geometry mode against bare full-size decoding, and whole-image resize against torchvision, in one run.

Contenders, alternated round by round (the order rotates) so that noise on a
shared machine hits all alike; each round every contender takes the same
images once, and the figure kept is the median over rounds of its ratio to
the bare decode of that same round:

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
RESIZE = (240, 320)
MODES = {  # contender -> Augment options
    "random_resized_crop 224": dict(size=224),
    "center_crop 224": dict(size=224, train=False),
    "resize 240x320": dict(size=RESIZE, mode="resize"),
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


def _torchvision_part(datas: list[bytes]) -> int:
    import torch
    from torchvision.io import decode_jpeg
    from torchvision.transforms import v2

    torch.set_num_threads(1)
    resize = v2.Resize(RESIZE, antialias=True)
    for data in datas:
        resize(decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8)))
    return len(datas)


def torchvision_resize(pool: ProcessPoolExecutor, datas: list[bytes]) -> int:
    return sum(pool.map(_torchvision_part, [datas[i::CORES] for i in range(CORES)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "geometry.md")
    args = parser.parse_args()

    dataset = packed(args.images)
    prefault()
    datas = jpeg_bytes(dataset)
    with ProcessPoolExecutor(CORES) as pool:
        pool.map(_torchvision_part, [datas[:2]] * CORES)  # import torch and torchvision before the clock
        contenders = {"bare": lambda: bare(datas),
                      **{name: (lambda o=options: recpack_epoch(dataset, o)) for name, options in MODES.items()},
                      "torchvision decode_jpeg + v2.Resize 240x320": lambda: torchvision_resize(pool, datas)}
        names = list(contenders)
        rates: dict[str, list[float]] = {name: [] for name in names}
        for round_index, name in schedule(names, args.rounds, rotate=True):
            started = time.perf_counter()
            count = contenders[name]()
            rates[name].append(count / (time.perf_counter() - started))
            assert count == len(datas), (name, count)
            if all(len(values) == round_index + 1 for values in rates.values()):
                print(f"round {round_index + 1}: " + ", ".join(f"{n} {rates[n][-1]:.0f}" for n in names), flush=True)
    write_report(args, rates, len(datas))


def write_report(args, rates: dict[str, list[float]], images: int) -> None:
    import PIL
    import torch
    import torchvision

    bare_rates = rates["bare"]
    lines = [
        "# Geometry modes against bare decoding",
        "",
        f"{datetime.now(timezone.utc).isoformat(timespec='minutes')}, {platform.processor() or platform.machine()}, "
        f"{CORES} cores, {images} corpus images (benchmarks/corpus_cache.py ensure_corpus({args.images}, 0), "
        f"packed into 16 shards), {args.rounds} rounds, contenders alternated with the order rotating each round. "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, PIL {PIL.__version__}.",
        "",
        "Command: `benchmarks/.venv-peers/bin/python benchmarks/bench_geometry.py "
        f"--images {args.images} --rounds {args.rounds}`",
        "",
        "Ratio: the median over rounds of (contender / bare decode of the same round).",
        "",
        "| contender | images/s (median) | vs bare decode | rounds (images/s) |",
        "|---|---:|---:|---|",
    ]
    for name, values in rates.items():
        ratio = median(per_round_ratios(values, bare_rates))
        rounds = " / ".join(f"{v:.0f}" for v in values)
        lines.append(f"| {name} | {median(values):,.0f} | {ratio:.2f}x | {rounds} |")
    tv = rates["torchvision decode_jpeg + v2.Resize 240x320"]
    ours = rates["resize 240x320"]
    lines += ["", f"recpack `resize 240x320` / torchvision decode_jpeg + v2.Resize: "
              f"{median(per_round_ratios(ours, tv)):.2f}x (median of per-round ratios).", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
