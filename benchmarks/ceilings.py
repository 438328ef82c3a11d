"""What the machine can do at all, measured one way for every benchmark: reading files, decoding JPEGs.

* ``cat_files``: ``cat`` of the files to /dev/null (through ``xargs``), the
  read ceiling; also how the benchmarks warm the page cache, untimed.
* ``decode_on_all_cores``: N processes each read their share of the files
  into memory, wait on a barrier, then run a per-image function (a
  libjpeg-turbo decode, or recpack's --resize calls); the span runs from the
  earliest start to the last finish, so process start, imports and file
  reads are not in it.

Standard library only at module level: the read benchmark's child processes
import it, one of them inside benchmarks/.venv-mxnet.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

Work = Callable[[bytes], object]  # what is done to one image's bytes


def cat_files(files: Iterable[Path | str]) -> tuple[float, int]:
    """(seconds, bytes) of ``cat`` of every file to /dev/null."""
    files = [str(f) for f in files]
    start = time.perf_counter()
    subprocess.run(["xargs", "-0", "cat"], input="\0".join(files).encode(), stdout=subprocess.DEVNULL, check=True)
    seconds = time.perf_counter() - start
    return seconds, sum(Path(f).stat().st_size for f in files)


def warm(paths: Iterable[Path]) -> None:
    """Read every file (and every file below every folder) once, so that contenders start from the page cache."""
    files: list[Path] = []
    for path in paths:
        files += sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    cat_files(files)


def turbojpeg_decode(denominator: int = 1) -> Work:
    """PyTurboJPEG's decode at scale 1/``denominator`` (BGR, 8 bits): the decode every packer or loader must at least do."""
    from turbojpeg import TurboJPEG

    jpeg = TurboJPEG()
    if denominator == 1:
        return jpeg.decode
    return lambda blob: jpeg.decode(blob, scaling_factor=(1, denominator))


def _worker(paths: list[Path], make_work: Callable[[], Work], barrier, queue) -> None:
    work = make_work()
    blobs = [Path(path).read_bytes() for path in paths]  # before the clock starts
    barrier.wait()
    start, failures = time.perf_counter(), 0
    for blob in blobs:
        try:
            work(blob)
        except Exception:  # noqa: BLE001  (counted, as a packer would skip the file)
            failures += 1
    queue.put((start, time.perf_counter(), len(blobs), failures))


def decode_on_all_cores(paths: list[Path], procs: int, make_work: Callable[[], Work] = turbojpeg_decode) -> dict:
    """``make_work()``'s function over every file, on ``procs`` forked processes: {seconds, images, failures}."""
    import multiprocessing as mp

    context = mp.get_context("fork")  # make_work may be a closure: fork passes it without pickling
    barrier, queue = context.Barrier(procs), context.Queue()
    children = [context.Process(target=_worker, args=(paths[i::procs], make_work, barrier, queue))
                for i in range(procs)]
    for child in children:
        child.start()
    results = [queue.get() for _ in children]
    for child in children:
        child.join()
    return {"seconds": max(r[1] for r in results) - min(r[0] for r in results),
            "images": sum(r[2] for r in results), "failures": sum(r[3] for r in results)}
