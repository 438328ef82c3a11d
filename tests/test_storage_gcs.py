"""Datasets at gs:// URLs (#16), against a real GCS JSON-API server on 127.0.0.1: gcp-storage-emulator, in memory,
reached by gcsfs through ``STORAGE_EMULATOR_HOST`` with anonymous credentials.  The same properties as the S3
tests: every record once per epoch (alone and in DataLoader workers), a pack to the bucket byte-identical to a
local one, one clear line for a missing dataset or bucket, and no credential in any message."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("gcsfs")
pytest.importorskip("gcp_storage_emulator")

import test_storage  # noqa: E402
from conftest import run_cli  # noqa: E402
from object_servers import GCSServer, environment  # noqa: E402
from test_storage import EVERY_ONCE, RECORDS, cli, labels_of  # noqa: E402

from recpack import RecordDataset  # noqa: E402
from recpack.errors import IncompleteDatasetError, StorageError  # noqa: E402
from recpack.storage.retry import RetryPolicy  # noqa: E402
from recpack.storage.store import AlreadyExists, StorageOptions, open_store  # noqa: E402

# the S3 tests' images (labels name their records) and their local pack, made again for this module
listed, local = test_storage.listed, test_storage.local


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    with GCSServer() as server, environment(server.environment(str(tmp_path_factory.mktemp("gcloud")))):
        server.bucket("data")
        yield server


@pytest.fixture(scope="module")
def gs_url(gcs, local) -> str:
    return gcs.upload_folder(local, "data", "uploaded")


def test_the_emulator_listens_on_loopback_only(gcs):
    assert gcs.endpoint.startswith("http://127.0.0.1:")
    assert gcs._server.server_address[0] == "127.0.0.1"


def test_every_record_once_from_gcs_alone_and_with_workers(gs_url):
    assert labels_of(RecordDataset(gs_url, batch_size=16, augment=None, shuffle=True, seed=1)) == EVERY_ONCE
    dataset = RecordDataset(gs_url + "/", batch_size=16, augment=None, shuffle=True, seed=2)
    assert labels_of(dataset, num_workers=2) == EVERY_ONCE  # each worker builds its own gcsfs client after the fork


def test_the_block_cache_serves_gcs_reads_in_workers(gs_url, tmp_path):
    options = StorageOptions(cache_dir=str(tmp_path / "cache"), cache_mb=1, block_mb=1)
    assert labels_of(RecordDataset(gs_url, batch_size=16, augment=None, storage=options)) == EVERY_ONCE
    assert list((tmp_path / "cache" / "blocks").rglob("*.*"))
    again = RecordDataset(gs_url, batch_size=16, augment=None, storage=options, seed=5)
    assert labels_of(again, num_workers=2) == EVERY_ONCE


def test_ranged_reads_return_exactly_the_range(gcs, gs_url, local):
    store = open_store(gs_url)
    data = (local / "shard-00001.rec").read_bytes()
    assert bytes(store.read("shard-00001.rec", 100, 1_000)) == data[100:1_000]
    assert bytes(store.read("shard-00001.rec")) == data
    assert store.size("shard-00001.rec") == len(data)
    assert "recpack.json" in store.list() and "shard-00003.rec" in store.list()
    assert bytes(open_store(gs_url.replace("gs://", "gcs://")).read("shard-00001.rec", 7, 70)) == data[7:70]


def test_pack_to_gcs_is_byte_identical_and_info_verify_read_it(gcs, listed, local, capsys):
    url = "gs://data/packed/"
    status, out, err = cli(capsys, "pack", listed, url, "--shards", "4", "--quiet", "--workers", "2")
    assert status == 0 and "gs://data/packed" in out, err
    client = gcs.client()
    names = sorted(path[len("data/packed/"):] for path in client.find("data/packed"))
    expected = sorted(path.relative_to(local).as_posix() for path in local.rglob("*")
                      if path.is_file() and path.name != "lock.mdb")
    assert names == expected  # nothing of the staging folder, no .tmp
    manifest = client.cat_file("data/packed/recpack.json").decode()
    assert gcs.endpoint not in manifest and "127.0.0.1" not in manifest and "gcloud" not in manifest
    for name in names:
        if name.endswith((".rec", ".idx", ".rpi")):
            assert client.cat_file(f"data/packed/{name}") == (local / name).read_bytes(), name
    assert labels_of(RecordDataset(url, batch_size=8, augment=None)) == EVERY_ONCE
    assert f"records   {RECORDS} in 4 shards" in cli(capsys, "info", url)[1]
    assert cli(capsys, "verify", url, "--quiet")[1].startswith(f"ok: {RECORDS} records in 4 shards")
    status, out, _ = cli(capsys, "bench", url, "--stages", "raw", "--quiet", "--batch-size", "32")
    assert status == 0 and "\nraw " in out and "remote dataset" in out
    status, _, err = cli(capsys, "pack", listed, url, "--shards", "4", "--quiet")
    assert status == 1 and "a dataset is already there" in err and "--overwrite" in err


def test_the_cli_in_its_own_process_reads_gcs(gs_url):
    """As a user runs it: a fresh process, gcsfs's credential chain from scratch (anonymous here)."""
    assert run_cli("info", gs_url).stdout.count(f"records   {RECORDS} in 4 shards") == 1
    assert run_cli("verify", gs_url, "--quiet").stdout.startswith(f"ok: {RECORDS} records in 4 shards")


def test_the_manifest_is_put_once(gcs):
    store = open_store("gs://data/conditional", write=True)
    store.put_bytes("recpack.json", b"{}", if_absent=True)
    with pytest.raises(AlreadyExists, match=r"^gs://data/conditional/recpack.json: already exists$"):
        store.put_bytes("recpack.json", b"{\"other\": 1}", if_absent=True)
    assert bytes(store.read("recpack.json")) == b"{}"


def test_the_manifest_put_asks_the_server_for_the_condition(gcs):
    """The put itself carries ``ifGenerationMatch=0``: on GCS two writers cannot both publish (see the next test)."""
    store = open_store("gs://data/asks", write=True)
    gcs.requests.clear()
    store.put_bytes("recpack.json", b"{}", if_absent=True)
    uploads = [path for method, path in gcs.requests if method == "POST" and "/upload/" in path]
    assert len(uploads) == 1 and "ifGenerationMatch=0" in uploads[0]  # the name travels in the multipart body
    gcs.requests.clear()
    store.put_bytes("other.json", b"{}")
    assert not any("ifGenerationMatch" in path for _, path in gcs.requests)


def test_a_writer_that_loses_the_race_is_told_so(gcs):
    """Another writer's manifest lands between the check and the put: GCS answers the conditional put with 412,
    which recpack reports as AlreadyExists (the emulator does not: the 412 here is the test server's)."""
    store = open_store("gs://data/lost", write=True)
    gcs.failing_uploads[:] = [(412, "At least one of the pre-conditions you specified did not hold.")]
    with pytest.raises(AlreadyExists, match=r"^gs://data/lost/recpack.json: already exists$"):
        store.put_bytes("recpack.json", b"{}", if_absent=True)
    assert not gcs.failing_uploads and not gcs.client().exists("data/lost/recpack.json")


def test_a_resumable_upload_then_ranged_reads(gcs, tmp_path):
    """Files of 5 MB and more go up as resumable uploads (gcsfs); a shard's bytes come back exactly, by range."""
    data = os.urandom(6 << 20)
    (tmp_path / "big.rec").write_bytes(data)
    store = open_store("gs://data/resumable", write=True)
    gcs.requests.clear()
    store.put_file(str(tmp_path / "big.rec"), "big.rec")
    assert any("uploadType=resumable" in path for _, path in gcs.requests)
    assert store.size("big.rec") == len(data)
    for start, end in [(0, 1), (5 << 20, (5 << 20) + 4097), (len(data) - 10, len(data))]:
        assert bytes(store.read("big.rec", start, end)) == data[start:end]


@pytest.mark.slow
def test_a_resumable_upload_in_several_chunks(gcs, tmp_path):
    """gcsfs sends 50 MB chunks: 120 MB is three PUTs to one upload session."""
    data = os.urandom(120 << 20)
    (tmp_path / "huge.rec").write_bytes(data)
    store = open_store("gs://data/chunks", write=True)
    store.put_file(str(tmp_path / "huge.rec"), "huge.rec")
    assert store.size("huge.rec") == len(data)
    assert bytes(store.read("huge.rec", (50 << 20) - 5, (50 << 20) + 5)) == data[(50 << 20) - 5:(50 << 20) + 5]
    assert bytes(store.read("huge.rec")) == data


def test_a_racing_writer_is_refused_by_the_server(gcs):
    """Past the check (another writer put the manifest in between), GCS itself refuses: ifGenerationMatch=0."""
    store = open_store("gs://data/race", write=True)
    store.client().pipe_file("data/race/recpack.json", b"{}")
    try:
        store.client().pipe_file("data/race/recpack.json", b"{\"other\": 1}", mode="create")
    except FileExistsError:
        return
    pytest.skip("gcp-storage-emulator ignores ifGenerationMatch=0 (it overwrote the object): that GCS refuses a "
                "racing writer is not shown here; recpack's check, its request for the condition and its reading of "
                "GCS's 412 are (tests above)")


def test_a_missing_dataset_or_bucket_is_one_line_naming_the_url(gcs, capsys):
    with pytest.raises(IncompleteDatasetError, match=r"^gs://data/nothing: not a recpack dataset \(no recpack.json"):
        RecordDataset("gs://data/nothing")
    status, _, err = cli(capsys, "info", "gs://no-such-bucket/x")
    assert status == 1 and err.startswith("recpack: error: gs://no-such-bucket/x") and err.count("\n") == 1, err
    status, _, err = cli(capsys, "verify", "gs://data/nothing/", "--quiet")
    assert status == 1 and err.startswith("recpack: ") and "gs://data/nothing" in err and err.count("\n") == 1, err


def test_no_credential_reaches_a_message(gcs, tmp_path):
    """A credential file in the standard variable (one google-auth cannot use: gcsfs goes on to anonymous) shows
    neither its path nor its contents in a failure's message."""
    secret = "recpack-fake-private-key-0123456789"
    secret_file = tmp_path / "very-secret-adc-file.json"
    secret_file.write_text(json.dumps({"type": "service_account", "client_email": "x@example.iam.gserviceaccount.com",
                                       "private_key": secret, "token_uri": "http://127.0.0.1:9/token"}))
    with environment({"GOOGLE_APPLICATION_CREDENTIALS": str(secret_file)}):
        result = subprocess.run([sys.executable, "-m", "recpack", "info", "gs://no-such-bucket/x"],
                                capture_output=True, text=True, env=os.environ.copy(), check=False)
    shown = result.stdout + result.stderr
    assert result.returncode == 1 and str(secret_file) not in shown and secret not in shown
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("recpack: error: gs://no-such-bucket/x"), shown


QUICK = {"retry": RetryPolicy(attempts=6, first_delay=0.01, max_delay=0.05)}


def test_an_epoch_rides_out_503_502_429_and_408(gcs, gs_url):
    """GCS's transient answers, each through gcsfs's own exception (HttpError; requests' ProxyError for a 502)."""
    dataset = RecordDataset(gs_url, batch_size=16, augment=None, shuffle=True, storage=StorageOptions(**QUICK))
    gcs.failed = 0
    gcs.failing[:] = [(503, "Service Unavailable")] * 3 + [(502, "Bad Gateway"), (429, "Too Many Requests"),
                                                           (408, "Request Timeout")]
    assert labels_of(dataset) == EVERY_ONCE
    assert gcs.failed == 6 and not gcs.failing


def test_a_refused_token_rebuilds_the_client_and_a_denial_fails_at_once(gcs, gs_url):
    """401 "Invalid Credentials" is GCS's expired token: a new client (credentials read anew), then the same
    request again.  403 is final: one line naming the object, no second try."""
    store = open_store(gs_url, StorageOptions(**QUICK))
    first = store.client()
    gcs.failing[:] = [(401, "Invalid Credentials")]
    assert bytes(store.read("recpack.json", 0, 1)) == b"{"
    assert store.client() is not first and not gcs.failing
    gcs.requests.clear()
    gcs.failing[:] = [(403, "recpack-test@example.iam.gserviceaccount.com does not have storage.objects.get")]
    with pytest.raises(StorageError) as caught:
        store.read("recpack.json", 0, 1)
    gcs.failing.clear()
    assert len(gcs.requests) == 1
    message = str(caught.value)
    assert message.startswith("gs://data/uploaded/recpack.json bytes 0-0: OSError: Forbidden: ") and "\n" not in message


def test_one_attempt_is_one_request(gcs, gs_url):
    """gcsfs's own retries (6 tries, waits of up to 32 s) are off: recpack's budget is the only one."""
    store = open_store(gs_url, StorageOptions(retry=RetryPolicy(attempts=1)))
    gcs.requests.clear()
    gcs.failing[:] = [(503, "Service Unavailable")] * 2
    with pytest.raises(StorageError, match=r"failed 1 times .* HttpError: Service Unavailable, 503"):
        store.read("recpack.json", 0, 1)
    gcs.failing.clear()
    assert len(gcs.requests) == 1


def test_a_server_that_is_gone_fails_after_the_budget_naming_the_object(gcs, gs_url):
    """gcsfs's own retries are off (one budget: recpack's): a refused connection ends in one line, quickly."""
    with socket_closed() as endpoint, environment({"STORAGE_EMULATOR_HOST": endpoint}):
        quick = StorageOptions(retry=RetryPolicy(attempts=3, first_delay=0.01, max_delay=0.02), timeout_s=5)
        store = open_store("gs://data/uploaded", quick)
        with pytest.raises(StorageError, match=r"^gs://data/uploaded/recpack.json bytes 0-9: failed 3 times in "
                                               r"[\d.]+ s \(the retry budget\), last: "):
            store.read("recpack.json", 0, 10)


class socket_closed:
    """An endpoint on 127.0.0.1 where nothing listens (a port bound, then released)."""

    def __enter__(self) -> str:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        pass
