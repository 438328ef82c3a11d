"""A training loop in its own process, for the fault and endurance tests; prints one JSON line of findings.

    python reading_child.py endure DATASET MODE STEPS        # epochs until STEPS batches; RSS and leaks
    python reading_child.py ends DATASET MODE                # leaks after an epoch, and after one abandoned
    python reading_child.py fault DATASET MODE FAULT         # kill-worker | transform-error | transform-valueerror
    python reading_child.py forever DATASET MODE             # read until interrupted, printing 'step' per batch
    python reading_child.py limited DATASET MB               # one epoch with RLIMIT_AS = now + MB

MODE is ``threads`` (the dataset iterated in this process) or ``workers`` (a DataLoader with two).
"""

from __future__ import annotations

import gc
import json
import os
import resource
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import process_resources as pr  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from recpack import Augment, ReadOptions, RecordDataset  # noqa: E402

BATCH = 16


def dataset(path: str, **options) -> RecordDataset:
    return RecordDataset(path, batch_size=BATCH, augment=Augment(size=32), **options)


def loader_of(data: RecordDataset, mode: str, persistent: bool = False):
    if mode == "threads":
        return data
    return DataLoader(data, batch_size=None, num_workers=2, persistent_workers=persistent)


def settled() -> dict:
    """This process's resources once whatever was dropped has been collected and its threads have ended."""
    gc.collect()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # threads and workers being shut down take a moment to go
        now = pr.snapshot()
        if not now["children"]:
            break
        time.sleep(0.05)
    time.sleep(0.2)
    return pr.snapshot()


def warm(data: RecordDataset, mode: str) -> None:
    """One batch through the same path, dropped: torch sets up its lazily made state (threads, caches) once.

    Whatever recpack opens for it must be given back too (the baseline is taken after), so the
    warm-up hides no leak of recpack's: ``ends`` checks that, without a warm-up.
    """
    iterator = iter(loader_of(data, mode))
    batch = next(iterator)
    del batch, iterator


def endure(path: str, mode: str, steps: int) -> dict:
    data = dataset(path)
    warm(data, mode)
    before = settled()
    loader = loader_of(data, mode, persistent=True)
    done, epochs, after_first, workers = 0, 0, None, []
    while done < steps:
        data.set_epoch(epochs)
        iterator = iter(loader)
        for batch in iterator:
            done += 1
            del batch  # a batch held is memory held (a worker's is shared memory): the loop lets go of each
        epochs += 1
        workers = workers or pr.children_of(os.getpid())  # persistent: the same two all along
        after_first = after_first or [pr.status_kb(pid, "VmHWM") for pid in [os.getpid(), *workers]]
        del iterator
    last = [pr.status_kb(pid, "VmHWM") for pid in [os.getpid(), *workers]]
    del loader
    return {"steps": done, "epochs": epochs, "first": after_first, "last": last,
            "leaks": pr.leaks(before, settled())}


def ends(path: str, mode: str) -> dict:
    """What the process holds after one whole epoch (nothing before it), and after one abandoned mid-way."""
    data = dataset(path)
    before = settled()
    for batch in loader_of(data, mode):
        del batch
    over = settled()
    iterator = iter(loader_of(data, mode))
    for _ in range(3):
        batch = next(iterator)
    del batch, iterator  # the loop broken out of, mid-epoch
    return {"over": pr.leaks(before, over), "abandoned": pr.leaks(over, settled())}


class Bug(Exception):
    """What a user's transform raises."""


def fault(path: str, mode: str, kind: str) -> dict:
    calls = {"n": 0}

    def transform(image):
        calls["n"] += 1
        if calls["n"] == 20:
            raise (ValueError if kind == "transform-valueerror" else ZeroDivisionError)("user bug in transform")
        return image

    data = dataset(path, transform=transform if kind.startswith("transform") else None,
                   on_error="skip" if kind == "transform-valueerror" else "raise")
    if kind == "kill-worker":
        warm(data, mode)
    before = settled()
    iterator = iter(loader_of(data, mode))
    started, error, victim, handover = time.monotonic(), None, None, False
    try:
        try:
            for step, batch in enumerate(iterator):
                del batch  # held, a worker's batch would hold its shared memory
                if kind == "kill-worker" and step == 2:
                    victim = pr.children_of(os.getpid())[0]
                    os.kill(victim, signal.SIGKILL)
                    started = time.monotonic()
        except Exception as caught:  # noqa: BLE001 -- reported to the test, which checks its type and words
            seconds = time.monotonic() - started
            error, handover = f"{type(caught).__name__}: {caught}", in_handover(caught)
            # dropping both at once (the traceback holds the iterator) shuts the workers and torch's SIGCHLD handler down
            del caught, iterator
    except RuntimeError as late:  # that handler, raising at any point, reported the dead worker again first
        seconds = time.monotonic() - started
        error = error or f"{type(late).__name__}: {late}"
        iterator = None
    else:
        seconds = time.monotonic() - started
    return {"error": error, "seconds": seconds, "victim": victim, "handover": handover,
            "leaks": pr.leaks(before, settled())}


def in_handover(error: BaseException) -> bool:
    """Whether torch raised it handing a worker's batch over (a socket to that worker: killed, it fails)."""
    frame = error.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_name == "rebuild_storage_fd":
            return True
        frame = frame.tb_next
    return False


def forever(path: str, mode: str) -> None:
    data = dataset(path)
    loader = loader_of(data, mode)
    epoch = 0
    while True:
        data.set_epoch(epoch)
        for _ in loader:
            print("step", flush=True)
        epoch += 1


def limited(path: str, megabytes: int) -> dict:
    """One epoch when the address space may grow by ``megabytes`` only (set after torch and the index are in)."""
    data = RecordDataset(path, batch_size=BATCH, augment=Augment(size=32),
                         read=ReadOptions(shuffle_buffer=32, window=16, threads=2, readahead_mb=32))
    next(iter(data))  # torch's and the decoder's own setup, outside the limit
    ceiling = (pr.status_kb(os.getpid(), "VmSize") << 10) + (megabytes << 20)
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
    records = sum(len(labels) for _, labels in data)
    return {"records": records, "peak_rss_kb": pr.status_kb(os.getpid(), "VmHWM")}


def main(argv: list[str]) -> None:
    command, path, *rest = argv
    if command == "endure":
        result = endure(path, rest[0], int(rest[1]))
    elif command == "ends":
        result = ends(path, rest[0])
    elif command == "fault":
        result = fault(path, rest[0], rest[1])
    elif command == "forever":
        forever(path, rest[0])
        return
    else:
        result = limited(path, int(rest[0]))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
