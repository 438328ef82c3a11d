"""The dataset folder and its manifest, ``recpack.json``: read, validate, write atomically.

A packed dataset is one folder::

    recpack.json         this manifest, written last: its presence means "complete"
    shard-00000.rec      \\
    shard-00000.idx       > one shard (see ``format``); as many as the manifest lists
    shard-00000.rpi      /
    keys.lmdb/           source key -> (shard, record, offset), for ``recpack get`` (an import has none)
    bad_inputs.tsv       inputs that were skipped, with the reason (may be empty)
    .recpack-pack/       only while a pack runs (or after it was interrupted)

The manifest holds only what is per dataset or per shard (a few hundred bytes
a shard): format version, record count, per shard its files with byte sizes
and CRC32C checksums, class names, how the data was made, and room for
statistics.  Per-record data (offsets, lengths, checksums) lives in each
shard's ``.rpi`` so that opening a 14M-record dataset stays cheap.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import IncompleteDatasetError, ManifestError
from .writer import FileInfo, ShardFiles

MANIFEST_NAME = "recpack.json"
KEY_INDEX_NAME = "keys.lmdb"
REPORT_NAME = "bad_inputs.tsv"
WORK_DIR_NAME = ".recpack-pack"  # a pack's notes while it runs; gone once the manifest is written
FORMAT_NAME = "recpack"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    shards: tuple[ShardFiles, ...]
    label_width: int = 1  # the most labels any record carries
    has_masks: bool = False
    classes: tuple[str, ...] | None = None
    created: dict[str, Any] = field(default_factory=dict)  # source, seed, options, version, date
    stats: dict[str, Any] | None = None

    @property
    def num_records(self) -> int:
        return sum(shard.records for shard in self.shards)

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    def shard_starts(self) -> list[int]:
        """Global key of each shard's first record (records are numbered across shards)."""
        starts, total = [], 0
        for shard in self.shards:
            starts.append(total)
            total += shard.records
        return starts


def _file_to_json(info: FileInfo) -> dict[str, Any]:
    return {"name": info.name, "bytes": info.bytes, "crc32c": f"{info.crc32c:08x}"}


def to_json(manifest: Manifest) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "num_records": manifest.num_records,
        "num_shards": manifest.num_shards,
        "label_width": manifest.label_width,
        "has_masks": manifest.has_masks,
        "classes": list(manifest.classes) if manifest.classes is not None else None,
        "shards": [
            {
                "name": shard.stem,
                "records": shard.records,
                "bytes": shard.rec.bytes,
                "files": {kind: _file_to_json(getattr(shard, kind)) for kind in ("rec", "idx", "rpi")},
            }
            for shard in manifest.shards
        ],
        "created": manifest.created,
        "stats": manifest.stats,
    }


def _file_from_json(data: dict[str, Any]) -> FileInfo:
    return FileInfo(str(data["name"]), int(data["bytes"]), int(data["crc32c"], 16))


def from_json(data: dict[str, Any], where: str) -> Manifest:
    """Validate and convert parsed JSON; ``where`` names the file in error messages."""
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise ManifestError(f"{where}: not a recpack manifest")
    if data.get("version") != FORMAT_VERSION:
        raise ManifestError(f"{where}: format version {data.get('version')} is not supported (this recpack reads {FORMAT_VERSION})")
    try:
        shards = tuple(
            ShardFiles(
                str(entry["name"]),
                int(entry["records"]),
                *(_file_from_json(entry["files"][kind]) for kind in ("rec", "idx", "rpi")),
            )
            for entry in data["shards"]
        )
        manifest = Manifest(
            shards,
            int(data.get("label_width", 1)),
            bool(data.get("has_masks", False)),
            tuple(data["classes"]) if data.get("classes") is not None else None,
            dict(data.get("created") or {}),
            data.get("stats"),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ManifestError(f"{where}: malformed ({type(error).__name__}: {error})") from None
    if manifest.num_records != data.get("num_records") or manifest.num_shards != data.get("num_shards"):
        raise ManifestError(f"{where}: record or shard counts disagree with the shard list")
    return manifest


def load(dataset_dir: str) -> Manifest:
    """The manifest of a complete dataset, or a clear error saying why there is none."""
    path = os.path.join(dataset_dir, MANIFEST_NAME)
    if not os.path.isdir(dataset_dir):
        raise IncompleteDatasetError(f"{dataset_dir}: no such dataset folder")
    if not os.path.exists(path):
        names = os.listdir(dataset_dir)
        if WORK_DIR_NAME in names or any(name.endswith((".rec", ".rec.tmp")) for name in names):
            raise IncompleteDatasetError(
                f"{dataset_dir}: incomplete dataset (no {MANIFEST_NAME}: a pack was interrupted or failed; "
                "run the pack again once the cause is fixed: it keeps finished shards, or starts clean if the list changed)"
            )
        raise IncompleteDatasetError(f"{dataset_dir}: not a recpack dataset (no {MANIFEST_NAME})")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as error:
        raise ManifestError(f"{path}: unreadable ({error})") from None
    return from_json(data, path)


def write_json_atomic(path: str, data: Any, durable: bool = True) -> None:
    """Write JSON under a temporary name, then rename: readers see old or new, never half.

    ``durable`` also fsyncs the file and its folder, so that it survives a power cut.
    """
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
        handle.write("\n")
        handle.flush()
        if durable:
            os.fsync(handle.fileno())
    os.replace(temporary, path)
    if durable:
        directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def save(dataset_dir: str, manifest: Manifest, durable: bool = True) -> None:
    write_json_atomic(os.path.join(dataset_dir, MANIFEST_NAME), to_json(manifest), durable)


def shard_files_to_json(files: ShardFiles) -> dict[str, Any]:
    """A finished shard as JSON, for the packer's resume notes."""
    return {"stem": files.stem, "records": files.records, **{k: asdict(getattr(files, k)) for k in ("rec", "idx", "rpi")}}


def shard_files_from_json(data: dict[str, Any]) -> ShardFiles:
    return ShardFiles(data["stem"], data["records"], *(FileInfo(**data[k]) for k in ("rec", "idx", "rpi")))
