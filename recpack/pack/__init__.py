"""Packing: image lists and folders in, shuffled shards and a manifest out.

``sources`` (lists, folders) -> ``plan`` (shuffle, split, fingerprint: pure) -> ``prepare`` (one
image's policy) -> ``writer`` (one shard, published whole or not at all) -> ``packer`` (workers,
progress, the manifest), with ``resume`` for the folder's lock and interrupted runs; ``importer``
adopts MXNet .rec files.  Packing in steps any scheduler can drive: ``stored_plan.plan`` (the plan
written into OUT) -> ``shard_range.pack_range`` (one task, any attempt the same bytes) ->
``commit.commit``; ``engines.pack_on_engine`` runs them on Spark or Ray.  Never imports torch, nor
anything of ``recpack.read``.
"""
