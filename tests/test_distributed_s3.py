"""Several nodes reading one bucket: 3 torchrun processes (gloo on 127.0.0.1) read moto's S3 server.

In every setup (shards x DataLoader workers x batch size, including fewer shards
than consumers) the ranks' epochs are disjoint, together complete, and equal in
batches; with a record count the ranks cannot share evenly, the padding repeats
only as many records as it must.  One torchrun runs every setup (it costs seconds to start).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto.server")

import corpus  # noqa: E402
from conftest import run_cli  # noqa: E402
from object_servers import S3Server  # noqa: E402

RANKS = 3
HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    """Datasets of 60 records (3 ranks share them evenly) in 1, 2 and 7 shards, and of 61 in 2, in one bucket."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    root = tmp_path_factory.mktemp("dist")
    paths = corpus.make_small_jpegs(root / "img", 61, size=(48, 40), seed=5)
    urls = {}
    with S3Server() as server:
        server.bucket("shared")
        for records, shards in ((60, 1), (60, 2), (60, 7), (61, 2)):
            listing = root / f"list{records}.txt"
            listing.write_text("".join(f"{path}\t{index}\n" for index, path in enumerate(paths[:records])))
            local = root / f"ds{records}-{shards}"
            run_cli("pack", listing, local, "--shards", shards, "--quiet", "--workers", "2")
            urls[records, shards] = server.upload_folder(local, "shared", f"ds{records}-{shards}")
        yield server, urls


def test_three_ranks_read_disjoint_complete_equal_epochs(bucket, tmp_path):
    server, urls = bucket
    # (dataset, DataLoader workers, batch size): 1 shard for 3 ranks x 2 workers is fewer shards than consumers
    setups = [(urls[60, 1], 2, 4), (urls[60, 2], 0, 5), (urls[60, 7], 2, 3), (urls[60, 7], 1, 20), (urls[61, 2], 2, 4)]
    out = tmp_path / "epochs.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(RANKS), "--nnodes", "1",
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
               str(HERE / "distributed_reader.py"), str(out), json.dumps(setups)]
    environment = {**os.environ, **server.environment(), "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    for entry in json.loads(out.read_text()):
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
