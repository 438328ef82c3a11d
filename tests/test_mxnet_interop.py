"""MXNet itself reads recpack's shards as they are, and frames records byte for byte as recpack does.

MXNet 1.9.1 cannot be imported beside recpack's numpy, so it runs in its own
venv (tools/setup_mxnet_venv.sh, built on first use) and is driven through
tests/mxnet_probe.py, which prints JSON.  The venv build needs PyPI; a
failure to build it fails these tests rather than skipping them, so that a
green run always means MXNet was asked.  Opt out explicitly with
``-m "not mxnet"``.

The shards include a record whose payload holds the RecordIO magic at aligned
offsets, so it is stored as several parts: the one place where the framing
can go subtly wrong.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recpack.format import framing, schema, index_files
from recpack.read.shard_reader import ShardReader

pytestmark = pytest.mark.mxnet

REPO = Path(__file__).resolve().parent.parent
SETUP_SCRIPT = REPO / "tools" / "setup_mxnet_venv.sh"
MXNET_VENV = REPO / "benchmarks" / ".venv-mxnet"
PROBE = Path(__file__).resolve().with_name("mxnet_probe.py")
M = framing.MAGIC_BYTES


@pytest.fixture(scope="session")
def mxnet_python() -> str:
    """The MXNet venv's interpreter; builds the venv once (a no-op when it already imports mxnet)."""
    done = subprocess.run(["bash", str(SETUP_SCRIPT), str(MXNET_VENV)], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        pytest.fail(f"{SETUP_SCRIPT} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}", pytrace=False)
    return str(MXNET_VENV / "bin" / "python")


def probe(python: str, *args: str, stdin: str | None = None):
    done = subprocess.run([python, str(PROBE), *map(str, args)], input=stdin, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"mxnet_probe.py {args[0]} failed ({done.returncode}):\n{done.stderr}", pytrace=False)
    return json.loads(done.stdout)["result"]


# --- data ---------------------------------------------------------------------------------


def noise_jpeg(seed: int, width: int, height: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


def with_magic_segment(jpeg: bytes) -> bytes:
    """Insert an APP9 segment right after SOI that holds the magic at image offsets 8, 12, 18 and 24.

    The IRHeader (24 bytes, plus 4 per label when there are several) keeps
    image offsets and payload offsets equally aligned, so 8, 12 and 24 are
    aligned cuts (8 and 12 back to back give an empty middle part), while 18
    is unaligned and must be stored untouched.  Decoders skip APPn segments.
    """
    body = b"rp" + M + M + b"rp" + M + b"rp" + M + b"recpack!"
    segment = b"\xff\xe9" + struct.pack(">H", len(body) + 2) + body
    crafted = jpeg[:2] + segment + jpeg[2:]
    assert framing.magic_positions(crafted).tolist() == [8, 12, 24]
    assert crafted.find(M, 16) == 18
    return crafted


def labels_for(index: int, width: int) -> list[float]:
    """Distinct labels, some fractional, so a misplaced or truncated label cannot pass."""
    return [float(index % 5)] if width == 1 else [index + 0.5 * j - 1.0 for j in range(width)]


def pack_dataset(root: Path, width: int) -> tuple[Path, dict[int, tuple[list[float], bytes]]]:
    """Pack 11 JPEGs (one with the magic segment) into 2 shards; return (dataset, line -> (labels, jpeg))."""
    images, lines, expected = root / "images", [], {}
    images.mkdir()
    for index in range(11):
        jpeg = noise_jpeg(index, 24 + 4 * index, 40 - index)
        if index == 3:
            jpeg = with_magic_segment(jpeg)
        (images / f"im{index:02d}.jpg").write_bytes(jpeg)
        labels = labels_for(index, width)
        lines.append("\t".join([f"images/im{index:02d}.jpg", *map(repr, labels)]))
        expected[index + 1] = (labels, jpeg)  # record id = 1-based line in the list
    (root / "list.tsv").write_text("\n".join(lines) + "\n")
    out = root / "dataset"
    command = [sys.executable, "-m", "recpack", "pack", root / "list.tsv", out, "--shards", "2", "--workers", "1", "--quiet"]
    done = subprocess.run(list(map(str, command)), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out, expected


def shard_paths(dataset: Path) -> list[tuple[Path, Path, Path]]:
    """(.rec, .idx, .rpi) of every shard listed in the manifest."""
    manifest = json.loads((dataset / "recpack.json").read_text())
    return [
        tuple(dataset / shard["files"][kind]["name"] for kind in ("rec", "idx", "rpi")) for shard in manifest["shards"]
    ]


@pytest.fixture(scope="module", params=[1, 3], ids=["one-label", "three-labels"])
def packed(request, tmp_path_factory):
    width = request.param
    dataset, expected = pack_dataset(tmp_path_factory.mktemp(f"mx-width{width}"), width)
    return width, dataset, expected


def f32(values) -> list[float]:
    return np.asarray(values, dtype=np.float32).tolist()


# --- MXNet reads recpack ------------------------------------------------------------------


def test_mxnet_indexed_reader_sees_every_record(packed, mxnet_python):
    width, dataset, expected = packed
    seen_ids, multipart = [], 0
    for rec, idx, rpi in shard_paths(dataset):
        records = probe(mxnet_python, "read", rec, idx)
        ours = ShardReader(str(rec), str(rpi), rec.stem)
        assert [r["key"] for r in records] == list(range(len(ours)))
        offsets = index_files.parse_idx(idx.read_text())[1]
        data = rec.read_bytes()
        for record, offset in zip(records, offsets.tolist()):
            labels, jpeg = expected[record["id"]]
            assert record["flag"] == (0 if width == 1 else width)
            assert record["labels"] == f32(labels)
            assert record["id2"] == 0
            assert record["image_sha256"] == hashlib.sha256(jpeg).hexdigest()
            payload = schema.unpack_payload(ours.read(record["key"]))
            assert record["image_sha256"] == hashlib.sha256(payload.image).hexdigest()
            _, lrec = framing.PART_HEADER.unpack_from(data, offset)
            multipart += framing.decode_lrec(lrec)[0] == framing.CFLAG_FIRST
            seen_ids.append(record["id"])
    assert sorted(seen_ids) == sorted(expected)
    assert multipart == 1, "the crafted record should be stored as several parts"


def test_image_record_iter_decodes_every_record(packed, mxnet_python):
    width, dataset, expected = packed
    total = 0
    for rec, idx, _ in shard_paths(dataset):
        records = probe(mxnet_python, "read", rec, idx)
        decoded = probe(mxnet_python, "iter", rec, idx, "--label-width", str(width))
        assert decoded["images"] == decoded["nonblank_images"] == len(records)
        assert decoded["labels"] == [f32(expected[r["id"]][0]) for r in records]
        total += decoded["images"]
    assert total == len(expected)


# --- recpack frames records exactly as MXNet's writer does --------------------------------


def framing_cases() -> list[bytes]:
    """Raw payloads at the edges of the cut rule, plus seeded random ones with planted magic."""
    cases = [
        b"",
        b"abc",
        M,
        M + b"xyz",
        b"abcd" + M,
        b"ab" + M + b"cd",
        M + M + M,
        b"abcd" + M + M + b"efghij",
        b"a" + M + b"bcd" + M,
    ]
    rng = np.random.default_rng(20240611)
    for _ in range(60):
        payload = bytearray(rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes())
        for _ in range(int(rng.integers(0, 4))):
            if len(payload) >= 4:
                at = int(rng.integers(0, len(payload) - 3))
                at -= at % 4 if rng.random() < 0.7 else 0
                payload[at : at + 4] = M
        cases.append(bytes(payload))
    return cases


def test_mxnet_writer_matches_recpack_framing(mxnet_python, tmp_path):
    jpeg = with_magic_segment(noise_jpeg(7, 20, 12))
    packed = [
        ([3.0], 7, jpeg),
        ([1.0, 2.5, -3.0], 2**40 + 1, jpeg),
        ([0.1], 2**63 + 5, b"xyz"),
        ([4.0, 5.0], 0, M + b"ab"),
    ]
    raws = framing_cases()
    items = [{"raw": raw.hex()} for raw in raws] + [
        {"label": labels[0] if len(labels) == 1 else labels, "id": record_id, "image": image.hex()}
        for labels, record_id, image in packed
    ]
    ours = raws + [b"".join(schema.pack_payload(schema.Payload(labels, record_id, image))) for labels, record_id, image in packed]

    rec, idx = tmp_path / "mx.rec", tmp_path / "mx.idx"
    theirs = [bytes.fromhex(p) for p in probe(mxnet_python, "write", rec, idx, stdin=json.dumps(items))]
    for number, (mine, mxnet_payload) in enumerate(zip(ours, theirs)):
        assert mine == mxnet_payload, f"payload {number} differs from recordio.pack"

    expected = b"".join(bytes(piece) for payload in ours for piece in framing.frame_record(payload))
    written = rec.read_bytes()
    if written != expected:
        at = next((i for i, (a, b) in enumerate(zip(written, expected)) if a != b), min(len(written), len(expected)))
        pytest.fail(
            f"MXNet's .rec ({len(written)} B) differs from recpack's framing ({len(expected)} B) at byte {at}: "
            f"mxnet {written[at:at + 16].hex()} recpack {expected[at:at + 16].hex()}"
        )

    keys, offsets = index_files.parse_idx(idx.read_text())
    assert keys.tolist() == list(range(len(ours)))
    ends = offsets.tolist()[1:] + [len(written)]
    for payload, offset, end in zip(ours, offsets.tolist(), ends):
        read, next_offset = framing.read_framed(written, offset)
        assert bytes(read) == payload and next_offset == end
    for (labels, record_id, image), offset in zip(packed, offsets.tolist()[len(raws) :]):
        parsed = schema.unpack_payload(framing.read_framed(written, offset)[0])
        assert parsed.labels.tolist() == f32(labels)
        assert (parsed.record_id, bytes(parsed.image)) == (record_id, image)
