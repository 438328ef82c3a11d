"""tests/test_distributed_s3.py's servers and ranks, all inside one loopback-only network namespace.

torchrun's rendezvous store listens on every interface whatever address it is given, so the
test runs this script under ``unshare --net`` (``conftest.in_loopback_namespace``), and
moto's S3 server has to live in there too:

    python distributed_s3_child.py OUT DATASETS SETUPS

DATASETS is JSON {name: local dataset folder}, each uploaded to s3://shared/NAME; SETUPS is
JSON [[name, DataLoader workers, batch size], ...].  torchrun's ranks (``distributed_reader.py``)
read each setup and write their epochs to OUT; this exits with torchrun's status.
"""

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from object_servers import S3Server  # noqa: E402

RANKS = 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> int:
    out, datasets, setups = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with S3Server() as server:
        server.bucket("shared")
        urls = {name: server.upload_folder(Path(folder), "shared", name) for name, folder in datasets.items()}
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(RANKS), "--nnodes", "1",
                   "--master-addr", "127.0.0.1", "--master-port", str(free_port()), str(HERE / "distributed_reader.py"),
                   out, json.dumps([[urls[name], workers, batch] for name, workers, batch in setups])]
        environment = {**os.environ, **server.environment(), "OMP_NUM_THREADS": "1",
                       "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
        return subprocess.run(command, env=environment, timeout=240).returncode


if __name__ == "__main__":
    sys.exit(main())
