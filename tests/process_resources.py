"""What a process holds that a reader could leak: file descriptors, threads, child processes, shared memory.

Imported by the fault and endurance tests and by the child processes they run (Linux: read from /proc).
"""

from __future__ import annotations

import os


def children_of(pid: int) -> list[int]:
    """Live (not zombie) child processes of ``pid``."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            found = [int(child) for child in handle.read().split()]
    except FileNotFoundError:
        return []
    return [child for child in found if _state(child) not in ("Z", None)]


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def in_group(group: int) -> list[int]:
    """Live processes of a process group (what a killed or interrupted job must not leave behind)."""
    live = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[2]) == group:
            live.append(int(entry))
    return live


def status_kb(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` figure in kB (VmRSS, VmHWM, VmSize...)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def snapshot(pid: int | None = None) -> dict:
    """Descriptors (by what they point at), threads, live children and torch's named shared memory of a process."""
    pid = pid or os.getpid()
    fds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # the listing's own descriptor, closed meanwhile
            continue
    shm = sorted(name for name in os.listdir("/dev/shm") if name.startswith(f"torch_{pid}_"))
    return {"fds": fds, "threads": len(os.listdir(f"/proc/{pid}/task")), "children": children_of(pid), "shm": shm}


def leaks(before: dict, after: dict) -> dict:
    """What ``after`` holds that ``before`` did not (empty: nothing leaked)."""
    found = {}
    extra_fds = {fd: target for fd, target in after["fds"].items() if before["fds"].get(fd) != target}
    if extra_fds:
        found["fds"] = extra_fds
    if after["threads"] > before["threads"]:
        found["threads"] = after["threads"] - before["threads"]
    if after["children"]:
        found["children"] = after["children"]
    if set(after["shm"]) - set(before["shm"]):
        found["shm"] = sorted(set(after["shm"]) - set(before["shm"]))
    return found


def memory_spill_bytes(pid: int) -> int:
    """Bytes in the memory spill files process ``pid`` holds (0: none, or it has ended)."""
    total = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:recpack-spill"):
                    total += os.stat(f"/proc/{pid}/fd/{fd}").st_size
            except OSError:
                pass
    except OSError:
        pass
    return total
