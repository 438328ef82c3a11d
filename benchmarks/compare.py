#!/usr/bin/env python3
"""Side-by-side READ benchmark: recpack against its peers, the same job, in one run.

The job is what an ImageNet training loop asks of its input pipeline: one
shuffled epoch over the corpus, JPEG decode, RandomResizedCrop 224 + random
horizontal flip, batches of 256 uint8 (N, 3, 224, 224), W loader workers
(default: all cores).  Every contender does exactly that, with the same
interpreter, torch and Pillow (tools/setup_bench_venv.sh builds that venv);
only MXNet, which cannot live beside a current numpy, runs from its own venv
(tools/setup_mxnet_venv.sh), on recpack's shards as they are.

Why the shape of this script:
- each contender runs in a fresh child process (``compare.py _run KEY DATA``),
  so its peak RSS is its own and nothing it caches helps the next one;
- contenders alternate within a round and the order rotates between rounds,
  so a slow drift of the machine does not favour whoever runs first;
- the clock starts once the loader is built (imports, dataset construction),
  as the decode ceiling's starts once its bytes are read; worker start-up
  and the first batch are timed (and also shown apart);
- every packed format and the corpus are read once before timing, so every
  contender reads from the page cache (the same for all; disk speed is what
  the ``cat`` ceilings are for);
- the ceilings say how close to the machine each loader gets: libjpeg-turbo
  full-size decode of every file on all cores (bytes pre-read, nothing else),
  and ``cat`` of the packed shards and of the source files.

Usage (see --help)::

    bash tools/setup_bench_venv.sh && bash tools/setup_mxnet_venv.sh
    benchmarks/.venv-peers/bin/python benchmarks/compare.py --quick     # 2,000 images
    benchmarks/.venv-peers/bin/python benchmarks/compare.py            # 20,000 images, 3 rounds

Writes benchmarks/results/compare.md and compare.png; packed data and logs
are cached in benchmarks/.work/.  Only the standard library is imported at
module level: the MXNet venv runs this same file for its contender.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from compare_settings import (  # noqa: E402
    BATCH, CPUS, FFCV_QUOTED_IMAGES_PER_S, MXNET_PYTHON, REPO, RESIZE, RESULTS,
    RUN_TIMEOUT_S, SIZE, WORK, Unavailable, pil_decode,
)
from corpus_cache import CLASSES, ensure_corpus, listed_bytes, read_list  # noqa: E402
from prefault import prefault  # noqa: E402
from compare_packers import PACKERS, ensure_packed, pack_main, packed_count  # noqa: E402

# ---------------------------------------------------------------------------
# Contenders: what runs, on which prepared data, in which venv


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    kind: str  # "recpack" | "peer" | "ceiling"
    data: str  # key of the prepared data it reads (see PACKERS), or "corpus"
    venv: str = "peers"  # or "mxnet"
    note: str = ""  # a caveat for the report's notes column


CONTENDERS = (
    Contender("recpack", "recpack RecordDataset", "recpack", "recpack"),
    Contender("recpack_resized", f"recpack RecordDataset (--resize {RESIZE})", "recpack", "recpack_resized"),
    Contender("recpack_threads", "recpack RecordDataset, num_workers=0", "recpack", "recpack",
              note="no worker processes: as many decode threads as loader workers, in the training process"),
    Contender("imagefolder_pil", "torchvision ImageFolder + PIL", "peer", "corpus"),
    Contender("imagefolder_tvio", "torchvision ImageFolder + io.decode_jpeg", "peer", "corpus"),
    Contender("webdataset", "WebDataset tar shards", "peer", "webdataset"),
    Contender("streaming", "MosaicML Streaming (MDS)", "peer", "streaming"),
    Contender("litdata", "LitData optimize + StreamingDataLoader", "peer", "litdata"),
    Contender("mxnet", "MXNet ImageRecordIter (recpack's shards)", "peer", "recpack", venv="mxnet",
              note=f"MXNet uses max(cores/2-1, 1) = {max(CPUS // 2 - 1, 1)} decode thread(s) here; 8 MB chunk shuffle"),
    Contender("ffcv", f"FFCV (max_resolution {RESIZE})", "peer", "ffcv",
              note="the epoch includes numba's JIT compile (see 'after 1st batch')"),
    Contender("bare_decode", f"ceiling: libjpeg-turbo full decode, {CPUS} procs", "ceiling", "corpus",
              note="bytes pre-read; decode only, full size, no crop"),
    Contender("cat_packed", "ceiling: cat recpack shards", "ceiling", "recpack"),
    Contender("cat_source", "ceiling: cat source files", "ceiling", "corpus"),
)


# ---------------------------------------------------------------------------
# Shared pieces of the peers' pipelines (the same transforms for every PIL peer)


def pil_train_transform():
    """torchvision's classic train transform, ending in uint8 CHW (no float, no normalize: same as recpack)."""
    from torchvision import transforms as T

    return T.Compose([T.RandomResizedCrop(SIZE), T.RandomHorizontalFlip(), T.PILToTensor()])


def tvio_load(path: str):
    """File -> uint8 CHW tensor via torchvision.io (libjpeg-turbo), forcing RGB for grayscale files."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    return decode_jpeg(read_file(path), mode=ImageReadMode.RGB)


# ---------------------------------------------------------------------------
# Readers: one function per contender; each returns an iterable of batches.
# The harness times from the call to the last batch (opening is part of an epoch).


def read_recpack(path: Path, workers: int):
    """recpack yields whole batches from its workers, so DataLoader only passes them on."""
    from torch.utils.data import DataLoader

    try:
        from recpack import Augment, RecordDataset
    except ImportError as error:
        raise Unavailable(f"recpack reader not available ({error})") from None
    augment = Augment(size=SIZE, train=True)  # RandomResizedCrop (0.08-1, 3/4-4/3) + flip
    dataset = RecordDataset(str(path), batch_size=BATCH, augment=augment, shuffle=True, seed=0)
    return DataLoader(dataset, batch_size=None, num_workers=workers)


def read_recpack_threads(path: Path, workers: int):
    """recpack's recommended setup: its decode threads release the GIL, so no worker processes are needed."""
    from torch.utils.data import DataLoader

    from recpack import Augment, ReadOptions, RecordDataset

    dataset = RecordDataset(str(path), batch_size=BATCH, augment=Augment(size=SIZE, train=True), shuffle=True,
                            seed=0, read=ReadOptions(threads=workers))
    return DataLoader(dataset, batch_size=None, num_workers=0)


def read_imagefolder_pil(path: Path, workers: int):
    """The baseline most training scripts start from: one file per image, PIL decode."""
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(str(path), transform=pil_train_transform())
    return DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers)


def read_imagefolder_tvio(path: Path, workers: int):
    """Same files, decoded by torchvision.io.decode_jpeg and cropped as tensors (transforms.v2)."""
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    transform = v2.Compose([v2.RandomResizedCrop(SIZE, antialias=True), v2.RandomHorizontalFlip()])
    dataset = ImageFolder(str(path), loader=tvio_load, transform=transform)
    return DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers)


def _webdataset_sample(sample, transform=None):
    return transform(pil_decode(sample["jpg"])), int(sample["cls"])


def read_webdataset(path: Path, workers: int):
    """Shard order shuffled, then a 1,000-sample buffer per worker (before decode, as usual)."""
    import functools

    import webdataset as wds
    from torch.utils.data import DataLoader

    urls = sorted(str(p) for p in path.glob("*.tar"))
    transform = pil_train_transform()
    dataset = (
        wds.WebDataset(urls, shardshuffle=len(urls), empty_check=False)
        .shuffle(1000)
        .map(functools.partial(_webdataset_sample, transform=transform))
        .batched(BATCH, partial=True)
    )
    return DataLoader(dataset, batch_size=None, num_workers=workers)


def read_streaming(path: Path, workers: int):
    """Local MDS shards; Streaming's own global shuffle; decode in __getitem__."""
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory
    from torch.utils.data import DataLoader

    transform = pil_train_transform()

    class Decoded(StreamingDataset):
        def __getitem__(self, index):
            sample = super().__getitem__(index)
            return transform(pil_decode(sample["image"])), sample["label"]

    clean_stale_shared_memory()
    dataset = Decoded(local=str(path), shuffle=True, shuffle_seed=0, batch_size=BATCH)
    return DataLoader(dataset, batch_size=BATCH, num_workers=workers)


def read_litdata(path: Path, workers: int):
    """litdata's optimized chunks, read with its own StreamingDataLoader."""
    from litdata import StreamingDataLoader, StreamingDataset

    transform = pil_train_transform()

    class Decoded(StreamingDataset):
        def __getitem__(self, index):
            sample = super().__getitem__(index)
            return transform(pil_decode(sample["image"])), sample["label"]

    dataset = Decoded(str(path), shuffle=True, seed=0)
    return StreamingDataLoader(dataset, batch_size=BATCH, num_workers=workers)


def read_mxnet(path: Path, workers: int):
    """MXNet's C++ ImageRecordIter on recpack's 64 shards as they are.

    dmlc reads a ';'-joined list of .rec files as one stream, but its indexed
    (random-access) reader takes only one .idx; so the shuffle is MXNet's other
    mode, the one made for sequential reads: chunks of ``shuffle_chunk_size`` MB
    in random order.  MXNet caps its decode threads at max(cores / 2 - 1, 1),
    so on 2 cores it decodes with 1 thread whatever is asked.  random_resized_crop with torchvision's defaults (area
    0.08-1, aspect 3/4-4/3) stands in for RandomResizedCrop; preprocess_threads
    is MXNet's decode-thread count.
    """
    try:
        import mxnet as mx
    except ImportError as error:
        raise Unavailable(f"mxnet not importable ({error})") from None
    recs = sorted(path.glob("shard-*.rec"))
    iterator = mx.io.ImageRecordIter(
        path_imgrec=";".join(str(p) for p in recs),
        data_shape=(3, SIZE, SIZE), batch_size=BATCH, dtype="uint8",
        shuffle=True, shuffle_chunk_size=8, shuffle_chunk_seed=0, seed=0, rand_mirror=True, random_resized_crop=True,
        min_random_area=0.08, max_random_area=1.0, min_aspect_ratio=3 / 4, max_aspect_ratio=4 / 3,
        preprocess_threads=workers, round_batch=False,
    )
    # round_batch=False zero-fills the last batch (no extra decode) and reports pad 0: trim it ourselves.
    remaining = sum(len(p.with_suffix(".idx").read_text().splitlines()) for p in recs)
    for batch in iterator:
        data = batch.data[0][: min(BATCH, remaining)]
        data.wait_to_read()
        remaining -= data.shape[0]
        yield data


def read_ffcv(path: Path, workers: int):
    """FFCV's Loader: JIT-compiled decode + crop; workers are its threads."""
    try:
        from ffcv.fields.decoders import IntDecoder, RandomResizedCropRGBImageDecoder
        from ffcv.loader import Loader, OrderOption
        from ffcv.transforms import RandomHorizontalFlip, ToTensor, ToTorchImage
    except ImportError as error:
        raise Unavailable(f"ffcv not importable ({error})") from None
    pipelines = {
        "image": [RandomResizedCropRGBImageDecoder((SIZE, SIZE)), RandomHorizontalFlip(), ToTensor(),
                  ToTorchImage()],
        "label": [IntDecoder(), ToTensor()],
    }
    return Loader(str(path / "data.beton"), batch_size=BATCH, num_workers=workers, order=OrderOption.RANDOM,
                  os_cache=True, drop_last=False, pipelines=pipelines)


READERS = {
    "recpack": read_recpack, "recpack_resized": read_recpack, "recpack_threads": read_recpack_threads, "imagefolder_pil": read_imagefolder_pil,
    "imagefolder_tvio": read_imagefolder_tvio, "webdataset": read_webdataset, "streaming": read_streaming,
    "litdata": read_litdata, "mxnet": read_mxnet, "ffcv": read_ffcv,
}


# ---------------------------------------------------------------------------
# Ceilings: what the machine can do at all


def _decode_worker(paths: list[str], barrier, results) -> None:
    from turbojpeg import TurboJPEG

    jpeg = TurboJPEG()
    blobs = [Path(p).read_bytes() for p in paths]  # read before the clock starts
    barrier.wait()
    start = time.perf_counter()
    for blob in blobs:
        jpeg.decode(blob)  # full size, RGB/BGR 8-bit: the decode every loader must at least do
    results.put(time.perf_counter() - start)


def ceiling_bare_decode(corpus: Path, workers: int) -> dict:
    """Full-size libjpeg-turbo decode of every file on all cores: the decode-bound ceiling."""
    import multiprocessing as mp

    paths = [str(corpus / rel) for rel, _ in read_list(corpus / "list.txt")]
    procs = CPUS
    barrier, results = mp.Barrier(procs + 1), mp.Queue()
    children = [mp.Process(target=_decode_worker, args=(paths[i::procs], barrier, results)) for i in range(procs)]
    for child in children:
        child.start()
    barrier.wait()
    seconds = max(results.get() for _ in children)
    for child in children:
        child.join()
    return {"images": len(paths), "seconds": seconds, "nbytes": None}


def _cat(files: list[Path]) -> tuple[float, int]:
    start = time.perf_counter()
    subprocess.run(["xargs", "-0", "cat"], input=b"\0".join(str(f).encode() for f in files),
                   stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start, sum(f.stat().st_size for f in files)


def ceiling_cat_packed(path: Path, workers: int) -> dict:
    seconds, nbytes = _cat(sorted(path.glob("shard-*.rec")))
    return {"images": packed_count(path), "seconds": seconds, "nbytes": nbytes}


def ceiling_cat_source(corpus: Path, workers: int) -> dict:
    files = [corpus / rel for rel, _ in read_list(corpus / "list.txt")]
    seconds, nbytes = _cat(files)
    return {"images": len(files), "seconds": seconds, "nbytes": nbytes}


CEILINGS = {"bare_decode": ceiling_bare_decode, "cat_packed": ceiling_cat_packed, "cat_source": ceiling_cat_source}


# ---------------------------------------------------------------------------
# Child side: one epoch, reported as one JSON line


def batch_info(batch) -> tuple[int, list[int], str]:
    """(images, shape, dtype) of a batch, whatever container the loader wraps it in."""
    if isinstance(batch, dict):
        batch = batch["image"] if "image" in batch else next(iter(batch.values()))
    while isinstance(batch, (list, tuple)):
        batch = batch[0]
    return int(batch.shape[0]), [int(d) for d in batch.shape], getattr(batch.dtype, "__name__", str(batch.dtype))


def run_epoch(key: str, path: Path, workers: int) -> dict:
    if key in CEILINGS:
        return CEILINGS[key](path, workers)
    loader = READERS[key](path, workers)  # imports and dataset construction: not timed, as for the ceilings
    start = time.perf_counter()
    images, first, first_images, shape = 0, None, 0, None
    for batch in loader:
        count, batch_shape, dtype = batch_info(batch)
        if first is None:
            first, first_images = time.perf_counter() - start, count
            shape = f"{'x'.join(map(str, batch_shape))} {dtype}"
        images += count
    return {"images": images, "seconds": time.perf_counter() - start, "first_batch_s": first,
            "first_images": first_images, "shape": shape}


def child_main(key: str, path: str, workers: int) -> int:
    try:
        result = {"status": "ok", **run_epoch(key, Path(path), workers)}
    except Unavailable as error:
        result = {"status": "unavailable", "note": str(error)}
    print("RESULT " + json.dumps(result), flush=True)
    return 0



# ---------------------------------------------------------------------------
# Parent side: the harness (corpus, page cache, RSS sampler, rounds)


def warm_page_cache(paths: list[Path]) -> None:
    for path in paths:
        files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]
        _cat(files)


class PeakRSS:
    """Samples the summed RSS of a process and all its descendants every `interval` s; keeps the peak.

    RSS summed over a tree counts pages shared between forked workers more than once: an upper
    bound, the same rule for every contender.
    """

    def __init__(self, pid: int, interval: float = 0.1):
        import psutil

        self._root, self._interval, self.peak = psutil.Process(pid), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            try:
                for proc in [self._root, *self._root.children(recursive=True)]:
                    try:
                        total += proc.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                return
            self.peak = max(self.peak, total)
            self._stop.wait(self._interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def measure(c: Contender, data: Path, workers: int, log_dir: Path) -> dict:
    """One epoch of one contender in a fresh child process; its own timing, our RSS sampling."""
    python = str(MXNET_PYTHON) if c.venv == "mxnet" else sys.executable
    if c.venv == "mxnet" and not MXNET_PYTHON.exists():
        return {"status": "unavailable", "note": "no benchmarks/.venv-mxnet (bash tools/setup_mxnet_venv.sh)"}
    log = log_dir / f"run-{c.key}.log"
    with open(log, "a") as errors:
        child = subprocess.Popen([python, __file__, "_run", c.key, str(data), "--workers", str(workers)],
                                 stdout=subprocess.PIPE, stderr=errors, text=True, cwd=REPO)
        sampler = PeakRSS(child.pid)
        try:
            out, _ = child.communicate(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            out, _ = child.communicate()
        peak = sampler.stop()
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if not lines:
        tail = [line for line in log.read_text().splitlines() if line.strip()][-1:] or [f"exit {child.returncode}"]
        return {"status": "error", "note": f"{tail[0][:300]} (log: {log})"}
    return {**json.loads(lines[-1][len("RESULT "):]), "peak_rss": peak}


@dataclass
class Row:
    contender: Contender
    runs: list[dict]
    pack: dict | None

    @property
    def ok_runs(self) -> list[dict]:
        return [r for r in self.runs if r.get("status") == "ok"]

    @property
    def rates(self) -> list[float]:
        return [r["images"] / r["seconds"] for r in self.ok_runs]

    @property
    def rate(self) -> float | None:
        return statistics.median(self.rates) if self.rates else None

    @property
    def steady_rate(self) -> float | None:
        """After the first batch: start-up (worker fork, FFCV's JIT compile, buffer fill) left out."""
        rates = [(r["images"] - r["first_images"]) / (r["seconds"] - r["first_batch_s"]) for r in self.ok_runs
                 if r.get("first_batch_s") is not None and r["images"] > r["first_images"]]
        return statistics.median(rates) if rates else None

    @property
    def note(self) -> str:
        bad = [r for r in self.runs if r.get("status") != "ok"]
        return bad[-1].get("note", "") if bad else ""


# ---------------------------------------------------------------------------
# Report


def versions() -> dict[str, str]:
    found = {}
    for dist in ("torch", "torchvision", "numpy", "pillow-simd", "Pillow", "PyTurboJPEG", "webdataset",
                 "mosaicml-streaming", "litdata", "ffcv", "numba", "psutil", "matplotlib", "recpack"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if rev.returncode == 0:
        found["recpack"] = f"{found.get('recpack', '?')} (git {rev.stdout.strip()}, working tree)"
    if MXNET_PYTHON.exists():
        mx = subprocess.run([str(MXNET_PYTHON), "-c", "import mxnet, numpy; print(mxnet.__version__, numpy.__version__)"],
                            capture_output=True, text=True)
        if mx.returncode == 0:
            mxv, npv = mx.stdout.split()
            found["mxnet"] = f"{mxv} (own venv, numpy {npv})"
    deb = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libturbojpeg0"], capture_output=True, text=True)
    if deb.returncode == 0:
        found["libturbojpeg0 (Debian)"] = deb.stdout
    found["python"] = platform.python_version()
    return found


def machine() -> str:
    import psutil

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "?")
    return f"{CPUS} cores ({model}), {psutil.virtual_memory().total / 2**30:.1f} GiB RAM, {platform.platform()}"


def fmt(value, spec: str = ",.0f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def ratio_lines(rows: dict[str, Row]) -> list[str]:
    peers = [r for r in rows.values() if r.contender.kind == "peer" and r.rate]
    fastest = max(peers, key=lambda r: r.rate, default=None)
    bare = rows["bare_decode"].rate
    checks = []
    for key in ("recpack", "recpack_threads"):
        rec, label = rows[key].rate, rows[key].contender.label
        checks += [
            (f"{label} / fastest measured peer" + (f" ({fastest.contender.label})" if fastest else ""), 1.5,
             rec / fastest.rate if rec and fastest else None),
            (f"{label} / bare full-size decode on all cores", 0.85, rec / bare if rec and bare else None),
        ]
    ffcv, resized = rows["ffcv"].rate, rows["recpack_resized"].rate
    if ffcv:
        checks.append((f"recpack --resize {RESIZE} / FFCV (measured)", None, resized / ffcv if resized else None))
    elif FFCV_QUOTED_IMAGES_PER_S:
        checks.append((f"recpack --resize {RESIZE} / FFCV ({FFCV_QUOTED_IMAGES_PER_S:.0f} images/s, QUOTED, "
                       "not measured)", None, resized / FFCV_QUOTED_IMAGES_PER_S if resized else None))
    lines = ["| ratio | value | target | met |", "|---|---:|---:|:---:|"]
    for name, target, value in checks:
        met = "-" if value is None or target is None else ("yes" if value >= target else "NO")
        lines.append(f"| {name} | {fmt(value, '.2f')} | {fmt(target, '.2f')} | {met} |")
    return lines


def results_table(rows: dict[str, Row], images: int) -> list[str]:
    rec = rows["recpack"].rate
    lines = ["| contender | images/s (median) | per round | x recpack | after 1st batch | first batch s | MB/s "
             "| peak RSS MB | pack s | packed MB | output | notes |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for row in rows.values():
        runs, pack = row.ok_runs, row.pack or {}
        rate = row.rate
        note = row.note
        if row.contender.key == "ffcv" and not rate and FFCV_QUOTED_IMAGES_PER_S:
            note = f"QUOTED, not measured: {FFCV_QUOTED_IMAGES_PER_S:.0f} images/s (issue #4). {note}"
        nbytes = [r["nbytes"] for r in runs if r.get("nbytes")]
        mbs = statistics.median(n / r["seconds"] / 1e6 for n, r in zip(nbytes, runs)) if nbytes else None
        first = [r["first_batch_s"] for r in runs if r.get("first_batch_s") is not None]
        rss = max((r["peak_rss"] for r in runs), default=None)
        lines.append(" | ".join([
            f"| {row.contender.label}", fmt(rate), " / ".join(fmt(x) for x in row.rates) or "-",
            fmt(rate / rec if rate and rec else None, ".2f"), fmt(row.steady_rate),
            fmt(statistics.median(first) if first else None, ".1f"), fmt(mbs),
            fmt(rss / 2**20 if rss else None), fmt(pack.get("seconds"), ".1f"),
            fmt(pack["bytes"] / 1e6 if pack.get("bytes") else None), runs[0].get("shape") or "-" if runs else "-",
            "; ".join(n for n in (note, row.contender.note, pack.get("note", "")) if n).replace("|", "/") + " |",
        ]))
    return lines


def chart(rows: dict[str, Row], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"recpack": "#d62728", "peer": "#1f77b4", "ceiling": "#7f7f7f"}
    bars = [(r.contender.label, r.rate, colours[r.contender.kind], "") for r in rows.values()
            if r.rate and not r.contender.key.startswith("cat_")]
    if not rows["ffcv"].rate and FFCV_QUOTED_IMAGES_PER_S:
        bars.append(("FFCV (QUOTED, not measured)", FFCV_QUOTED_IMAGES_PER_S, "#1f77b4", "//"))
    bars.sort(key=lambda b: b[1])
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(bars) + 1.5))
    for i, (label, rate, colour, hatch) in enumerate(bars):
        ax.barh(i, rate, color="white" if hatch else colour, edgecolor=colour, hatch=hatch)
        ax.text(rate, i, f" {rate:,.0f}", va="center", fontsize=8)
    ax.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.set_xlabel("images/s (one shuffled epoch, RandomResizedCrop 224 + flip, uint8 batches of 256)")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, max(b[1] for b in bars) * 1.15)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=20_000, help="corpus size (default 20000)")
    p.add_argument("--quick", action="store_true", help="2,000 images (a smoke run)")
    p.add_argument("--rounds", type=int, default=3, help="epochs per contender; the median is reported (default 3)")
    p.add_argument("--workers", type=int, default=CPUS, help=f"loader workers for every contender (default {CPUS})")
    p.add_argument("--seed", type=int, default=0, help="corpus seed")
    p.add_argument("--only", default=None, help="comma-separated contender keys (default: all)")
    p.add_argument("--repack", action="store_true", help="rewrite the packed formats instead of reusing them")
    p.add_argument("--out", type=Path, default=RESULTS / "compare.md", help="markdown report (PNG beside it)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    images = 2_000 if args.quick else args.images
    chosen = [c for c in CONTENDERS if not args.only or c.key in args.only.split(",")]
    corpus = ensure_corpus(images, args.seed)
    work = WORK / f"compare-{images}-s{args.seed}"
    work.mkdir(parents=True, exist_ok=True)

    print(f"packing formats for {images} images (cached in {work}) ...", flush=True)
    packs = {key: ensure_packed(key, corpus, work, args.repack) for key in PACKERS
             if any(c.data == key for c in chosen)}
    data_of = {key: work / f"data-{key}" for key, p in packs.items() if p["status"] == "ok"} | {"corpus": corpus}
    prefault()  # a fresh VM backs memory lazily: see benchmarks/prefault.py
    warm_page_cache(list(data_of.values()))

    rows = {c.key: Row(c, [], packs.get(c.data) if c.data != "corpus" else None) for c in CONTENDERS}
    for key, row in rows.items():
        if row.contender not in chosen:
            row.runs.append({"status": "skipped", "note": "not selected (--only)"})
        elif row.contender.data not in data_of:
            row.runs.append({"status": "unavailable", "note": packs[row.contender.data]["note"]})
    runnable = [c for c in chosen if not rows[c.key].runs]
    for round_index in range(args.rounds):
        shift = round_index % max(len(runnable), 1)
        for c in runnable[shift:] + runnable[:shift]:
            if rows[c.key].runs and rows[c.key].runs[-1].get("status") == "unavailable":
                continue  # no point asking again
            result = measure(c, data_of[c.data], args.workers, work)
            rows[c.key].runs.append(result)
            rate = f"{result['images'] / result['seconds']:,.0f} images/s" if result["status"] == "ok" else \
                f"{result['status']}: {result.get('note', '')}"
            print(f"  round {round_index + 1}/{args.rounds} {c.label}: {rate}", flush=True)

    title = f"recpack read benchmark: {images:,} images, {args.workers} workers, {CPUS} cores"
    table, ratios = results_table(rows, images), ratio_lines(rows)
    print("\n".join(["", *table, "", *ratios]))
    report = [
        f"# {title}", "",
        f"- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"- machine: {machine()}",
        f"- corpus: {images:,} JPEGs ({listed_bytes(corpus, read_list(corpus / 'list.txt')) / 1e6:,.0f} MB), benchmarks/make_corpus.py --classes {CLASSES} "
        f"--seed {args.seed}",
        f"- job: one shuffled epoch, decode, RandomResizedCrop {SIZE} + horizontal flip, uint8 batches of {BATCH} "
        f"(N,3,{SIZE},{SIZE}), {args.workers} loader workers each; median of {args.rounds} rounds, contenders "
        "alternating within a round; every dataset read once beforehand (page cache warm for all)",
        "- peak RSS: summed over the contender's process tree (shared pages counted per process), sampled every 0.1 s",
        "- pack s / packed MB: one pack of the corpus in that format (cached between runs; the pack benchmark is "
        "benchmarks/bench_pack.py)",
        f"- command: `{' '.join(['python benchmarks/compare.py', *(argv if argv is not None else sys.argv[1:])])}`",
        "", "## Targets", "", *ratios, "", "## Results", "", *table, "",
        f"![chart]({args.out.with_suffix('.png').name})", "", "## Versions", "",
        *[f"- {name}: {version}" for name, version in versions().items()],
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
    if len(sys.argv) > 1 and sys.argv[1] == "_run":
        sys.exit(child_main(sys.argv[2], sys.argv[3], int(sys.argv[sys.argv.index("--workers") + 1])))
    if len(sys.argv) > 1 and sys.argv[1] == "_pack":
        sys.exit(pack_main(*sys.argv[2:5]))
    sys.exit(main())
