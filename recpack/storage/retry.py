"""Retries with exponential backoff and full jitter: the one place recpack retries a store's request.

The backends' own retry loops are turned off (``store``), so that one budget,
stated here, bounds how long a failing store is tried: ``attempts`` tries, the
k-th wait drawn uniformly from [0, min(max_delay, first_delay x 2^k)] so that
many workers that failed together do not come back together.

What is worth another try (``transient``): a connection refused, reset or dropped
mid-body, a timeout, a short read, HTTP 5xx, 408, 429 and S3's throttling codes, and
an expired token (S3's codes, GCS's 401 "Invalid Credentials"; the client is then
rebuilt, which reads the credentials anew).
A missing object, a denied request, a server certificate that does not verify or a bad
argument fails at once.
"""

from __future__ import annotations

import random
import ssl
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from ..errors import StorageError
from .urls import shown

T = TypeVar("T")

_THROTTLING = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
               "RequestThrottled", "ServiceUnavailable", "InternalError", "RequestTimeout", "BandwidthLimitExceeded"}
_EXPIRED = {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired", "InvalidToken"}
# exception classes (by name: the backends are optional imports) that mean the connection failed
_CONNECTION_FAILURES = {
    "ClientPayloadError", "ServerDisconnectedError", "ClientConnectionError", "ClientOSError", "ServerTimeoutError",
    "ClientConnectorError", "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError",
    "ConnectTimeoutError", "IncompleteRead", "ResponseStreamingError", "FSTimeoutError", "ProtocolError",
    "ContentLengthError", "TransferEncodingError",
    "ProxyError",  # gcsfs raises requests' ProxyError for a 502
}


class ShortRead(OSError):
    """A store answered with fewer (or more) bytes than the range asked for: the connection broke."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a request is tried: ``attempts`` tries in all, waits doubling from ``first_delay`` to ``max_delay``.

    The default budget waits at most 0.25 + 0.5 + 1 + 2 + 4 + 8 + 8 = 23.75 s in all (half that on
    average), enough to ride out a store's brief 503s and a restarted connection.
    """

    attempts: int = 8
    first_delay: float = 0.25
    max_delay: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.first_delay < 0 or self.max_delay < 0:
            raise ValueError("RetryPolicy needs attempts >= 1 and delays >= 0")

    def delay(self, retry: int, draw: Callable[[], float] = random.random) -> float:
        """The wait before retry number ``retry`` (0-based): full jitter under the doubling cap."""
        return draw() * min(self.max_delay, self.first_delay * 2**retry)


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _status_and_code(error: BaseException) -> tuple[int | None, str | None]:
    """HTTP status and service error code, from a botocore ClientError's response or an aiohttp response error."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status, response.get("Error", {}).get("Code")
    status = getattr(error, "status", None) or getattr(error, "code", None)
    return (status if isinstance(status, int) else None), None


def _refused_token(error: BaseException) -> bool:
    """GCS's answer to an expired or revoked access token: 401 "Invalid Credentials" (gcsfs's HttpError)."""
    return _status_and_code(error)[0] == 401 and "Invalid Credentials" in str(getattr(error, "message", ""))


def expired(error: BaseException) -> bool:
    """Whether the store refused an expired credential (the client should be rebuilt before the retry)."""
    return any(_status_and_code(link)[1] in _EXPIRED or _refused_token(link) for link in _chain(error))


def transient(error: BaseException) -> bool:
    """Whether another try may succeed (see the module's docstring)."""
    for link in _chain(error):
        if isinstance(link, (FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError,
                             ssl.SSLCertVerificationError)):
            return False
        if type(link).__name__ == "ClientConnectorCertificateError":  # aiohttp's; it names the ssl error, not chains it
            return False
        if _status_and_code(link)[1] in ("PreconditionFailed", "NoSuchKey", "NoSuchBucket", "AccessDenied"):
            return False
        if isinstance(link, (ConnectionError, TimeoutError, ShortRead)):
            return True
        if {cls.__name__ for cls in type(link).__mro__} & _CONNECTION_FAILURES:
            return True
        status, code = _status_and_code(link)
        if code in _THROTTLING or code in _EXPIRED or _refused_token(link) or \
                (status is not None and (status >= 500 or status in (408, 429))):
            return True
    return False


def describe(error: BaseException) -> str:
    """An error in one line, credentials and URL secrets removed."""
    text = " ".join(str(error).split()) or type(error).__name__
    return shown(f"{type(error).__name__}: {text}")[:300]


def with_retries(call: Callable[[], T], what: str, policy: RetryPolicy, *,
                 on_expired: Callable[[], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, tried again after transient failures under ``policy``.

    FileNotFoundError and FileExistsError are answers, raised as they are for
    the caller to word; any other non-transient error is re-raised as a
    StorageError naming ``what``, its message cleared of secrets.  When the budget
    runs out, a StorageError says so, with the last error.
    """
    started = time.monotonic()
    for attempt in range(policy.attempts):
        try:
            return call()
        except (FileNotFoundError, FileExistsError):  # answers, not failures: the caller says what they mean
            raise
        except Exception as error:  # noqa: BLE001  (every backend has its own tree: classified below)
            if not transient(error):
                raise StorageError(f"{shown(what)}: {describe(error)}") from None
            if expired(error) and on_expired is not None:
                on_expired()
            if attempt + 1 == policy.attempts:
                raise StorageError(f"{shown(what)}: failed {policy.attempts} times in {time.monotonic() - started:.1f} s "
                                   f"(the retry budget), last: {describe(error)}") from None
            sleep(policy.delay(attempt))
    raise AssertionError("unreachable")  # the loop returns or raises
