"""Several nodes reading one bucket: 3 torchrun processes (gloo on 127.0.0.1) read moto's S3 server.

In every setup (shards x DataLoader workers x batch size, including fewer shards
than consumers) the ranks' epochs are disjoint, together complete, and equal in
batches; with a record count the ranks cannot share evenly, the padding repeats
only as many records as it must.  One torchrun runs every setup (it costs seconds to start),
with the server, in a loopback-only network namespace (``distributed_s3_child.py`` says why).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto.server")

import corpus  # noqa: E402
from conftest import in_loopback_namespace, run_cli  # noqa: E402
from distributed_s3_child import RANKS  # noqa: E402

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Datasets of 60 records (3 ranks share them evenly) in 1, 2 and 7 shards, and of 61 in 2: {name: folder}."""
    root = tmp_path_factory.mktemp("dist")
    paths = corpus.make_small_jpegs(root / "img", 61, size=(48, 40), seed=5)
    folders = {}
    for records, shards in ((60, 1), (60, 2), (60, 7), (61, 2)):
        listing = root / f"list{records}.txt"
        listing.write_text("".join(f"{path}\t{index}\n" for index, path in enumerate(paths[:records])))
        folders[f"ds{records}-{shards}"] = str(root / f"ds{records}-{shards}")
        run_cli("pack", listing, folders[f"ds{records}-{shards}"], "--shards", shards, "--quiet", "--workers", "2")
    return folders


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux) for a loopback-only namespace")
def test_three_ranks_read_disjoint_complete_equal_epochs(datasets, tmp_path):
    # (dataset, DataLoader workers, batch size): 1 shard for 3 ranks x 2 workers is fewer shards than consumers
    setups = [("ds60-1", 2, 4), ("ds60-2", 0, 5), ("ds60-7", 2, 3), ("ds60-7", 1, 20), ("ds61-2", 2, 4)]
    out = tmp_path / "epochs.json"
    result = in_loopback_namespace([sys.executable, str(HERE / "distributed_s3_child.py"), str(out),
                                    json.dumps(datasets), json.dumps(setups)], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    entries = json.loads(out.read_text())
    assert [entry["setup"][1:] for entry in entries] == [[workers, batch] for _, workers, batch in setups]
    for entry in entries:
        url, workers, batch = entry["setup"]
        ranks = entry["ranks"]
        records = 61 if "ds61" in url else 60
        counts = Counter(label for rank in ranks for label in rank["labels"])
        assert set(counts) == set(range(records)), entry["setup"]  # complete
        assert len({rank["batches"] for rank in ranks}) == 1, entry["setup"]  # equal in batches
        assert all(rank["batches"] == rank["len"] for rank in ranks), entry["setup"]
        assert len({len(rank["labels"]) for rank in ranks}) == 1
        padding = RANKS * -(-records // RANKS) - records
        assert sum(counts.values()) - records == padding, entry["setup"]  # disjoint, but for the padding
        if padding == 0:
            for a in range(RANKS):
                for b in range(a + 1, RANKS):
                    assert not set(ranks[a]["labels"]) & set(ranks[b]["labels"]), entry["setup"]
