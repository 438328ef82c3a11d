"""Reading: any dataset (``opening``) -> epoch plans (``planning``, pure) -> records (``shard_reader``)
-> decoded batches (``geometry``, ``detection``: pure; ``decode``, ``batches``) -> ``dataset.RecordDataset``,
the one module that imports torch; ``verify`` checks every byte.  Never imports anything of ``recpack.pack``.
"""
