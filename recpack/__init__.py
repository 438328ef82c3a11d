"""recpack: pack huge image datasets into sequential MXNet-RecordIO shards and read them back fast.

The public names are imported lazily so that ``recpack pack`` never imports torch.
"""

__version__ = "0.1.0"

__all__ = ["Augment", "Partition", "ReadOptions", "RecordDataset", "__version__"]


def __getattr__(name):
    if name in ("RecordDataset", "ReadOptions", "Partition"):
        from . import dataset

        return getattr(dataset, name)
    if name == "Augment":
        from .decode import Augment

        return Augment
    raise AttributeError(f"module 'recpack' has no attribute {name!r}")
