"""The public names: what `from recpack import ...` offers, and that importing recpack stays light."""

import subprocess
import sys

import recpack


def test_exported_names_resolve():
    assert sorted(recpack.__all__) == ["Augment", "Partition", "ReadOptions", "RecordDataset", "__version__"]
    for name in recpack.__all__:
        assert getattr(recpack, name) is not None


def test_packing_never_imports_torch():
    code = "import sys, recpack.cli, recpack.packer; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
