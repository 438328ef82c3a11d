"""Packing for compare.py (and bench_read.py): each format written once per corpus, timed, and cached.

Each packer runs in a child process (``compare_packers.py KEY CORPUS OUT``),
so its imports and memory stay out of the measuring process; it is timed as
that whole process.  The packed folders and their times are kept in
benchmarks/.work/compare-N-sS/ for later runs.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
from pathlib import Path

from compare_settings import RESIZE, SHARDS, pil_decode
from corpus_cache import read_list
from harness import dir_bytes, run_child
from settings import CPUS, REPO, RUN_TIMEOUT_S, WORK, Unavailable


def work_folder(images: int, seed: int) -> Path:
    """Where the formats packed from one corpus are kept."""
    return WORK / f"compare-{images}-s{seed}"


def shuffled_items(corpus: Path) -> list[tuple[Path, int]]:
    """Peers' writers get the list shuffled once, as recpack shuffles it: their readers shuffle only locally."""
    items = [(corpus / rel, label) for rel, label in read_list(corpus / "list.txt")]
    random.Random(0).shuffle(items)
    return items


def pack_webdataset(corpus: Path, out: Path) -> None:
    import webdataset as wds

    items = shuffled_items(corpus)
    with wds.ShardWriter(str(out / "shard-%05d.tar"), maxcount=math.ceil(len(items) / SHARDS), verbose=0) as sink:
        for index, (path, label) in enumerate(items):
            sink.write({"__key__": f"{index:08d}", "jpg": path.read_bytes(), "cls": label})


def pack_streaming(corpus: Path, out: Path) -> None:
    from streaming import MDSWriter

    items = shuffled_items(corpus)
    shard_bytes = math.ceil(sum(p.stat().st_size for p, _ in items) / SHARDS * 1.05)
    with MDSWriter(out=str(out), columns={"image": "bytes", "label": "int"}, size_limit=shard_bytes) as sink:
        for path, label in items:
            sink.write({"image": path.read_bytes(), "label": label})


def _litdata_sample(item: tuple[str, int]) -> dict:
    path, label = item
    return {"image": Path(path).read_bytes(), "label": label}


def pack_litdata(corpus: Path, out: Path) -> None:
    import litdata

    items = [(str(p), label) for p, label in shuffled_items(corpus)]
    shard_bytes = math.ceil(sum(Path(p).stat().st_size for p, _ in items) / SHARDS * 1.05)
    litdata.optimize(fn=_litdata_sample, inputs=items, output_dir=str(out), chunk_bytes=shard_bytes,
                     num_workers=CPUS)


def pack_ffcv(corpus: Path, out: Path) -> None:
    try:
        from ffcv.fields import IntField, RGBImageField
        from ffcv.writer import DatasetWriter
    except ImportError as error:
        raise Unavailable(f"ffcv not importable ({error})") from None

    items = shuffled_items(corpus)

    class Images:
        def __len__(self):
            return len(items)

        def __getitem__(self, index):
            path, label = items[index]
            return pil_decode(path.read_bytes()), label

    fields = {"image": RGBImageField(write_mode="jpg", max_resolution=RESIZE), "label": IntField()}
    DatasetWriter(str(out / "data.beton"), fields, num_workers=CPUS).from_indexed_dataset(Images())


def recpack_cmd(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "recpack", "pack", str(corpus / "list.txt"), str(out), "--shards", str(SHARDS),
            "--overwrite", "--quiet", *extra]


# key -> (how it is written, note for the table)
PACKERS = {
    "recpack": (lambda c, o: recpack_cmd(c, o), f"recpack pack --shards {SHARDS}, {CPUS} workers"),
    "recpack_resized": (lambda c, o: recpack_cmd(c, o, "--resize", str(RESIZE)),
                        f"recpack pack --shards {SHARDS} --resize {RESIZE}, {CPUS} workers"),
    "webdataset": (pack_webdataset, f"wds.ShardWriter, {SHARDS} tars, 1 process"),
    "streaming": (pack_streaming, f"MDSWriter bytes column, ~{SHARDS} shards, 1 process"),
    "litdata": (pack_litdata, f"litdata.optimize, ~{SHARDS} chunks, {CPUS} workers"),
    "ffcv": (pack_ffcv, f"DatasetWriter jpg, max_resolution {RESIZE}, {CPUS} workers"),
}


def ensure_packed(key: str, corpus: Path, work: Path, repack: bool) -> dict:
    """Pack once (timed in a child process); later runs reuse the folder and the recorded time."""
    out, record_file = work / f"data-{key}", work / "packs.json"
    records = json.loads(record_file.read_text()) if record_file.exists() else {}
    if key in records and out.exists() and not repack:
        return records[key]
    shutil.rmtree(out, ignore_errors=True)
    make, note = PACKERS[key]
    if key.startswith("recpack"):
        cmd = make(corpus, out)
    else:
        if key != "streaming":  # MDSWriter insists on creating its folder itself
            out.mkdir(parents=True)
        cmd = [sys.executable, __file__, key, str(corpus), str(out)]
    print(f"  packing {key} ...", flush=True)
    done = run_child(cmd, work / f"pack-{key}", cwd=REPO, timeout=RUN_TIMEOUT_S)
    if not done.ok:
        shutil.rmtree(out, ignore_errors=True)
        return {"status": "failed", "note": f"packing failed: {done.error_tail()}"}
    records[key] = {"status": "ok", "seconds": done.wall, "bytes": dir_bytes(out), "note": note}
    record_file.write_text(json.dumps(records, indent=1))
    return records[key]


def main(key: str, corpus: str, out: str) -> int:
    try:
        PACKERS[key][0](Path(corpus), Path(out))
    except Unavailable as error:
        print(error, file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
