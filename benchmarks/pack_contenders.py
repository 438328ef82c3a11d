"""bench_pack.py's contenders: what each one runs, how it is timed, and why it may not run here.

Each contender is one command, run as its own subprocess (harness.run_child):
recpack's CLI, a ceiling or a peer writer from pack_children.py, or MXNet's
im2rec.py as its wheel ships it.  ``--only KEY,KEY`` picks them by key.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from corpus_cache import Corpus
from pack_children import (
    FFCV_JPEG_QUALITY,
    FFCV_QUOTED_IMAGES_PER_S,
    RECPACK_QUALITY,
    RESIZE,
)
from settings import CPUS, HERE, MXNET_PYTHON

RECPACK = Path(sys.executable).parent / "recpack"
PEER_TIMED = "first open to writer closed"


@dataclass
class Sample:
    seconds: float  # the contender's timed span (see bench_pack.py's docstring)
    wall: float  # the whole subprocess, start to exit
    peak_rss: int  # peak summed RSS of the process tree, sampled at 10 Hz
    peak_pss: int  # peak summed PSS of the process tree, sampled at 10 Hz
    max_rss: int  # ru_maxrss from wait4: the largest single process in the tree
    out_bytes: int


@dataclass
class Ctx:
    corpus: Corpus
    shards: int
    workers: int
    out_root: Path

    def out(self, key: str) -> Path:
        return self.out_root / key


Command = Callable[[Ctx, str], tuple[list[str], "Path | None"]]  # (ctx, key) -> (command, output folder)


@dataclass
class Contender:
    key: str
    label: str
    group: str  # "recpack" | "ceiling" | "peer" (writes the same bytes) | "resize peer" (re-encodes: FFCV)
    timed: str
    command: Command
    skip: str | None = None  # why it does not run here
    samples: list[Sample] = field(default_factory=list)


def recpack(*extra: str) -> Command:
    def command(ctx: Ctx, key: str):
        out = ctx.out(key)
        return [str(RECPACK), "pack", str(ctx.corpus.list_file), str(out), "--shards", str(ctx.shards),
                "--workers", str(ctx.workers), "--quiet", *extra], out

    return command


def child(entry: str, *args: str, python: str | Path = sys.executable, workers: bool = False,
          writes: bool = False) -> Command:
    """One of pack_children.py's entry points under ``python``: ``entry LIST *args [WORKERS] [OUT]``."""

    def command(ctx: Ctx, key: str):
        out = ctx.out(key) if writes else None
        return [str(python), str(HERE / "pack_children.py"), entry, str(ctx.corpus.list_file), *args,
                *([str(ctx.workers)] if workers else []), *([str(out)] if out else [])], out

    return command


def peer(name: str, python: str | Path = sys.executable) -> Command:
    return child("_peer", name, python=python, writes=True)


def write_ceiling(ctx: Ctx, key: str):
    """As many bytes as the corpus, written the way recpack writes shards (O_DIRECT, 4 MiB) and fsynced."""
    out = ctx.out(key)
    out.mkdir(parents=True, exist_ok=True)
    blocks = -(-ctx.corpus.total_bytes // 2**22)
    return ["dd", "if=/dev/zero", f"of={out / 'zeros'}", "bs=4M", f"count={blocks}", "oflag=direct", "conv=fsync",
            "status=none"], out


def im2rec_script() -> Path | None:
    """MXNet's im2rec.py as its wheel ships it (mxnet/tools/), inside the MXNet venv."""
    found = sorted((MXNET_PYTHON.parent.parent / "lib").glob("python3*/site-packages/mxnet/tools/im2rec.py"))
    return found[0] if found else None


def im2rec(ctx: Ctx, key: str):
    """``im2rec.py PREFIX ROOT --pass-through``, timed as a whole process.

    Its .lst (im2rec's own list format: index, float label, relative path, in
    the corpus list's order) goes into the output folder now, untimed (before
    run_child's sync): im2rec reads PREFIX.lst and writes PREFIX.rec/.idx beside it.
    """
    out = ctx.out(key)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data.lst").write_text("".join(f"{i}\t{float(label):f}\t{path}\n"
                                          for i, (path, label) in enumerate(ctx.corpus.items)))
    return [str(MXNET_PYTHON), str(im2rec_script()), str(out / "data"), str(ctx.corpus.root), "--pass-through"], out


def importable(module: str, python: str | Path | None = None) -> bool:
    """Whether ``module`` can be found here, or by another interpreter (the MXNet venv's)."""
    if python is None:
        return importlib.util.find_spec(module) is not None
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


def mxnet_skip(im2rec_too: bool = False) -> str | None:
    """Why MXNet (and, with ``im2rec_too``, its im2rec.py) cannot run here, or None."""
    if not MXNET_PYTHON.exists():
        return "no benchmarks/.venv-mxnet (tools/setup_mxnet_venv.sh)"
    if im2rec_too and im2rec_script() is None:
        return "no mxnet/tools/im2rec.py in benchmarks/.venv-mxnet"
    if im2rec_too and not importable("cv2", MXNET_PYTHON):
        return "im2rec.py imports cv2: no opencv-python-headless in benchmarks/.venv-mxnet (tools/setup_mxnet_venv.sh)"
    return None


def contenders() -> list[Contender]:
    def missing(module: str, why: str) -> str | None:
        return None if importable(module) else why

    no_turbojpeg = missing("turbojpeg", "PyTurboJPEG not installed")
    decode_only = "decode only (files pre-read)"
    return [
        Contender("recpack_default", "recpack --check decode (default)", "recpack", "whole CLI", recpack()),
        Contender("recpack_header", "recpack --check header", "recpack", "whole CLI", recpack("--check", "header")),
        Contender("recpack_header_nofsync", "recpack --check header --no-fsync", "recpack", "whole CLI",
                  recpack("--check", "header", "--no-fsync")),
        Contender("recpack_resize", f"recpack --resize {RESIZE} (shorter side, quality {RECPACK_QUALITY})", "recpack",
                  "whole CLI", recpack("--resize", str(RESIZE))),
        Contender("cat", "cat all files > /dev/null", "ceiling", "xargs + cat", child("_cat")),
        Contender("write_dd", "dd as many bytes to a file, O_DIRECT 4 MiB writes + fsync (write ceiling)", "ceiling",
                  "whole dd", write_ceiling),
        Contender("decode_1_8", f"libjpeg-turbo decode 1/8 scale, {CPUS} procs", "ceiling", decode_only,
                  child("_decode", "8", workers=True), no_turbojpeg),
        Contender("decode_full", f"libjpeg-turbo decode full scale, {CPUS} procs", "ceiling", decode_only,
                  child("_decode", "1", workers=True), no_turbojpeg),
        Contender("resize_bare", f"recpack's decode + resize {RESIZE} + encode calls (_libjpeg.shrink) at "
                  f"q{RECPACK_QUALITY}, {CPUS} procs (ceiling for --resize)", "ceiling",
                  "library calls only (files pre-read)", child("_decode", "resize", workers=True), no_turbojpeg),
        Contender("peer_mxnet", "MXNet MXIndexedRecordIO minimal loop (im2rec's write calls), 1 proc", "peer",
                  PEER_TIMED, peer("mxnet", MXNET_PYTHON), mxnet_skip()),
        Contender("peer_im2rec", "MXNet im2rec.py --pass-through (the tool as shipped), 1 proc", "peer",
                  "whole process (incl. imports of mxnet, cv2)", im2rec, mxnet_skip(im2rec_too=True)),
        Contender("peer_tfrecord", "tfrecord TFRecordWriter, 1 proc", "peer", PEER_TIMED, peer("tfrecord"),
                  missing("tfrecord", "pip install tfrecord")),
        Contender("peer_lmdb", "LMDB put, 1 txn / 1000, 1 proc", "peer", PEER_TIMED, peer("lmdb"),
                  missing("lmdb", "pip install lmdb")),
        Contender("peer_webdataset", "WebDataset ShardWriter maxcount 10000, 1 proc", "peer", PEER_TIMED,
                  peer("webdataset"), missing("webdataset", "pip install webdataset")),
        Contender("peer_litdata", f"LitData optimize, {CPUS} workers", "peer", PEER_TIMED, peer("litdata"),
                  missing("litdata", "pip install --no-deps litdata (+ deps, keeps torch)")),
        Contender("peer_streaming", "MosaicML Streaming MDSWriter (bytes + int columns), 1 proc", "peer", PEER_TIMED,
                  peer("streaming"),
                  missing("streaming", "streaming not importable (tools/setup_bench_venv.sh installs it)")),
        Contender("peer_ffcv", f"FFCV DatasetWriter, RGBImageField jpg max_resolution {RESIZE} (LONGER side), "
                  f"quality {FFCV_JPEG_QUALITY}, {CPUS} workers", "resize peer", PEER_TIMED, peer("ffcv"),
                  missing("ffcv", f"ffcv not importable (tools/setup_bench_venv.sh); the resize target uses the "
                          f"issue's quoted {FFCV_QUOTED_IMAGES_PER_S:.0f} images/s instead")),
    ]
