"""The manifest, ``recpack.json``: a dataset's shards, their files' sizes and checksums, and its provenance.

Where it sits in the folder, and why it holds nothing per record: ``recpack.format``.
It is written last and atomically, so its presence means the dataset is complete.
"""

from __future__ import annotations

import contextlib
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
    crc = data["crc32c"]
    if not isinstance(crc, str) or not 1 <= len(crc) <= 8 or not all(c in "0123456789abcdefABCDEF" for c in crc):
        raise ValueError(f"crc32c {crc!r} is not 8 hex digits")
    return FileInfo(_text(data["name"], "name"), _count(data["bytes"], "bytes"), int(crc, 16))


def shard_from_json(entry: dict[str, Any]) -> ShardFiles:
    """A shard entry back; KeyError, TypeError or ValueError when it is malformed."""
    return ShardFiles(_text(entry["name"], "name"), _count(entry["records"], "records"),
                      *(_file_from_json(entry["files"][kind]) for kind in _KINDS))


def _count(value: Any, what: str) -> int:
    """A JSON whole number of at least 0 (not a bool, a float or a string that would convert)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} is {value!r}, not a whole number of at least 0")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} is {value!r}, not a name")
    return value


def _typed(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind):
        raise ValueError(f"{what} is {value!r}")
    return value


_KINDS = ("rec", "idx", "rpi")


def from_json(data: dict[str, Any], where: str) -> Manifest:
    """Validate and convert parsed JSON; ``where`` names the file in error messages."""
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise ManifestError(f"{where}: not a recpack manifest")
    if data.get("version") != FORMAT_VERSION:
        raise ManifestError(f"{where}: format version {data.get('version')} is not supported (this recpack reads {FORMAT_VERSION})")
    try:
        shards = tuple(shard_from_json(entry) for entry in _typed(data["shards"], list, "shards"))
        classes = _typed(data.get("classes"), (list, type(None)), "classes")
        manifest = Manifest(
            shards,
            _count(data.get("label_width", 1), "label_width"),
            _typed(data.get("has_masks", False), bool, "has_masks"),
            tuple(_text(name, "a class") for name in classes) if classes is not None else None,
            dict(_typed(data.get("created") or {}, dict, "created")),
            _typed(data.get("stats"), (dict, type(None)), "stats"),
        )
        if manifest.label_width < 1:
            raise ValueError("label_width is 0: every record has a label")
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
        what = "a file, not a dataset folder" if os.path.exists(dataset_dir) else "no such dataset folder"
        raise IncompleteDatasetError(f"{dataset_dir}: {what}")
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
    except (OSError, ValueError, RecursionError) as error:  # RecursionError: arrays nested thousands deep
        raise ManifestError(f"{path}: unreadable ({type(error).__name__}: {error})") from None
    return from_json(data, path)


def write_json_atomic(path: str, data: Any, durable: bool = True) -> None:
    """Write JSON under a temporary name, then rename: readers see old or new, never half.

    ``durable`` also fsyncs the file and its folder, so that it survives a power cut.
    """
    temporary = path + ".tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
            handle.write("\n")
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:  # a full disk: no half-written file left behind, and the error names the file
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise _naming(error, path) from None
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
    try:
        with open(path, "wb") as handle:
            handle.write(data)
    except OSError as error:
        raise _naming(error, path) from None
    return FileInfo(name or os.path.basename(path), len(data), crc32c.crc32c(data))


def _naming(error: OSError, path: str) -> OSError:
    """The error with the file's name: a failed write() (a full disk) carries none."""
    return error if error.filename else OSError(error.errno, error.strerror or str(error), path)
