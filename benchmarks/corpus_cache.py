"""The benchmark corpus: generated once into benchmarks/.work/corpus-N-sS and shared by every benchmark.

bench_pack.py, compare.py, bench_read.py and their child processes all read
the same folder, so its shape lives here.  Standard library only: the MXNet
venv imports it too.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from settings import HERE, WORK

CLASSES = 100
# make_corpus.py cuts scikit-image's sample photos, which tools/setup.sh installs
# into recpack's own venv and the peers' venvs do not have.
CORPUS_PYTHON = HERE.parent / ".venv" / "bin" / "python"


def read_list(list_file: Path) -> list[tuple[str, int]]:
    """(relative path, label) per line of a corpus list (``path<TAB>label``; blank and # lines skipped)."""
    rows = (line.split("\t") for line in list_file.read_text().splitlines() if line and not line.startswith("#"))
    return [(row[0], int(row[1])) for row in rows]


def listed_bytes(root: Path, items: list[tuple[str, int]]) -> int:
    """Bytes of the listed files only: a regenerated corpus can leave unlisted files in the folder."""
    return sum((root / path).stat().st_size for path, _ in items)


def is_complete(root: Path, images: int) -> bool:
    """Whether ``root`` holds the whole corpus: list.txt is written last, with CLASSES labels."""
    list_file = root / "list.txt"
    if not list_file.exists():
        return False
    items = read_list(list_file)
    return len(items) == images and len({label for _, label in items}) == min(CLASSES, images)


@dataclass
class Corpus:
    """A generated corpus: its folder and its list (relative path, label), in list order."""

    root: Path
    items: list[tuple[str, int]]

    @property
    def list_file(self) -> Path:
        return self.root / "list.txt"

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def paths(self) -> list[Path]:
        return [self.root / path for path, _ in self.items]

    @cached_property
    def total_bytes(self) -> int:
        return listed_bytes(self.root, self.items)


def load_corpus(images: int, seed: int) -> Corpus:
    """The corpus of ``images`` JPEGs made with ``seed``, generated first if need be."""
    root = ensure_corpus(images, seed)
    return Corpus(root, read_list(root / "list.txt"))


def ensure_corpus(images: int, seed: int) -> Path:
    """The corpus folder, generated first if missing or incomplete (one generator at a time)."""
    root = WORK / f"corpus-{images}-s{seed}"
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / f"corpus-{images}-s{seed}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_complete(root, images):
            print(f"generating {images} images into {root} (cached for later runs) ...", flush=True)
            python = CORPUS_PYTHON if CORPUS_PYTHON.exists() else Path(sys.executable)
            subprocess.run([str(python), str(HERE / "make_corpus.py"), str(root), "--images", str(images),
                            "--classes", str(CLASSES), "--seed", str(seed)], check=True)
    return root
