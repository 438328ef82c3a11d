"""The public names: what `from recpack import ...` offers (the import rule: test_layers.py)."""

import recpack


def test_exported_names_resolve():
    assert sorted(recpack.__all__) == ["Augment", "Detection", "Partition", "ReadOptions", "RecordDataset",
                                       "RetryPolicy", "StorageOptions", "__version__"]
    for name in recpack.__all__:
        assert getattr(recpack, name) is not None
