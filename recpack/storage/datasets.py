"""A dataset's manifest from any location, and a packed folder published to a URL.

Publishing follows the local rule (``format``: the manifest is written last, so
its presence means the dataset is complete): every other file is uploaded
first, then the manifest, once, with a conditional put where the store has one
(``RemoteStore.put_bytes``).  A rerun after a failed upload sends every file
again: a size or a name says nothing of a file's bytes, and a half-uploaded
dataset without its manifest is never read.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from ..errors import IncompleteDatasetError, StorageError
from ..format import manifest as mf
from .store import AlreadyExists, RemoteStore, Store, StorageOptions, open_store
from .urls import Location, location, shown

UPLOAD_THREADS = 4
_NOT_UPLOADED = (mf.WORK_DIR_NAME, "lock.mdb")  # a pack's notes; LMDB's lock file, made again by each reader


def load_manifest(path: str | Location, options: StorageOptions | None = None) -> mf.Manifest:
    """The manifest of the dataset at a local path or URL, or the error saying why there is none."""
    where = path if isinstance(path, Location) else location(path)
    if not where.is_remote:
        return mf.load(where.root)
    return manifest_of(open_store(where, options))


def manifest_of(store: Store) -> mf.Manifest:
    where = store.location
    if not where.is_remote:
        return mf.load(where.root)
    try:
        data = store.read(mf.MANIFEST_NAME)
    except StorageError as error:
        if "no such object" in str(error):
            raise IncompleteDatasetError(f"{where}: not a recpack dataset (no {mf.MANIFEST_NAME} there: "
                                         "the pack or its upload did not finish, or the URL is wrong)") from None
        raise
    try:
        parsed = json.loads(bytes(data))
    except (ValueError, RecursionError) as error:
        raise mf.ManifestError(f"{shown(where.join(mf.MANIFEST_NAME))}: unreadable ({type(error).__name__})") from None
    return mf.from_json(parsed, shown(where.join(mf.MANIFEST_NAME)))


def check_writable(url: str, overwrite: bool) -> RemoteStore:
    """The store a pack will publish to, refused now (before any packing) when a dataset is there already."""
    store = open_store(url, write=True)
    if store.exists(mf.MANIFEST_NAME) and not overwrite:
        raise StorageError(f"{store.location}: a dataset is already there ({mf.MANIFEST_NAME}); "
                           "--overwrite replaces it")
    return store


def files_to_upload(local_dir: str) -> list[str]:
    """The folder's files (relative names) that make the dataset, the manifest left out (it goes last)."""
    names = []
    for folder, subfolders, files in os.walk(local_dir):
        subfolders[:] = sorted(name for name in subfolders if name not in _NOT_UPLOADED)
        for name in sorted(files):
            relative = os.path.relpath(os.path.join(folder, name), local_dir)
            if name not in _NOT_UPLOADED and relative != mf.MANIFEST_NAME and not name.endswith(".tmp"):
                names.append(relative.replace(os.sep, "/"))
    return names


def upload_dataset(local_dir: str, store: Store, overwrite: bool = False,
                   progress: Callable[[int], None] | None = None) -> int:
    """Put a complete local dataset at the store's URL: every file, then the manifest last; the bytes sent."""
    manifest_path = os.path.join(local_dir, mf.MANIFEST_NAME)
    with open(manifest_path, "rb") as handle:
        manifest_bytes = handle.read()
    names = files_to_upload(local_dir)

    def send(name: str) -> int:
        path = os.path.join(local_dir, name)
        size = os.path.getsize(path)
        store.put_file(path, name)
        if progress is not None:
            progress(size)
        return size

    with ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="recpack-upload") as pool:
        sent = sum(pool.map(send, names))
    try:
        store.put_bytes(mf.MANIFEST_NAME, manifest_bytes, if_absent=not overwrite)
    except AlreadyExists:
        raise StorageError(f"{store.location}: another writer published a dataset there while this one uploaded; "
                           "its manifest is kept (rerun with --overwrite to replace it)") from None
    return sent + len(manifest_bytes)
