"""Ray: one remote task per shard range, retried by Ray (``max_retries``, application errors included)."""

from __future__ import annotations

import socket
from typing import Any

from ...errors import PackError
from .contract import Failures, RangeTask

TASK_DEFAULTS = {"num_cpus": 1, "max_retries": 3, "retry_exceptions": True}
LOCAL_DEFAULTS = {"include_dashboard": False, "object_store_memory": 128 << 20}  # a cluster started here, for packing


def run(out_dir: str, ranges: list[tuple[int, int]], conf: dict[str, Any], task: RangeTask) -> Failures:
    """Run every range as a Ray task and wait for all of them; the ranges whose last attempt failed.

    ``conf`` keys ``task.NAME`` are the tasks' options (``task.max_retries=5``,
    ``task.num_cpus=2``); the others go to ``ray.init`` (``address=auto`` joins
    a running cluster; without it a local one is started and shut down after).
    A Ray already initialised in this process is used as it is.  Every task
    runs to its end even when one fails, so a rerun has only the failed left.
    """
    import ray

    task_options = TASK_DEFAULTS | {key[5:]: value for key, value in conf.items() if key.startswith("task.")}
    init = {key: value for key, value in conf.items() if not key.startswith("task.")}
    started = not ray.is_initialized()
    if started:
        _check_reachable(init.get("address"))
        try:
            ray.init(**((LOCAL_DEFAULTS if "address" not in init else {}) | init))
        except Exception as error:  # a cluster that does not answer, an unknown argument
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise PackError(f"ray: ray.init failed ({type(error).__name__}: {first}); check --engine-conf") from None
    try:
        remote = ray.remote(task).options(**task_options)
        refs = {remote.remote(out_dir, first, stop): (first, stop) for first, stop in ranges}
        failures: Failures = {}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    ray.get(ref)
                except Exception as error:  # RayTaskError (wrapping the task's), WorkerCrashedError, ...
                    failures[refs[ref]] = _reason(error)
        return failures
    finally:
        if started:
            ray.shutdown()


CONNECT_SECONDS = 10.0  # to open a TCP connection to a cluster's address before handing it to Ray


def _check_reachable(address: str | None) -> None:
    """Refuse a ``host:port`` (or ``ray://host:port``) address nothing answers at, in one line.

    Why: ``ray.init`` retries an unreachable cluster for many minutes, ignoring
    Ctrl-C and SIGTERM.  ``auto``, ``local`` and no address are Ray's to resolve.
    """
    if not address or address in ("auto", "local"):
        return
    where = str(address).removeprefix("ray://")
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise PackError(f"ray: address {address!r} is not host:port (or auto); check --engine-conf")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as error:
        raise PackError(f"ray: nothing answers at {address} ({error.strerror or error}); "
                        "is the cluster up? check --engine-conf address=") from None


def _reason(error: Exception) -> str:
    """The task's own exception, when Ray wrapped one; else Ray's first line."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, Exception):
        return f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"[:300]
