"""A pack's claim on its output folder: one pack at a time, and what an interrupted run left to keep.

``OUT/.recpack-pack/plan.json`` holds a fingerprint of the source and options (``plan``).
Each finished shard gets a small ``<stem>.done.json`` note there once its keys are in the
key index.  A rerun with the same fingerprint keeps the noted shards whose files still
match their checksums and writes the rest; any other rerun starts clean.  Until the
manifest exists readers refuse the folder, so nothing here is ever seen as a dataset.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from typing import Iterator

from ..errors import PackError
from ..format import manifest as mf
from ..format.stats import is_mean_image

WORK_DIR = mf.WORK_DIR_NAME
_DONE = ".done.json"


def _is_our_file(name: str) -> bool:
    stem = name.split(".", 1)[0]
    return (stem.startswith("shard-") and stem[6:].isdigit()) or is_mean_image(name) or name in (
        mf.MANIFEST_NAME, mf.MANIFEST_NAME + ".tmp", mf.REPORT_NAME, mf.KEY_INDEX_NAME, WORK_DIR
    )


def clean_output(out_dir: str) -> None:
    """Remove everything a pack writes into ``out_dir``, and nothing else."""
    for name in os.listdir(out_dir):
        if _is_our_file(name):
            path = os.path.join(out_dir, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)


def shard_intact(out_dir: str, files: mf.ShardFiles) -> bool:
    """Whether the shard's three files are there with the sizes and checksums its note says."""
    for info in files.files:
        path = os.path.join(out_dir, info.name)
        if not os.path.isfile(path) or os.path.getsize(path) != info.bytes:
            return False
        if mf.file_crc32c(path) != (info.bytes, info.crc32c):
            return False
    return True


@contextlib.contextmanager
def exclusive(out_dir: str) -> Iterator[None]:
    """Hold OUT's lock for a whole pack, so that two packs never write into one folder.

    An advisory ``flock`` on the folder itself (nothing to clean up; the
    kernel drops it when the last process holding it exits, and forked
    workers inherit it).
    """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise PackError(f"{out_dir}: exists and is not a folder")
    os.makedirs(out_dir, exist_ok=True)
    fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PackError(f"{out_dir}: another recpack pack is writing into this folder; "
                            "wait for it to finish, or stop it and rerun") from None
        yield
    finally:
        os.close(fd)


def _kept_note(out_dir: str, path: str) -> dict | None:
    """A finished shard's note, if it parses and its files are intact (else it is forgotten)."""
    try:
        with open(path, encoding="utf-8") as handle:
            note = json.load(handle)
        files = mf.shard_from_json(note["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return note if shard_intact(out_dir, files) else None


def start_or_resume(out_dir: str, print_hash: str, overwrite: bool) -> dict[int, dict]:
    """Prepare ``out_dir`` (existing, and locked by ``exclusive``); return the notes of finished shards to keep."""
    if os.path.exists(os.path.join(out_dir, mf.MANIFEST_NAME)):
        if not overwrite:
            finish(out_dir)  # the notes of a pack killed just after it published, if any: no pack holds them now
            raise PackError(f"{out_dir}: already holds a complete dataset; pass --overwrite to replace it")
        clean_output(out_dir)
    work = os.path.join(out_dir, WORK_DIR)
    plan_path = os.path.join(work, "plan.json")
    same_plan = False
    if os.path.exists(plan_path):
        try:
            with open(plan_path, encoding="utf-8") as handle:
                same_plan = json.load(handle).get("fingerprint") == print_hash
        except (OSError, ValueError, AttributeError):
            same_plan = False
    if not same_plan:
        clean_output(out_dir)
    kept: dict[int, dict] = {}
    if same_plan:
        for name in sorted(os.listdir(work)):
            if not name.endswith(_DONE):
                continue
            note = _kept_note(out_dir, os.path.join(work, name))
            if note is not None:
                kept[note["index"]] = note
            else:
                os.unlink(os.path.join(work, name))
        for name in os.listdir(out_dir):
            if name.endswith(".tmp") and _is_our_file(name):
                os.unlink(os.path.join(out_dir, name))
    os.makedirs(work, exist_ok=True)
    mf.write_json_atomic(plan_path, {"fingerprint": print_hash}, durable=False)
    return kept


def note_done(out_dir: str, stem: str, note: dict) -> None:
    """Record a finished shard; a resume hint only: its checksums are verified before it is trusted."""
    mf.write_json_atomic(os.path.join(out_dir, WORK_DIR, stem + _DONE), note, durable=False)


def finish(out_dir: str) -> None:
    """Drop the pack's notes, once the manifest is written."""
    shutil.rmtree(os.path.join(out_dir, WORK_DIR), ignore_errors=True)

