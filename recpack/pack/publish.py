"""What every pack does with finished shards, whichever order it read its sources in.

``ShardLedger`` records each finished shard as it arrives: its keys into the key index, a
resume note, and an fsync on a background thread so that the disk works while the workers
do.  ``publish`` then writes the report of bad inputs and, last, the manifest that makes
the folder a dataset.
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

from .._version import __version__
from ..errors import PackError
from ..format import keyindex
from ..format import manifest as mf
from . import resume
from .plan import SHUFFLE, PackOptions
from .writer import fsync_paths, write_dataset_index


@dataclass(frozen=True)
class PackResult:
    records: int
    shards: int
    skipped: int
    reencoded: int
    bytes_in: int  # input bytes read by this run
    bytes_out: int
    seconds: float
    resumed_shards: int
    processed: int  # inputs read and checked by this run (not those of resumed shards)


def shard_note(index: int, files: mf.ShardFiles, bad: list, label_width: int, has_masks: bool,
               reencoded: int, bytes_in: int) -> dict[str, Any]:
    """A finished shard, as its resume note keeps it (``bad``: (line, key, reason) rows)."""
    return {"index": index, "files": mf.shard_to_json(files), "bad": bad, "label_width": label_width,
            "has_masks": has_masks, "reencoded": reencoded, "bytes_in": bytes_in}


def shard_paths(out_dir: str, files: mf.ShardFiles) -> list[str]:
    return [os.path.join(out_dir, info.name) for info in files.files]


class ShardLedger:
    """Takes finished shards one by one: key index, resume note, background fsync.  A context manager."""

    def __init__(self, out_dir: str, fsync: bool, notes: dict[int, dict]):
        self.out_dir, self.fsync, self.notes = out_dir, fsync, notes
        self._env = None
        self._flusher = ThreadPoolExecutor(1, thread_name_prefix="recpack-fsync")
        self._flushed: list[Future] = []

    def __enter__(self) -> "ShardLedger":
        return self

    def add(self, note: dict[str, Any], keys: list[tuple[str, int, int]]) -> None:
        """Record one finished shard; ``keys``: (source key, record in shard, offset) of its records."""
        files = mf.shard_from_json(note["files"])
        with writing(self.out_dir):
            self._env = self._env or keyindex.open_for_writing(self.out_dir)  # opened late: after the workers fork
            keyindex.add(self._env, note["index"], keys, (files.rec.bytes, files.rec.crc32c))
            resume.note_done(self.out_dir, files.stem, note)
        self.notes[note["index"]] = note
        if self.fsync:
            self._flushed.append(self._flusher.submit(fsync_paths, shard_paths(self.out_dir, files)))

    def __exit__(self, kind, value, traceback) -> None:
        with writing(self.out_dir):
            try:
                if self._env is not None:
                    keyindex.close_for_writing(self._env, durable=self.fsync)
            finally:
                self._flusher.shutdown(wait=True)
            if kind is None:
                for future in self._flushed:
                    future.result()


@contextlib.contextmanager
def writing(out_dir: str) -> Iterator[None]:
    """The output side failing (a full disk, an I/O error) as one PackError naming the file and the way on."""
    try:
        yield
    except OSError as error:
        raise PackError(f"{error.filename or out_dir}: cannot write ({error.strerror or error}); "
                        "the shards finished so far are kept: fix this and rerun the same command") from None


def _write_report(out_dir: str, rows: list) -> int:
    rows = sorted(tuple(row) for row in rows)
    with open(os.path.join(out_dir, mf.REPORT_NAME), "w", encoding="utf-8") as handle:
        handle.write("line\tpath\treason\n")
        handle.writelines(f"{line}\t{key}\t{reason}\n" for line, key, reason in rows)
    return len(rows)


def publish(out_dir: str, notes: dict[int, dict], options: PackOptions, source: dict[str, Any],
            classes: tuple[str, ...] | None, started: float, resumed: int, processed: int, bytes_read: int,
            extra_bad: list = ()) -> PackResult:
    """Write the report and, last, the manifest.  ``source`` holds its description and root.

    ``extra_bad`` are bad inputs no shard's note holds (a pack that read in disk order
    met them before it knew their shard).
    """
    with writing(out_dir):
        return _publish(out_dir, notes, options, source, classes, started, resumed, processed, bytes_read, extra_bad)


def _publish(out_dir: str, notes: dict[int, dict], options: PackOptions, source: dict[str, Any],
             classes: tuple[str, ...] | None, started: float, resumed: int, processed: int, bytes_read: int,
             extra_bad: list) -> PackResult:
    ordered = [notes[index] for index in range(options.shards)]
    skipped = _write_report(out_dir, [row for note in ordered for row in note["bad"]] + list(extra_bad))
    shards = tuple(mf.shard_from_json(note["files"]) for note in ordered)
    report = os.path.join(out_dir, mf.REPORT_NAME)
    if sum(shard.records for shard in shards) == 0:
        raise PackError(f"{source['description']}: no usable image (see {report})")
    dataset_index = write_dataset_index(out_dir, shards)  # DALI's one index over all shards
    if options.fsync:  # shards kept from an interrupted run, the report, the dataset index, and the folder
        fsync_paths([path for shard in shards for path in shard_paths(out_dir, shard)] + [report, dataset_index])
    reencoded = sum(note["reencoded"] for note in ordered)
    created = {
        "source": source["description"],
        "root": source["root"],
        "seed": options.seed,
        "shuffle": SHUFFLE,
        "shards": options.shards,
        "check": options.prepare.check,
        "resize": options.prepare.resize,
        "quality": options.prepare.quality,
        "skipped": skipped,
        "reencoded": reencoded,
        "recpack_version": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    manifest = mf.Manifest(shards, max(note["label_width"] for note in ordered),
                           any(note["has_masks"] for note in ordered), classes, created)
    mf.save(out_dir, manifest, durable=options.fsync)
    resume.finish(out_dir)
    return PackResult(manifest.num_records, manifest.num_shards, skipped, reencoded, bytes_read,
                      sum(shard.rec.bytes for shard in shards), time.monotonic() - started, resumed, processed)
