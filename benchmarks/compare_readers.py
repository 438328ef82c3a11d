"""The read benchmark's contenders, and what runs inside each one's child process: one epoch.

compare.py runs ``python compare_readers.py KEY DATA --workers N`` once per
contender and round; the child builds the contender's loader (imports and
dataset construction are not timed), times one epoch from there, and prints
one JSON line: images, seconds, the first batch's time and the batch shape.

Only the standard library is imported at module level: the MXNet contender
runs this file inside benchmarks/.venv-mxnet, which has neither recpack nor
torch; every reader imports its own library inside its function.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ceilings import cat_files, decode_on_all_cores
from compare_settings import BATCH, RESIZE, SIZE, pil_decode
from corpus_cache import read_list
from settings import CPUS, Unavailable

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


def decoding(base: type) -> type:
    """A subclass of ``base`` (a streaming dataset of {image bytes, label}) that yields decoded, transformed items."""
    transform = pil_train_transform()

    class Decoded(base):
        def __getitem__(self, index):
            sample = super().__getitem__(index)
            return transform(pil_decode(sample["image"])), sample["label"]

    return Decoded


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

    clean_stale_shared_memory()
    dataset = decoding(StreamingDataset)(local=str(path), shuffle=True, shuffle_seed=0, batch_size=BATCH)
    return DataLoader(dataset, batch_size=BATCH, num_workers=workers)


def read_litdata(path: Path, workers: int):
    """litdata's optimized chunks, read with its own StreamingDataLoader."""
    from litdata import StreamingDataLoader, StreamingDataset

    dataset = decoding(StreamingDataset)(str(path), shuffle=True, seed=0)
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
    "recpack": read_recpack, "recpack_resized": read_recpack, "recpack_threads": read_recpack_threads,
    "imagefolder_pil": read_imagefolder_pil, "imagefolder_tvio": read_imagefolder_tvio, "webdataset": read_webdataset, "streaming": read_streaming,
    "litdata": read_litdata, "mxnet": read_mxnet, "ffcv": read_ffcv,
}


# ---------------------------------------------------------------------------
# Ceilings: what the machine can do at all (ceilings.py)


def packed_count(path: Path) -> int:
    return json.loads((path / "recpack.json").read_text())["num_records"] if (path / "recpack.json").exists() \
        else sum(1 for _ in path.glob("*"))


def ceiling_bare_decode(corpus: Path, workers: int) -> dict:
    """Full-size libjpeg-turbo decode of every file on all cores (bytes pre-read): the decode-bound ceiling."""
    result = decode_on_all_cores([corpus / rel for rel, _ in read_list(corpus / "list.txt")], CPUS)
    return {"images": result["images"], "seconds": result["seconds"], "nbytes": None}


def ceiling_cat_packed(path: Path, workers: int) -> dict:
    seconds, nbytes = cat_files(sorted(path.glob("shard-*.rec")))
    return {"images": packed_count(path), "seconds": seconds, "nbytes": nbytes}


def ceiling_cat_source(corpus: Path, workers: int) -> dict:
    files = [corpus / rel for rel, _ in read_list(corpus / "list.txt")]
    seconds, nbytes = cat_files(files)
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


def main(key: str, path: str, workers: int) -> int:
    try:
        result = {"status": "ok", **run_epoch(key, Path(path), workers)}
    except Unavailable as error:
        result = {"status": "unavailable", "note": str(error)}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[sys.argv.index("--workers") + 1])))
