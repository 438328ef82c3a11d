"""Packing: image lists and folders in, shuffled shards and a manifest out.

``sources`` (lists, folders) -> ``plan`` (shuffle, split, fingerprint: pure) -> ``prepare`` (one
image's policy) -> ``writer`` (one shard, published whole or not at all) -> ``packer`` (workers,
progress, the manifest), with ``resume`` for the folder's lock and interrupted runs; ``importer``
adopts MXNet .rec files.  Never imports torch, nor anything of ``recpack.read``.
"""
