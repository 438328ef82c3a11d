"""What bench_pack.py runs in its child processes: the ceilings and the peer writers.

Each entry point is one subprocess, so that a contender's imports, memory and
timing are its own; each prints one JSON line with the seconds of its timed
span.  Only the standard library is imported at module level: this file also
runs inside benchmarks/.venv-mxnet (the MXNet peer), which has none of our
packages, and the peers import their own library inside their function.

    python pack_children.py _cat LIST
    python pack_children.py _decode LIST {1|8|resize} WORKERS
    python pack_children.py _peer LIST NAME OUT
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ceilings import cat_files, decode_on_all_cores, turbojpeg_decode
from corpus_cache import read_list
from settings import CPUS

RESIZE = 256  # recpack --resize (shorter side) and FFCV's max_resolution (longer side)
RECPACK_QUALITY = 95  # recpack pack's --quality default (`recpack pack --help`): what --resize re-encodes at
FFCV_JPEG_QUALITY = 90  # RGBImageField's default
FFCV_QUOTED_IMAGES_PER_S = 320.0  # quoted in the issue for this machine: the fallback when FFCV is not importable


def bare_resize():
    """decode + resize + encode as --resize RESIZE needs them, and nothing else: the --resize ceiling.

    The library calls recpack makes, alone: for YCbCr JPEGs (nearly all) one
    ``_libjpeg.shrink`` (decode to planes at the smallest of the SIMD DCT
    scales 1/8, 1/4, 1/2, 1 that leaves the shorter side >= RESIZE, shrink
    the planes, encode them at RECPACK_QUALITY, 4:2:0); for the rest
    ``decode_whole``, pillow-simd's bilinear resize and ``encode``.  Images
    already that small are only decoded (a packer stores them as they are,
    after its decode check).
    """
    from PIL import Image
    from recpack.jpeg._libjpeg import decode_whole, encode, shrink
    from turbojpeg import TurboJPEG

    jpeg = TurboJPEG()

    def run(blob: bytes) -> None:
        width, height, _, _ = jpeg.decode_header(blob)
        shorter = min(width, height)
        eighths = next((m for m in (1, 2, 4) if shorter * m >= RESIZE * 8), 8)
        if shorter <= RESIZE:
            decode_whole(blob, eighths)
            return
        width, height = -(-width * eighths // 8), -(-height * eighths // 8)
        scale = RESIZE / min(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if shrink(blob, eighths, *size, RECPACK_QUALITY) is None:
            pixels, width, height = decode_whole(blob, eighths)
            image = Image.frombuffer("RGBX", (width, height), pixels, "raw", "RGBX", 0, 1)
            image = image.resize(size, Image.Resampling.BILINEAR)
            encode(image.tobytes(), image.width, image.height, 4, RECPACK_QUALITY)

    return run


def _paths(list_file: str) -> list[Path]:
    root = Path(list_file).parent
    return [root / path for path, _ in read_list(Path(list_file))]


def child_cat(list_file: str) -> None:
    """cat of every listed file, timed around the xargs + cat processes alone."""
    seconds, nbytes = cat_files(_paths(list_file))
    print(json.dumps({"seconds": seconds, "bytes": nbytes}))


def child_decode(list_file: str, mode: str, workers: str) -> None:
    """Decode (mode: the scale's denominator) or decode-resize-encode ("resize") every file on N processes.

    Timed from the barrier to the last finish.
    """
    make_work = bare_resize if mode == "resize" else (lambda: turbojpeg_decode(int(mode)))
    print(json.dumps(decode_on_all_cores(_paths(list_file), int(workers), make_work)))


def _read(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def peer_mxnet(items, root: Path, out: Path) -> None:
    """The write calls im2rec --pass-through makes: IRHeader(label) + the original bytes, indexed .rec/.idx.

    Only those calls: none of the tool's list parsing, queue, prints or its
    cv2 import (the peer_im2rec row runs the tool itself).
    """
    import mxnet as mx

    record = mx.recordio.MXIndexedRecordIO(str(out / "data.idx"), str(out / "data.rec"), "w")
    for i, (path, label) in enumerate(items):
        header = mx.recordio.IRHeader(0, float(label), i, 0)
        record.write_idx(i, mx.recordio.pack(header, _read(root / path)))
    record.close()


def peer_tfrecord(items, root: Path, out: Path) -> None:
    """tf.train.Example-style record: image bytes + int64 label, one file."""
    from tfrecord import TFRecordWriter

    writer = TFRecordWriter(str(out / "data.tfrecord"))
    for path, label in items:
        writer.write({"image": (_read(root / path), "byte"), "label": (label, "int")})
    writer.close()


def peer_lmdb(items, root: Path, out: Path) -> None:
    """Raw bytes under an 8-digit key, one write transaction per 1000 images (lmdb defaults: sync on commit)."""
    import lmdb

    total = sum((root / p).stat().st_size for p, _ in items)
    env = lmdb.open(str(out), map_size=2 * total + (256 << 20))
    for start in range(0, len(items), 1000):
        with env.begin(write=True) as txn:
            for i in range(start, min(start + 1000, len(items))):
                path, _ = items[i]
                txn.put(b"%08d" % i, _read(root / path))
    with env.begin(write=True) as txn:
        txn.put(b"__labels__", json.dumps([label for _, label in items]).encode())
    env.close()


def peer_webdataset(items, root: Path, out: Path) -> None:
    """Tar shards of 10,000 samples: key.jpg (original bytes) + key.cls."""
    import webdataset as wds

    with wds.ShardWriter(str(out / "shard-%06d.tar"), maxcount=10000, verbose=0) as sink:
        for i, (path, label) in enumerate(items):
            sink.write({"__key__": f"{i:08d}", "jpg": _read(root / path), "cls": label})


class _LitDataSample:
    """Picklable per-item function for litdata.optimize: returns the original bytes + label."""

    def __init__(self, root: Path):
        self.root = root

    def __call__(self, item):
        path, label = item
        return {"image": _read(self.root / path), "label": label}


def peer_litdata(items, root: Path, out: Path) -> None:
    """litdata.optimize with its documented multi-worker default (num_workers = all cores)."""
    from litdata import optimize

    optimize(fn=_LitDataSample(root), inputs=list(items), output_dir=str(out), chunk_bytes="64MB",
             num_workers=CPUS, mode="overwrite")


def peer_streaming(items, root: Path, out: Path) -> None:
    """MDSWriter as its docs show: a bytes image column (the original bytes) and an int label.

    Its defaults otherwise: 64 MiB shards, no compression, no hashes.
    """
    from streaming import MDSWriter

    with MDSWriter(out=str(out), columns={"image": "bytes", "label": "int"}) as sink:
        for path, label in items:
            sink.write({"image": _read(root / path), "label": label})


class _FFCVImages:
    """The indexable dataset FFCV's DatasetWriter wants: (PIL RGB image, label) per corpus file.

    A module-level class so that its workers get it however they are started.
    """

    def __init__(self, items, root: Path):
        self.items, self.root = items, root

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        from PIL import Image

        path, label = self.items[index]
        with Image.open(self.root / path) as image:
            return image.convert("RGB"), label


def peer_ffcv(items, root: Path, out: Path) -> None:
    """DatasetWriter on all cores: every image decoded, capped at RESIZE on its longer side, re-encoded as JPEG."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    fields = {"image": RGBImageField(write_mode="jpg", max_resolution=RESIZE, jpeg_quality=FFCV_JPEG_QUALITY),
              "label": IntField()}
    DatasetWriter(str(out / "data.beton"), fields, num_workers=CPUS).from_indexed_dataset(_FFCVImages(items, root))


PEERS = {"mxnet": peer_mxnet, "tfrecord": peer_tfrecord, "lmdb": peer_lmdb,
         "webdataset": peer_webdataset, "litdata": peer_litdata, "streaming": peer_streaming, "ffcv": peer_ffcv}
# What each peer imports before its timed span (default: the module named like the peer)
PEER_IMPORTS = {"ffcv": ("ffcv.writer", "ffcv.fields", "PIL.Image")}


def child_peer(list_file: str, name: str, out: str) -> None:
    import importlib

    writer = PEERS[name]
    items = read_list(Path(list_file))
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for module in PEER_IMPORTS.get(name, (name,)):
        importlib.import_module(module)  # outside the timed span, as for every peer
    start = time.perf_counter()
    writer(items, Path(list_file).parent, out_dir)
    print(json.dumps({"seconds": time.perf_counter() - start, "images": len(items)}))


if __name__ == "__main__":
    entry = {"_cat": child_cat, "_decode": child_decode, "_peer": child_peer}.get(sys.argv[1] if len(sys.argv) > 1 else "")
    if entry is None:
        sys.exit(__doc__)
    entry(*sys.argv[2:])
