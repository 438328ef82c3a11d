"""The manifest, ``recpack.json``: a dataset's shards, their files' sizes and checksums, and its provenance.

Where it sits in the folder, and why it holds nothing per record: ``recpack.format``.
It is written last and atomically, so its presence means the dataset is complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import crc32c

from ..errors import IncompleteDatasetError, ManifestError
from .index_files import REC_SUFFIX, RECORD_INDEX_SUFFIX

MANIFEST_NAME = "recpack.json"
KEY_INDEX_NAME = "keys.lmdb"
REPORT_NAME = "bad_inputs.tsv"
WORK_DIR_NAME = ".recpack-pack"  # a pack's notes while it runs; gone once the manifest is written
FORMAT_NAME = "recpack"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FileInfo:
    name: str  # relative to the dataset folder (an imported .rec's may lead out of it)
    bytes: int
    crc32c: int


@dataclass(frozen=True)
class ShardFiles:
    """What a finished shard is made of: the stem, its record count, and its three files."""

    stem: str
    records: int
    rec: FileInfo
    idx: FileInfo
    rpi: FileInfo

    @property
    def files(self) -> tuple[FileInfo, FileInfo, FileInfo]:
        return self.rec, self.idx, self.rpi


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
        "shards": [shard_to_json(shard) for shard in manifest.shards],
        "created": manifest.created,
        "stats": manifest.stats,
    }


def shard_to_json(shard: ShardFiles) -> dict[str, Any]:
    """A shard's manifest entry; the packer's resume notes use the same form."""
    return {
        "name": shard.stem,
        "records": shard.records,
        "bytes": shard.rec.bytes,
        "files": {kind: _file_to_json(getattr(shard, kind)) for kind in _KINDS},
    }


def _file_from_json(data: dict[str, Any]) -> FileInfo:
    return FileInfo(str(data["name"]), int(data["bytes"]), int(data["crc32c"], 16))


def shard_from_json(entry: dict[str, Any]) -> ShardFiles:
    """A shard entry back; KeyError, TypeError or ValueError when it is malformed."""
    return ShardFiles(str(entry["name"]), int(entry["records"]), *(_file_from_json(entry["files"][kind]) for kind in _KINDS))


_KINDS = ("rec", "idx", "rpi")


def from_json(data: dict[str, Any], where: str) -> Manifest:
    """Validate and convert parsed JSON; ``where`` names the file in error messages."""
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise ManifestError(f"{where}: not a recpack manifest")
    if data.get("version") != FORMAT_VERSION:
        raise ManifestError(f"{where}: format version {data.get('version')} is not supported (this recpack reads {FORMAT_VERSION})")
    try:
        shards = tuple(shard_from_json(entry) for entry in data["shards"])
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


def pack_was_interrupted(names: Iterable[str]) -> bool:
    """Whether a folder without a manifest holds what only an unfinished recpack pack leaves.

    Its work folder, a shard still under its temporary name, or recpack's own ``.rpi``
    index (MXNet writes none): such a folder is refused, never read as bare .rec files.
    """
    return any(name == WORK_DIR_NAME or name.endswith((REC_SUFFIX + ".tmp", RECORD_INDEX_SUFFIX)) for name in names)


def load(dataset_dir: str) -> Manifest:
    """The manifest of a complete dataset, or a clear error saying why there is none."""
    path = os.path.join(dataset_dir, MANIFEST_NAME)
    if not os.path.isdir(dataset_dir):
        raise IncompleteDatasetError(f"{dataset_dir}: no such dataset folder")
    if not os.path.exists(path):
        names = os.listdir(dataset_dir)
        if pack_was_interrupted(names):
            raise IncompleteDatasetError(
                f"{dataset_dir}: incomplete dataset (no {MANIFEST_NAME}: a pack was interrupted or failed; "
                "run the pack again once the cause is fixed: it keeps finished shards, or starts clean if the list changed)"
            )
        hint = (f"; RecordDataset reads its {REC_SUFFIX} files as MXNet RecordIO, and recpack import indexes them"
                if any(name.endswith(REC_SUFFIX) for name in names) else "")
        raise IncompleteDatasetError(f"{dataset_dir}: not a recpack dataset (no {MANIFEST_NAME}){hint}")
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


def save_stats(dataset_dir: str, stats: dict[str, Any] | None, measured: Manifest, durable: bool = True) -> Manifest:
    """Put ``stats`` (``format.stats``) into the manifest, atomically, touching nothing else.

    ``measured`` is the manifest the statistics were computed from: if the shards changed
    since (a pack --overwrite in between), the statistics describe another dataset and are refused.
    """
    current = load(dataset_dir)
    if current.shards != measured.shards:
        raise ManifestError(f"{os.path.join(dataset_dir, MANIFEST_NAME)}: the dataset changed while its statistics "
                            "were computed; run recpack stats again")
    updated = replace(current, stats=stats)
    save(dataset_dir, updated, durable)
    return updated


def file_crc32c(path: str, chunk: int = 8 << 20) -> tuple[int, int]:
    """(size, CRC32C) of a whole file, read in large sequential chunks: what a FileInfo records."""
    crc, size = 0, 0
    with open(path, "rb", buffering=0) as handle:
        while block := handle.read(chunk):
            crc = crc32c.crc32c(block, crc)
            size += len(block)
    return size, crc


def write_file(path: str, data: bytes, name: str | None = None) -> FileInfo:
    """Write a small file at once (an index) and describe it; ``name`` (default: the path's) goes into the FileInfo."""
    with open(path, "wb") as handle:
        handle.write(data)
    return FileInfo(name or os.path.basename(path), len(data), crc32c.crc32c(data))
