"""recpack: pack huge image datasets into sequential MXNet-RecordIO shards and read them back fast.

The house, each floor importing only those below it (``tests/test_layers.py`` enforces it)::

    cli.py            the ``recpack`` command: thin handlers over the library
    measure/          bench, the I/O model, page cache and process statistics
    pack/  read/      packing (sources, one image's policy, writing shards, the packer);
                      reading (opening any dataset, epoch plans, decoding, RecordDataset)
                      -- neither imports the other; only read/dataset.py imports torch
    jpeg/             JPEG bytes: the one header reader, DCT scales, the C extensions
    storage/          where bytes live: local paths and fsspec URLs (s3://, gs://, http(s)://)
                      behind one small protocol, with retries and an optional bounded cache
    format/           the on-disk contract, specified once
    errors.py, prefetch.py    the exception tree; the bounded ordered thread map

The public names are imported lazily so that ``recpack pack`` never imports torch.
"""

from ._version import __version__

__all__ = ["Augment", "Detection", "Partition", "ReadOptions", "RecordDataset", "RetryPolicy", "StorageOptions",
           "__version__"]


def __getattr__(name):
    if name == "RecordDataset":
        from .read.dataset import RecordDataset

        return RecordDataset
    if name in ("ReadOptions", "Partition"):
        from .read import options

        return getattr(options, name)
    if name == "Augment":
        from .read.decode import Augment

        return Augment
    if name in ("StorageOptions", "RetryPolicy"):
        from .storage import protocol

        return getattr(protocol, name)
    if name == "Detection":
        from .read.detection import Detection

        return Detection
    raise AttributeError(f"module 'recpack' has no attribute {name!r}")
