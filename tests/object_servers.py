"""Real servers for the storage tests, each on 127.0.0.1 with an ephemeral port, started and stopped by the tests.

``S3Server``: moto in server mode, an S3-compatible endpoint; fake credentials
go into the environment of the test process only (and its children).
``GCSServer``: gcp-storage-emulator (pure Python, the GCS JSON API) in memory; gcsfs finds it through
``STORAGE_EMULATOR_HOST`` and, with no Google credentials anywhere standard, talks to it anonymously.
``RangeServer``: a folder over HTTP with byte ranges (``Range: bytes=a-b``, 206),
and faults on request: a number of 503 answers first, a connection dropped in
the middle of a body every n-th ranged answer.  It counts what it served.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import re
import socket
import threading
from contextlib import contextmanager
from pathlib import Path

FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "recpacktestkeyid", "AWS_SECRET_ACCESS_KEY": "recpack-test-secret-value-0001",
                    "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server:
    def __init__(self):
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)

    def __enter__(self) -> "S3Server":
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop()

    def environment(self) -> dict[str, str]:
        """What a process needs to reach this server: the endpoint and fake credentials (the standard variables)."""
        return {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def upload_folder(self, folder: Path, bucket: str, prefix: str) -> str:
        client = self.client()
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and path.name != "lock.mdb":
                client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
        return f"s3://{bucket}/{prefix}"


class _ServedInThread:
    """An HTTP server of the standard library, served on a daemon thread for the length of a ``with`` block."""

    def _serve_in_thread(self, server) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class GCSServer(_ServedInThread):
    """``with GCSServer() as server: server.bucket("data")``; ``server.environment()`` points gcsfs at it.

    The emulator's own ``Server`` takes a port but never tells which one port 0 became, and its
    HTTPServer keeps a listen backlog of 5 (more concurrent connects wait a second for a SYN retry):
    so its request handler and storage are served here by an HTTPServer with a deeper backlog, one
    request at a time, as the emulator does (its storage has no lock).  ``requests`` records what was
    asked; ``failing`` holds answers of GCS's error shape to give the next requests instead.
    """

    def __init__(self):
        from functools import partial

        from gcp_storage_emulator.server import RequestHandler
        from gcp_storage_emulator.storage import Storage

        logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)
        self.storage = Storage(use_memory_fs=True)
        self.requests: list[tuple[str, str]] = []  # (method, path with query), in the order served
        self.failing: list[tuple[int, str]] = []  # answer the next requests with these (status, message), in turn
        self.failing_uploads: list[tuple[int, str]] = []  # the same, for the next uploads only
        self.failed = 0
        server = self

        class Recording(RequestHandler):
            def parse_request(self) -> bool:
                if not super().parse_request():
                    return False
                server.requests.append((self.command, self.path))
                upload = "/upload/" in self.path and bool(server.failing_uploads)
                failing = server.failing_uploads if upload else server.failing
                if not failing:
                    return True
                status, message = failing.pop(0)
                server.failed += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.dumps({"error": {"code": status, "message": message}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True
                return False  # the emulator never sees it

        self._serve_in_thread(_QuietServer(("127.0.0.1", 0), partial(Recording, self.storage)))
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def environment(self, config_dir: str) -> dict[str, str]:
        """gcsfs's standard places, aimed here: the emulator's endpoint, no GCE metadata probe (it would wait for
        169.254.169.254), and an empty gcloud config folder (this machine's own gcloud login is never used)."""
        return {"STORAGE_EMULATOR_HOST": self.endpoint, "NO_GCE_CHECK": "true", "CLOUDSDK_CONFIG": config_dir,
                "GOOGLE_APPLICATION_CREDENTIALS": ""}

    def client(self):
        """A gcsfs client of the emulator, anonymous, for filling and inspecting buckets."""
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(token="anon", endpoint_url=self.endpoint, skip_instance_cache=True,
                             use_listings_cache=False)

    def bucket(self, name: str) -> str:
        self.client().mkdir(name)
        return name

    def upload_folder(self, folder: Path, bucket: str, prefix: str) -> str:
        client = self.client()
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and path.name != "lock.mdb":
                client.put_file(str(path), f"{bucket}/{prefix}/{path.relative_to(folder).as_posix()}")
        return f"gs://{bucket}/{prefix}"


class _QuietServer(http.server.HTTPServer):
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):  # a client that hung up
            super().handle_error(request, client_address)


_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class _Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.unavailable = 0  # answer this many more requests with 503
        self.drop_every = 0  # drop the connection halfway through every n-th ranged body (0: never)
        self.ranged = 0
        self.requests = 0
        self.served_503 = 0
        self.dropped = 0
        self.bytes = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root: Path
    faults: _Faults

    def log_message(self, *args) -> None:  # quiet
        pass

    def _file(self) -> Path | None:
        path = (self.root / self.path.split("?")[0].lstrip("/")).resolve()
        return path if path.is_file() and self.root in path.parents else None

    def _refuse(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        faults = self.faults
        with faults.lock:
            faults.requests += 1
            if faults.unavailable > 0:
                faults.unavailable -= 1
                faults.served_503 += 1
                self._refuse(503)
                return
        path = self._file()
        if path is None:
            self._refuse(404)
            return
        size = path.stat().st_size
        match = _RANGE.fullmatch(self.headers.get("Range", ""))
        start, end = 0, size
        if match:
            start = int(match.group(1))
            end = min(size, int(match.group(2)) + 1) if match.group(2) else size
            if start >= size:
                self._refuse(416)
                return
        self.send_response(206 if match else 200)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        if match:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if not body:
            return
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read(end - start)
        drop = False
        if match:
            with faults.lock:
                faults.ranged += 1
                drop = faults.drop_every > 0 and faults.ranged % faults.drop_every == 0 and len(data) > 1
                faults.dropped += drop
        if drop:  # half the body, then the connection goes: the client sees a short, broken answer
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(data)
        with faults.lock:
            faults.bytes += len(data)


class RangeServer(_ServedInThread):
    """``with RangeServer(folder) as server: server.url`` serves ``folder`` at ``http://127.0.0.1:PORT``;
    with ``tls=(certificate, key)`` (files, ``self_signed``) at ``https://127.0.0.1:PORT``."""

    def __init__(self, root: Path, tls: tuple[Path, Path] | None = None):
        self.faults = _Faults()
        handler = type("Handler", (_Handler,), {"root": Path(root).resolve(), "faults": self.faults})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        if tls is not None:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self._server.server_address[1]}"
        self._serve_in_thread(self._server)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key, valid for a day: (certificate file, key file)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "recpack test server")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    cert_path, key_path = Path(folder) / "server.pem", Path(folder) / "server.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@contextmanager
def environment(values: dict[str, str]):
    """Set environment variables for the block, then put back what was there."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
