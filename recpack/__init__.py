"""recpack: pack huge image datasets into sequential MXNet-RecordIO shards and read them back fast."""

__version__ = "0.1.0"
