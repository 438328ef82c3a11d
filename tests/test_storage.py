"""Datasets in object storage (#16), against real servers on 127.0.0.1: moto's S3 server and a range-serving
HTTP server with faults, also over TLS (gs:// is in test_storage_gcs.py).  Every record is read exactly once per
epoch, or the read fails with one clear line."""

from __future__ import annotations

import logging
import multiprocessing
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto.server")

import corpus  # noqa: E402
from conftest import run_cli  # noqa: E402
from object_servers import FAKE_CREDENTIALS, RangeServer, S3Server, environment  # noqa: E402
from recpack import RecordDataset  # noqa: E402
from recpack.errors import IncompleteDatasetError, StorageError  # noqa: E402
from recpack.storage.cache import BlockCache  # noqa: E402
from recpack.storage.retry import RetryPolicy  # noqa: E402
from recpack.storage.store import AlreadyExists, StorageOptions, open_store  # noqa: E402

RECORDS = 90
SECRET = FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]


@pytest.fixture(scope="module")
def listed(tmp_path_factory) -> Path:
    """A list of RECORDS small JPEGs whose label is their line number: a label names its record."""
    root = tmp_path_factory.mktemp("images")
    paths = corpus.make_small_jpegs(root / "img", RECORDS, size=(64, 48), seed=3)
    listing = root / "list.txt"
    listing.write_text("".join(f"{path}\t{index}\n" for index, path in enumerate(paths)))
    return listing


@pytest.fixture(scope="module")
def local(listed, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "ds"
    run_cli("pack", listed, out, "--shards", "4", "--quiet", "--workers", "2")
    return out


@pytest.fixture(scope="module")
def s3():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with S3Server() as server, environment(server.environment()):
        server.bucket("data")
        yield server


@pytest.fixture(scope="module")
def s3_url(s3, local) -> str:
    return s3.upload_folder(local, "data", "uploaded")


def labels_of(dataset, **loader) -> Counter:
    import torch.utils.data

    if loader:
        batches = torch.utils.data.DataLoader(dataset, batch_size=None, **loader)
    else:
        batches = dataset
    return Counter(int(label) for _, labels in batches for label in labels)


EVERY_ONCE = Counter(range(RECORDS))


# --- URLs ---------------------------------------------------------------------------------------


def test_an_unknown_scheme_is_one_line_and_writes_no_folder(listed, tmp_path):
    result = subprocess.run([sys.executable, "-m", "recpack", "pack", str(listed), "foo://user:pw@bucket/x?sig=abc",
                             "--quiet"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == ("recpack: error: foo://bucket/x: recpack cannot use foo:// URLs "
                                     "(it reads local paths and s3://, gs://, gcs://, http://, https://)")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_backend_names_the_extra(monkeypatch):
    import importlib.util

    from recpack.storage import urls

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gcsfs" else real(name, *a))
    with pytest.raises(StorageError) as caught:
        urls.location("gs://bucket/prefix")
    assert str(caught.value) == "gs://bucket/prefix: gs:// needs the Python package gcsfs: pip install 'recpack[gcs]'"


def test_http_is_refused_as_an_output(listed, capsys):
    status, _, err = cli(capsys, "pack", listed, "https://example.invalid/x", "--quiet")
    assert status == 1 and "read-only" in err and err.count("\n") == 1


def test_messages_carry_no_userinfo_query_or_credential(monkeypatch):
    from recpack.storage.urls import shown

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    text = "GET https://alice:pw@host/b/k?X-Amz-Signature=abc failed for very-secret-value"
    assert shown(text) == "GET https://host/b/k failed for ***"


# --- retries ------------------------------------------------------------------------------------


def test_transient_errors_are_told_from_final_ones():
    import aiohttp
    from botocore.exceptions import ClientError

    from recpack.storage.retry import transient

    def client_error(status, code):
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    assert transient(client_error(503, "SlowDown")) and transient(client_error(500, "InternalError"))
    assert transient(client_error(400, "ExpiredToken"))
    assert not transient(client_error(403, "AccessDenied")) and not transient(client_error(404, "NoSuchKey"))
    assert transient(ConnectionResetError()) and transient(aiohttp.ClientPayloadError("cut"))
    wrapped = OSError("translated")
    wrapped.__cause__ = client_error(429, "TooManyRequests")
    assert transient(wrapped)
    assert not transient(FileNotFoundError("gone")) and not transient(ValueError("bad argument"))


def test_the_retry_budget_ends_in_one_line_naming_the_url():
    from recpack.storage.retry import with_retries

    calls, waits = [], []

    def failing():
        calls.append(1)
        raise ConnectionResetError("reset by peer")

    policy = RetryPolicy(attempts=4, first_delay=1.0, max_delay=3.0)
    with pytest.raises(StorageError) as caught:
        with_retries(failing, "s3://b/k?token=x bytes 0-9", policy, sleep=waits.append)
    assert len(calls) == 4 and len(waits) == 3
    assert all(0 <= wait <= cap for wait, cap in zip(waits, [1.0, 2.0, 3.0]))
    assert str(caught.value).startswith("s3://b/k bytes 0-9: failed 4 times in ")
    assert "ConnectionResetError: reset by peer" in str(caught.value) and "token" not in str(caught.value)


def test_an_expired_credential_rebuilds_the_client_before_the_retry():
    """The new client reads the credential chain again (a refreshed profile, a rotated file): one retry, not a failure."""
    from botocore.exceptions import ClientError

    from recpack.storage.retry import with_retries

    answers = [ClientError({"Error": {"Code": "ExpiredToken"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
                           "GetObject"), b"bytes"]
    rebuilt = []

    def call():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert with_retries(call, "s3://b/k", RetryPolicy(first_delay=0), on_expired=lambda: rebuilt.append(1)) == b"bytes"
    assert rebuilt == [1]


# --- the block cache ----------------------------------------------------------------------------


def _fetching(data: bytes, log: list):
    def fetch(start, end):
        log.append((start, end))
        return data[start:end]
    return fetch


def test_cache_serves_what_it_kept_and_stays_under_its_limit(tmp_path):
    data = os.urandom(10_000)
    log: list = []
    cache = BlockCache(str(tmp_path), limit_bytes=2_500, block_bytes=1_000)
    assert bytes(cache.read("k", len(data), 1_500, 2_700, _fetching(data, log))) == data[1_500:2_700]
    assert log == [(1_000, 3_000)]  # one request for the run of missing blocks
    assert bytes(cache.read("k", len(data), 1_200, 2_100, _fetching(data, log))) == data[1_200:2_100]
    assert len(log) == 1  # served from the cache
    for start in range(0, 10_000, 700):
        assert bytes(cache.read("k", len(data), start, min(start + 900, 10_000), _fetching(data, log))) == \
            data[start:start + 900]
        assert cache.total_bytes() <= 2_500
    assert sum(path.stat().st_size for path in (tmp_path / "blocks").rglob("*") if path.is_file()) <= 2_500
    recent = len(log)
    cache.read("k", len(data), 9_000, 10_000, _fetching(data, log))  # the last block read: still there
    assert len(log) == recent
    cache.read("k", len(data), 0, 10, _fetching(data, log))  # the first: evicted long ago
    assert len(log) == recent + 1


def test_a_cache_smaller_than_a_block_streams_and_never_waits(tmp_path):
    data = os.urandom(5_000)
    log: list = []
    cache = BlockCache(str(tmp_path), limit_bytes=999, block_bytes=1_000)
    for _ in range(3):
        assert bytes(cache.read("k", len(data), 0, 5_000, _fetching(data, log))) == data
    assert log == [(0, 5_000)] * 3 and not (tmp_path / "blocks").exists()


def test_each_process_builds_its_own_client(s3_url):
    """A forked child (as a DataLoader worker is) never uses the client it inherited, and still reads."""
    store = open_store(s3_url)
    inherited = store.client()
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def child():  # runs in the fork: the store and its client are the parent's objects, not pickled copies
        send.send((store.client() is inherited, bytes(store.read("recpack.json"))[:1]))

    process = context.Process(target=child)
    process.start()
    assert receive.recv() == (False, b"{")
    process.join()
    assert store.client() is inherited


def test_a_lock_held_at_the_fork_is_free_in_the_child():
    """A DataLoader worker forked while a reader thread held a store's lock must not hang on it."""
    import threading

    from recpack.storage.process import ProcessLock

    lock, held, release = ProcessLock(), threading.Event(), threading.Event()

    def hold():
        with lock:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def child():
        with lock:
            send.send("acquired")

    process = context.Process(target=child)
    process.start()
    try:
        assert receive.poll(20) and receive.recv() == "acquired"
    finally:
        process.kill()
        process.join()
        release.set()
        holder.join()


# --- S3 (moto's server) -------------------------------------------------------------------------


def test_every_record_once_from_s3_alone_and_with_workers(s3_url, local):
    assert labels_of(RecordDataset(s3_url, batch_size=16, augment=None, shuffle=True, seed=1)) == EVERY_ONCE
    dataset = RecordDataset(s3_url + "/", batch_size=16, augment=None, shuffle=True, seed=2)
    assert labels_of(dataset, num_workers=2) == EVERY_ONCE
    decoded = RecordDataset(s3_url, batch_size=32)
    images = [image for image, _ in decoded]
    assert sum(len(batch) for batch in images) == RECORDS and tuple(images[0].shape[1:]) == (3, 224, 224)


def test_reads_are_ranged_windows_and_the_cache_keeps_them(s3_url, tmp_path):
    options = StorageOptions(cache_dir=str(tmp_path / "cache"), cache_mb=1, block_mb=1)
    first = RecordDataset(s3_url, batch_size=16, augment=None, storage=options)
    assert labels_of(first) == EVERY_ONCE
    blocks = list((tmp_path / "cache" / "blocks").rglob("*.*"))
    assert blocks and sum(path.stat().st_size for path in blocks) <= 1 << 20
    again = RecordDataset(s3_url, batch_size=16, augment=None, storage=options, seed=5)
    assert labels_of(again, num_workers=2) == EVERY_ONCE


def cli(capsys, *args) -> tuple[int, str, str]:
    """``recpack ARGS`` in this process (the module's server and environment are here): (status, stdout, stderr)."""
    from recpack.cli import main

    status = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_pack_to_s3_then_info_verify_bench_from_it(s3, listed, capsys):
    url = "s3://data/packed/"
    status, out, err = cli(capsys, "pack", listed, url, "--shards", "3", "--quiet", "--workers", "2")
    assert status == 0 and "s3://data/packed" in out and SECRET not in out + err
    names = [item["Key"] for item in s3.client().list_objects_v2(Bucket="data", Prefix="packed/")["Contents"]]
    assert "packed/recpack.json" in names and "packed/shard-00002.rec" in names
    assert not any(".recpack-pack" in name or name.endswith(".tmp") for name in names)
    manifest = s3.client().get_object(Bucket="data", Key="packed/recpack.json")["Body"].read().decode()
    assert SECRET not in manifest and FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"] not in manifest
    assert labels_of(RecordDataset(url, batch_size=8, augment=None)) == EVERY_ONCE
    assert f"records   {RECORDS} in 3 shards" in cli(capsys, "info", url)[1]
    assert cli(capsys, "verify", url, "--quiet")[1].startswith(f"ok: {RECORDS} records in 3 shards")
    status, out, _ = cli(capsys, "bench", url, "--stages", "raw,decode", "--quiet", "--batch-size", "32")
    assert status == 0 and "\nraw " in out and "\ndecode " in out and "remote dataset" in out
    status, _, err = cli(capsys, "pack", listed, url, "--shards", "3", "--quiet")
    assert status == 1 and "a dataset is already there" in err and "--overwrite" in err


def test_verify_finds_a_damaged_object(s3, local, capsys):
    url = s3.upload_folder(local, "data", "damaged")
    client = s3.client()
    body = bytearray(client.get_object(Bucket="data", Key="damaged/shard-00001.rec")["Body"].read())
    body[len(body) // 2] ^= 0xFF
    client.put_object(Bucket="data", Key="damaged/shard-00001.rec", Body=bytes(body))
    status, _, err = cli(capsys, "verify", url, "--quiet")
    assert status == 1 and err.startswith("recpack: corrupt: shard-00001.rec: ")


def test_the_manifest_is_put_once(s3):
    store = open_store("s3://data/conditional", write=True)
    store.put_bytes("recpack.json", b"{}", if_absent=True)
    with pytest.raises(AlreadyExists):
        store.put_bytes("recpack.json", b"{\"other\": 1}", if_absent=True)
    assert bytes(store.read("recpack.json")) == b"{}"


def test_a_prefix_without_a_dataset_is_one_clear_error(s3, capsys):
    with pytest.raises(IncompleteDatasetError, match=r"^s3://data/nothing: not a recpack dataset \(no recpack.json"):
        RecordDataset("s3://data/nothing")
    status, _, err = cli(capsys, "info", "s3://no-such-bucket/x")
    assert status == 1 and err.startswith("recpack: error: s3://no-such-bucket/x")
    assert err.count("\n") == 1 and SECRET not in err


# --- HTTP with faults ---------------------------------------------------------------------------


@pytest.fixture
def http(local):
    with RangeServer(local.parent) as server:
        yield server


def test_an_epoch_survives_dropped_connections_and_a_spell_of_503(http, local):
    url = f"{http.url}/{local.name}"
    quick = StorageOptions(retry=RetryPolicy(attempts=8, first_delay=0.01, max_delay=0.05))
    dataset = RecordDataset(url, batch_size=16, augment=None, shuffle=True, storage=quick)
    http.faults.unavailable, http.faults.drop_every = 5, 3
    assert labels_of(dataset) == EVERY_ONCE
    assert http.faults.served_503 == 5 and http.faults.dropped >= 2


def test_a_forked_child_leaves_the_parents_connections_alone(http, local):
    """A DataLoader worker replaces the client it inherited; dropping that one there closed the parent's pooled
    connection under it, and the parent's next request waited for its read timeout."""
    import gc

    store = open_store(f"{http.url}/{local.name}", StorageOptions(timeout_s=2, retry=RetryPolicy(attempts=1)))
    first = bytes(store.read(mf_name := "recpack.json", 0, 10))
    context = multiprocessing.get_context("fork")

    def child():
        store.read(mf_name, 0, 10)  # a client of its own, the inherited one set aside
        gc.collect()

    process = context.Process(target=child)
    process.start()
    process.join()
    assert process.exitcode == 0 and bytes(store.read(mf_name, 0, 10)) == first  # StorageError (timeout) before


def test_a_server_that_stays_down_fails_after_the_budget(http, local):
    url = f"{http.url}/{local.name}"
    quick = StorageOptions(retry=RetryPolicy(attempts=3, first_delay=0.01, max_delay=0.02))
    dataset = RecordDataset(url, batch_size=16, augment=None, storage=quick)
    http.faults.unavailable = 10**6
    with pytest.raises(StorageError, match=r"^http://127\.0\.0\.1:\d+/ds/shard-0000\d\.r(ec|pi)( bytes \d+-\d+)?: "
                                           r"failed 3 times in [\d.]+ s \(the retry budget\), last: .*503"):
        labels_of(dataset)


def test_http_reads_need_no_listing(http, local, capsys):
    url = f"{http.url}/{local.name}"
    assert labels_of(RecordDataset(url, batch_size=30, augment=None), num_workers=2) == EVERY_ONCE
    assert cli(capsys, "verify", url, "--quiet")[0] == 0


# --- HTTPS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def https(local, tmp_path_factory):
    from object_servers import self_signed

    certificate, key = self_signed(tmp_path_factory.mktemp("tls"))
    with RangeServer(local.parent, tls=(certificate, key)) as server:
        server.certificate = certificate
        yield server


def test_https_reads_with_the_servers_certificate_trusted(https, local):
    """The CA bundle from the standard place (``SSL_CERT_FILE``, read by OpenSSL in a fresh process)."""
    url = f"{https.url}/{local.name}"
    trusted = {**os.environ, "SSL_CERT_FILE": str(https.certificate)}
    assert run_cli("verify", url, "--quiet", env=trusted).stdout.startswith(f"ok: {RECORDS} records in 4 shards")
    read = ("from collections import Counter; import sys; from recpack import RecordDataset; "
            "d = RecordDataset(sys.argv[1], batch_size=16, augment=None, shuffle=True); "
            "print(sorted(Counter(int(l) for _, ls in d for l in ls).items()) == [(i, 1) for i in range(int(sys.argv[2]))])")
    result = subprocess.run([sys.executable, "-c", read, url, str(RECORDS)], capture_output=True, text=True, env=trusted)
    assert result.stdout.strip() == "True", result.stderr


def test_an_untrusted_certificate_fails_at_once_in_one_line(https, local):
    """A certificate that does not verify is not a transient failure: no retries, one line naming the URL."""
    url = f"{https.url}/{local.name}?token=secret-query"
    before = https.faults.requests
    result = run_cli("info", url, check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"recpack: error: {https.url}/{local.name}") and "secret-query" not in result.stderr
    assert "certificate" in result.stderr.lower() and "failed 8 times" not in result.stderr
    assert https.faults.requests == before  # the handshake failed: no request reached the server
