"""Ask MXNet itself what it makes of recpack's files, and what it writes.

Run by the MXNet venv's interpreter (tools/setup_mxnet_venv.sh), never
imported by pytest: MXNet 1.9.1 needs numpy < 1.24, so it cannot live in
recpack's venv.  tests/test_mxnet_interop.py calls it through subprocess and
reads the JSON it prints.  It imports nothing from recpack, so that every
answer is MXNet's own.

    mxnet_probe.py read  REC IDX                  every record via MXIndexedRecordIO + recordio.unpack
    mxnet_probe.py iter  REC IDX [--label-width N] decode the shard with mx.io.ImageRecordIter
    mxnet_probe.py write REC IDX < records.json   write records with MXIndexedRecordIO + recordio.pack

``write`` reads a JSON list; each item is either ``{"raw": HEX}`` (written
as is, to test the framing alone) or ``{"label": float | [floats], "id": int,
"image": HEX}`` (packed with ``recordio.pack``).  It prints the payloads it
wrote, in hex, so the caller can compare them with recpack's ``pack_payload``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings

import mxnet as mx
import numpy as np


def read_shard(rec: str, idx: str) -> list[dict]:
    """Every record in .idx order, as MXNet's own Python reader sees it."""
    records = []
    reader = mx.recordio.MXIndexedRecordIO(idx, rec, "r")
    try:
        for key in reader.keys:
            header, image = mx.recordio.unpack(reader.read_idx(key))
            labels = [float(header.label)] if header.flag == 0 else [float(x) for x in header.label]
            records.append(
                {
                    "key": int(key),
                    "flag": int(header.flag),
                    "labels": labels,
                    "id": int(header.id),
                    "id2": int(header.id2),
                    "image_sha256": hashlib.sha256(image).hexdigest(),
                    "image_bytes": len(image),
                }
            )
    finally:
        reader.close()
    return records


def iterate_shard(rec: str, idx: str, label_width: int) -> dict:
    """Decode every image with the C++ ImageRecordIter, the path MXNet training jobs use.

    One preprocessing thread and no shuffling keep the output in file order.
    ``batch.pad`` counts the filler in the last batch only with round_batch
    on (the default): with it off, MXNet 1.9.1 zero-fills and reports pad 0.
    MXNet refuses a shard with fewer records than the batch size (4).
    """
    iterator = mx.io.ImageRecordIter(
        path_imgrec=rec,
        path_imgidx=idx,
        data_shape=(3, 32, 32),
        batch_size=4,
        resize=32,
        label_width=label_width,
        preprocess_threads=1,
        shuffle=False,
    )
    images, labels, nonblank = 0, [], 0
    for batch in iterator:
        count = batch.data[0].shape[0] - batch.pad
        data = batch.data[0].asnumpy()[:count]
        label = batch.label[0].asnumpy()[:count].reshape(count, -1)
        images += count
        labels += label.tolist()
        nonblank += int((data.reshape(count, -1).std(axis=1) > 0).sum())
    return {"images": images, "labels": labels, "nonblank_images": nonblank}


def write_records(rec: str, idx: str, items: list[dict]) -> list[str]:
    """Write items through MXNet's writer (dmlc RecordIOWriter); return each payload in hex."""
    payloads = []
    writer = mx.recordio.MXIndexedRecordIO(idx, rec, "w")
    try:
        for key, item in enumerate(items):
            if "raw" in item:
                payload = bytes.fromhex(item["raw"])
            else:
                label = item["label"]
                label = float(label) if isinstance(label, (int, float)) else [float(x) for x in label]
                header = mx.recordio.IRHeader(0, label, item["id"], 0)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # recordio.pack calls the deprecated ndarray.tostring
                    payload = mx.recordio.pack(header, bytes.fromhex(item["image"]))
            writer.write_idx(key, payload)
            payloads.append(payload.hex())
    finally:
        writer.close()
    return payloads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("read", "iter", "write"):
        command = commands.add_parser(name)
        command.add_argument("rec")
        command.add_argument("idx")
        if name == "iter":
            command.add_argument("--label-width", type=int, default=1)
    args = parser.parse_args()
    if args.command == "read":
        result = read_shard(args.rec, args.idx)
    elif args.command == "iter":
        result = iterate_shard(args.rec, args.idx, args.label_width)
    else:
        result = write_records(args.rec, args.idx, json.load(sys.stdin))
    json.dump({"mxnet": mx.__version__, "numpy": np.__version__, "result": result}, sys.stdout)


if __name__ == "__main__":
    main()
