"""Dataset locations as given by a user: a local path, or a URL that a store serves (``store``, ``s3``).

``location(text)`` decides which once, at the edge, and refuses in one line what
recpack cannot serve: an unknown scheme, a backend that is not installed, a
read-only scheme given as a place to write.  Without that check ``s3://b/x`` is a
valid relative path, and a pack would quietly write a folder named ``s3:``.

Every message names the URL through ``shown``, which drops what may be a secret:
a ``user:password@`` and the query string (a presigned URL's signature).
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass

from ..errors import StorageError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# scheme -> (the modules its store needs, the recpack extra that installs them, writable)
BACKENDS = {
    "s3": (("boto3",), "s3", True),
    "gs": (("fsspec", "gcsfs"), "gcs", True),
    "gcs": (("fsspec", "gcsfs"), "gcs", True),
    "http": (("fsspec", "aiohttp"), "http", False),
    "https": (("fsspec", "aiohttp"), "http", False),
}
# a URL anywhere in a text: scheme, optional userinfo, the rest up to the query
_URL_IN_TEXT = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)(?:[^/@\s'\"]*@)?([^\s?#'\"]*)(?:[?#][^\s'\"]*)?")
_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "GOOGLE_APPLICATION_CREDENTIALS")


def scheme_of(text: str) -> str | None:
    """The URL scheme, lower case, or None for a local path (``file://`` counts as a local path)."""
    match = _SCHEME.match(text)
    if match is None or match.group(1).lower() == "file":
        return None
    return match.group(1).lower()


def is_url(text: str) -> bool:
    return scheme_of(str(text)) is not None


def local_path(text: str) -> str:
    """A local path as given, or a ``file://`` URL's path."""
    return text[len("file://"):] if text[:7].lower() == "file://" else text


def shown(text: str) -> str:
    """A URL, or every URL inside a message, without userinfo, query or fragment; and no credential value
    from the environment (a library's message may quote a request)."""
    text = _URL_IN_TEXT.sub(lambda m: m.group(1) + m.group(2), str(text))
    for name in _SECRET_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= 8:
            text = text.replace(value, "***")
    return text


@dataclass(frozen=True)
class Location:
    """Where a dataset lives: ``root`` is a local folder (or file), or a URL without a trailing slash."""

    root: str
    scheme: str | None  # None: local

    @property
    def is_remote(self) -> bool:
        return self.scheme is not None

    def join(self, name: str) -> str:
        return f"{self.root}/{name}" if self.is_remote else os.path.join(self.root, name)

    def __str__(self) -> str:
        return shown(self.root) if self.is_remote else self.root


def location(text: str, *, write: bool = False) -> Location:
    """Parse a dataset path or URL; StorageError in one line when recpack cannot serve it."""
    text = str(text)
    scheme = scheme_of(text)
    if scheme is None:
        return Location(local_path(text), None)
    if scheme not in BACKENDS:
        known = ", ".join(f"{name}://" for name in BACKENDS)
        raise StorageError(f"{shown(text)}: recpack cannot use {scheme}:// URLs (it reads local paths and {known})")
    modules, extra, writable = BACKENDS[scheme]
    if write and not writable:
        raise StorageError(f"{shown(text)}: {scheme}:// is read-only for recpack: write to a local folder, s3:// or gs://")
    for needed in modules:
        if importlib.util.find_spec(needed) is None:
            raise StorageError(f"{shown(text)}: {scheme}:// needs the Python package {needed}: "
                               f"pip install 'recpack[{extra}]'")
    root = text.rstrip("/")
    if root.endswith("://") or root[len(scheme) + 3:] == "":
        raise StorageError(f"{shown(text)}: name a bucket or host, and a prefix, after {scheme}://")
    return Location(root, scheme)
