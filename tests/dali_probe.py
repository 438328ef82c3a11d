"""Ask NVIDIA DALI what its readers.mxnet makes of recpack's files.

Run by the DALI venv's interpreter (tools/setup_dali_venv.sh), never imported
by pytest; tests/test_dali_interop.py calls it through subprocess and reads
the JSON it prints.  It imports nothing from recpack, so every answer is DALI's.

    dali_probe.py read INDEX REC [REC ...]     every record once, in index order, on the CPU (device_id=None)

For each record: the SHA-256 of the image bytes DALI hands out and its labels.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

import nvidia.dali as dali
from nvidia.dali import fn, pipeline_def


def read(index: str, recs: list[str]) -> list[dict]:
    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def records():
        jpegs, labels = fn.readers.mxnet(path=recs, index_path=[index], random_shuffle=False, name="reader")
        return jpegs, labels

    pipe = records()
    pipe.build()
    out = []
    for _ in range(pipe.epoch_size("reader")):
        jpegs, labels = pipe.run()
        out.append({"image_sha256": hashlib.sha256(jpegs.at(0).tobytes()).hexdigest(),
                    "labels": [float(x) for x in labels.at(0).ravel()]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("read")
    command.add_argument("index")
    command.add_argument("recs", nargs="+")
    args = parser.parse_args()
    json.dump({"dali": dali.__version__, "result": read(args.index, args.recs)}, sys.stdout)


if __name__ == "__main__":
    main()
