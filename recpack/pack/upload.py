"""``recpack pack LIST s3://bucket/prefix``: pack in a local staging folder, then publish it to the URL.

Why not write shards straight to the store: the writer's guarantees (O_DIRECT
appends, fsync, publish by rename, resume of an interrupted pack) are a local
file system's.  So the pack runs as it would locally, in a staging folder named
after the URL (an interrupted pack resumes there when rerun), and
``storage.datasets.upload_dataset`` then puts every file, the manifest last and
once: readers of the URL see no dataset or the whole one.  The staging folder
is removed once the upload has succeeded; if the upload fails it is kept and the
next run packs it again (cheap next to a lost dataset) and uploads it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import replace

from ..format import manifest as mf
from ..storage.datasets import check_writable, upload_dataset
from ..storage.urls import Location
from .plan import PackOptions


def staging_folder(out: Location, parent: str | None = None) -> str:
    """Where a pack to ``out`` is staged: the same folder for the same URL, so that a rerun resumes."""
    digest = hashlib.sha256(str(out).encode()).hexdigest()[:16]
    return os.path.join(parent or tempfile.gettempdir(), f"recpack-staging-{digest}")


def pack_to_url(source, out: Location, options: PackOptions, staging_parent: str | None = None,
                show_progress: bool = True):
    """The pack into the staging folder, then the upload; (the pack's result, bytes uploaded)."""
    from .packer import pack

    store = check_writable(out.root, options.overwrite)  # refused before any work when a dataset is there
    staging = staging_folder(out, staging_parent)
    if os.path.exists(os.path.join(staging, mf.MANIFEST_NAME)):
        shutil.rmtree(staging)  # packed by a run whose upload failed: packed again, never half trusted
    result = pack(source, staging, replace(options, overwrite=False), show_progress)
    sent = upload_dataset(staging, store, overwrite=options.overwrite)
    shutil.rmtree(staging, ignore_errors=True)
    return result, sent
