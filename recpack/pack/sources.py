"""What to pack: image lists and ImageFolder directories, turned into ``SourceItem``s.

A list file has one record per line; blank lines and lines starting with ``#``
are ignored.  Three layouts are accepted, told apart line by line:

``path<TAB>label[<TAB>label...][<TAB>mask]``
    Tab-separated: the image path, any number of numeric labels, and
    optionally, last, the path of a PNG label mask (a field that is not a
    number and has a file extension).  Paths may contain spaces.
``index<TAB>label[<TAB>label...]<TAB>path``
    MXNet im2rec ``.lst``: recognised when the first of three or more fields
    is an integer and the last is not a number.
``path label`` or ``path``
    No tab: the last whitespace-separated token is the label; a line with no
    whitespace is a path without a label.  Use tabs for paths with spaces.

Relative paths are resolved against ``root``: the ``--root`` option, else a
``# root: PATH`` comment on the list's first line (``recpack list`` writes
one), else the list's own folder.  The path as written in the list is the
record's *key* (what ``recpack get`` looks up).
"""

from __future__ import annotations

import math
import os
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import ListFileError, RecpackError
from ..format.manifest import MANIFEST_NAME

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)


@dataclass(frozen=True, slots=True)
class SourceItem:
    line: int  # 1-based line in the list (or position in a directory listing)
    key: str  # the path as written; looked up by ``recpack get``
    path: str  # resolved path of the image
    labels: tuple[float, ...]
    mask: str | None = None  # resolved path of the PNG label mask, if any


class TextColumn(Sequence[str]):
    """Strings kept as one UTF-8 blob and the end offset of each: ``len + 8`` bytes apiece.

    Why: a list of 14.2M ``str`` objects costs ~57 bytes of object header each on
    top of the text, and every forked worker that touches one copies its page
    (reference counts); a blob costs neither, and a plan can gather it with numpy.
    """

    def __init__(self) -> None:
        self.blob = bytearray()
        self.ends = array("Q")

    def append(self, text: str) -> None:
        self.blob += text.encode("utf-8")
        self.ends.append(len(self.blob))

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        start = self.ends[index - 1] if index else 0
        return self.blob[start : self.ends[index]].decode("utf-8")


class LabelColumn(Sequence[tuple[float, ...]]):
    """Label tuples as a 4-byte code per line into the distinct tuples, which most lists have few of."""

    def __init__(self) -> None:
        self.codes = array("I")
        self.distinct: list[tuple[float, ...]] = []
        self._code_of: dict[tuple[float, ...], int] = {}

    def append(self, labels: tuple[float, ...]) -> None:
        code = self._code_of.get(labels)
        if code is None:
            code = self._code_of[labels] = len(self.distinct)
            self.distinct.append(labels)
        self.codes.append(code)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.distinct[code] for code in self.codes[index]]
        return self.distinct[self.codes[index]]


class Source:
    """Everything a pack needs to know about its input.

    Stored column-wise (about 50 bytes a line: the key's text, its offset, the
    line number, a label code) rather than as one object per line, so that a
    14M-line list fits in memory; ``item(i)`` builds the resolved ``SourceItem``
    when a shard needs it.
    """

    def __init__(self, description: str, root: str, classes: tuple[str, ...] | None = None):
        self.description, self.root, self.classes = description, root, classes
        self.lines = array("q")
        self.keys = TextColumn()
        self.labels = LabelColumn()
        self.masks: dict[int, str] = {}  # position -> mask path as written; few lists have masks

    def append(self, line: int, key: str, labels: tuple[float, ...], mask: str | None = None) -> None:
        if mask is not None:
            self.masks[len(self.keys)] = mask
        self.lines.append(line)
        self.keys.append(key)
        self.labels.append(labels)

    def __len__(self) -> int:
        return len(self.keys)

    def item(self, index: int) -> SourceItem:
        mask = self.masks.get(index)
        key = self.keys[index]
        return SourceItem(self.lines[index], key, _resolve(self.root, key), self.labels[index],
                          mask and _resolve(self.root, mask))

    def __iter__(self) -> Iterator[SourceItem]:
        return (self.item(index) for index in range(len(self)))

    def path(self, index: int) -> str:
        return _resolve(self.root, self.keys[index])

    def paths(self) -> "SourcePaths":
        """The resolved image paths as a lazy sequence (no list of millions of strings)."""
        return SourcePaths(self)


class SourcePaths(Sequence[str]):
    def __init__(self, source: Source):
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._source.path(i) for i in range(*index.indices(len(self)))]
        return self._source.path(index)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_integer(text: str) -> bool:
    return text.strip().lstrip("+-").isdigit()


_LARGEST_EXACT_LABEL = 2**24  # float32's 24-bit significand: every whole number up to this is exact


def _labels(fields: list[str], where: tuple[str, int], hint: str = "") -> tuple[float, ...]:
    """The labels of one line, each one that the record format's float32 holds exactly."""
    labels = []
    for field in fields:
        try:
            value = float(field)
        except ValueError:
            raise ListFileError(*where, f"label {field.strip()!r} is not a number{hint}") from None
        if not math.isfinite(value):
            raise ListFileError(*where, f"label {field.strip()!r} is not a finite number")
        if value.is_integer() and abs(value) > _LARGEST_EXACT_LABEL:
            raise ListFileError(*where, f"label {field.strip()!r} is too large to be stored exactly "
                                f"(labels are float32: whole numbers up to {_LARGEST_EXACT_LABEL:,})")
        labels.append(value)
    return tuple(labels)


def parse_list_line(text: str, where: tuple[str, int]) -> tuple[str, tuple[float, ...], str | None] | None:
    """(path, labels, mask path) as written on one line, or None for a blank or comment line."""
    line = text.rstrip("\r\n")
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    if "\t" in line:
        fields = line.split("\t")
        if len(fields) >= 3 and _is_integer(fields[0]) and not _is_number(fields[-1]):
            path, labels, mask = fields[-1], _labels(fields[1:-1], where), None
        else:
            path, rest = fields[0], fields[1:]
            mask = None
            if rest and not _is_number(rest[-1]) and Path(rest[-1].strip()).suffix:
                mask = rest.pop().strip()
            labels = _labels([field for field in rest if field.strip()], where)
    else:
        tokens = line.rsplit(None, 1)
        if len(tokens) == 2:
            hint = " (a path with spaces needs a tab before its label)"
            path, labels, mask = tokens[0], _labels([tokens[1]], where, hint), None
        else:
            path, labels, mask = line, (), None
    path = path.strip()
    if not path:
        raise ListFileError(*where, "no image path")
    return path, labels, mask


def _check_consistent(source: Source, labels: tuple[float, ...], mask: str | None, where: tuple[str, int]) -> None:
    """Every line like the first: as many labels, a mask or none, and a whole-number class if one label.

    Why: readers build one batch layout per dataset (a label vector of fixed
    width, or an image and a mask), and a single label is read as an int64
    class index.  The exception: MXNet detection labels (``[A, B, ...]``, as
    im2rec's detection lists hold) of one header and object width may hold
    any number of objects, as MXNet's ImageDetIter reads them.
    """
    if len(labels) == 1 and not labels[0].is_integer():
        raise ListFileError(*where, f"label {labels[0]:g} is not a whole number (a single label is a class index; "
                            "give two or more labels per line for a vector of floats)")
    if not len(source):
        return
    if len(labels) != len(source.labels[0]) and not _same_detection_layout(labels, source.labels[0]):
        raise ListFileError(*where, f"{len(labels)} labels, but the lines before have {len(source.labels[0])} "
                            "(every line needs the same number, so that MXNet and recpack readers agree)")
    if (mask is None) != (0 not in source.masks):
        raise ListFileError(*where, "no mask, but the lines before have one" if mask is None
                            else "a mask, but the lines before have none")


def _detection_layout(labels: tuple[float, ...]) -> tuple[int, int] | None:
    """(header width, object width) of MXNet's detection labels ``[A, B, extras, objects...]``, or None."""
    if len(labels) < 2 or not (labels[0].is_integer() and labels[1].is_integer()):
        return None
    header, width = int(labels[0]), int(labels[1])
    if header < 2 or width < 5 or header > len(labels) or (len(labels) - header) % width:
        return None
    return header, width


def _same_detection_layout(labels: tuple[float, ...], first: tuple[float, ...]) -> bool:
    """Whether both lines hold detection labels of one layout: they may then hold different numbers of objects."""
    layout = _detection_layout(labels)
    return layout is not None and layout == _detection_layout(first)


def _resolve(root: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(root, path)


ROOT_COMMENT = "# root: "
ARCHIVE_COMMENT = "# archive: "  # what `recpack list ARCHIVE` writes first: such a list describes, it does not pack


def read_list(list_path: str, root: str | None = None) -> Source:
    """Parse an image list; raises ListFileError naming the first bad line."""
    if not os.path.isfile(list_path):
        raise RecpackError(f"{list_path}: no such list file or image folder")
    list_dir = os.path.dirname(os.path.abspath(list_path))
    source: Source | None = None
    single_labels: dict[str, tuple[float, ...]] = {}  # label text -> parsed, for the fast path
    with open(list_path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ListFileError(list_path, number, f"not UTF-8 text ({error.reason})") from None
            if number == 1:
                text = text.removeprefix("\ufeff")  # a byte-order mark, as some editors save UTF-8
            if source is None:
                if text.startswith(ARCHIVE_COMMENT):
                    archive = text[len(ARCHIVE_COMMENT) :].rstrip("\r\n")
                    raise RecpackError(f"{list_path}: lists the members of the archive {archive}; "
                                       f"pack the archive itself (recpack pack {archive} OUT)")
                if root is None and text.startswith(ROOT_COMMENT):
                    root = os.path.join(list_dir, text[len(ROOT_COMMENT) :].rstrip("\r\n"))
                source = Source(os.path.abspath(list_path), os.path.abspath(root or list_dir))
            fields = text.rstrip("\r\n").split("\t")
            if len(fields) == 2 and fields[1] in single_labels and fields[0].strip() and fields[0].lstrip()[0] != "#":
                source.append(number, fields[0].strip(), single_labels[fields[1]])  # fast path: path<TAB>label
                continue
            parsed = parse_list_line(text, (list_path, number))
            if parsed is None:
                continue
            path, labels, mask = parsed
            _check_consistent(source, labels, mask, (list_path, number))
            if len(fields) == 2 and len(labels) == 1:
                single_labels[fields[1]] = labels
            source.append(number, path, labels, mask)
    if source is None or not len(source):
        raise RecpackError(f"{list_path}: the list names no images")
    return source


def _class_files(class_dir: str) -> Iterator[str]:
    """Image files below one class folder, in sorted order, hidden entries skipped."""
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                yield os.path.join(dirpath, name)


def scan_image_folder(directory: str) -> Source:
    """An ImageFolder tree: one subfolder per class, labels by sorted class name."""
    root = os.path.abspath(directory)
    if not os.path.isdir(root):
        raise RecpackError(f"{directory}: no such folder (expected DIR/<class>/<image>)")
    if os.path.exists(os.path.join(root, MANIFEST_NAME)):
        raise RecpackError(f"{directory}: a packed recpack dataset, not an image folder (expected DIR/<class>/<image>)")
    classes = sorted(
        entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith(".")
    )
    if not classes:
        raise RecpackError(f"{directory}: no class subfolders (expected DIR/<class>/<image>)")
    source = Source(root, root, tuple(classes))
    for label, name in enumerate(classes):
        before = len(source)
        for path in _class_files(os.path.join(root, name)):
            source.append(len(source) + 1, os.path.relpath(path, root), (float(label),))
        if len(source) == before:  # a class no record has would still take a label number
            raise RecpackError(f"{os.path.join(directory, name)}: class folder holds no image files; "
                               "remove it or add images")
    return source


def open_source(source: str, root: str | None = None) -> Source:
    """A list file or an ImageFolder directory, whichever ``source`` is."""
    if os.path.isdir(source):
        return scan_image_folder(source)
    return read_list(source, root)


def format_lst_line(index: int, item: SourceItem) -> str:
    """One im2rec-style ``.lst`` line (index, labels, path): what ``recpack list`` prints."""
    labels = "\t".join(f"{label:g}" for label in item.labels)
    return f"{index}\t{labels}\t{item.key}\n"
