"""GCS through gcsfs's JSON-API client: the store behind ``gs://`` (and ``gcs://``) URLs.

Three choices differ from fsspec's defaults, each for a reason:

- ``gcsfs.core.GCSFileSystem``, not the ``ExtendedGcsFileSystem`` that
  ``fsspec.filesystem("gs")`` gives since gcsfs 2025: that one first asks the
  storage-control API (gRPC) for every bucket's layout, per process, and logs a
  warning on each request it cannot ask; recpack needs plain objects only.
- One try per request: gcsfs retries each request up to 6 times (waits of up to
  32 s) under its own ``retry_request``; ``retry.with_retries`` is the one budget,
  so the undecorated request is used.
- No listing cache: a check for the manifest must see what another writer put.

Credentials come from gcsfs's standard chain (application default credentials,
gcloud's, the GCE metadata server, else anonymous); ``STORAGE_EMULATOR_HOST`` points
it at an emulator.  The manifest's commit is ``ifGenerationMatch=0`` (the server
refuses a name that exists: 412), after a check that also catches it where a
server ignores the condition.
"""

from __future__ import annotations

import functools

from .remote import RemoteStore


@functools.cache
def _one_try_filesystem():
    """``GCSFileSystem`` whose ``_request`` is tried once (gcsfs's retry decorator keeps the original as
    ``__wrapped__``; where a gcsfs has none, its own retries stay)."""
    from gcsfs.core import GCSFileSystem

    single = getattr(GCSFileSystem._request, "__wrapped__", None)
    if single is None:
        return GCSFileSystem
    return type("OneTryGCSFileSystem", (GCSFileSystem,), {"_request": single})


class GCSStore(RemoteStore):
    """``gs://bucket/prefix``: ranged GETs, metadata, listing and (conditional) puts, one request per call."""

    def _new_client(self):
        import aiohttp

        timeout = self.options.timeout_s
        return _one_try_filesystem()(
            skip_instance_cache=True, use_listings_cache=False,
            requests_timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout))

    def _put(self, url, data, if_absent):
        if if_absent and self._exists(url):
            raise FileExistsError(url)
        # mode="create": ifGenerationMatch=0, a 412 from GCS (gcsfs: FileExistsError) if another writer won
        self.client().pipe_file(url, data, mode="create" if if_absent else "overwrite")
