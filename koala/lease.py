"""One run at a time per output: a lease, ``DST/.koala-lease/lease-<n>.json``.

A run takes the output's lease before it plans (compaction rewrites the index) and keeps it
until it ends; a second run into the same output is refused at once, in one line that names the
first (command, host, process, when it started, when it was last seen). The holder renews the
lease every :data:`RENEW_S`; a lease not renewed for :data:`STALE_S` (its run was killed, its
machine lost), or whose process on this host is gone, is stale and the next run takes over.

Taking a lease is an exclusive create of the next number (a hard link locally, a conditional
put on S3), so of two runs that race for it exactly one wins, including over a stale lease.
The same process may take a lease it holds again (the command, then its flow): it is counted.
"""

from __future__ import annotations

import json
import os
import posixpath
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from koala import storage
from koala.errors import KoalaError

#: how often the holder renews its lease (seconds)
RENEW_S = 10.0
#: a lease not renewed for this long is stale: its holder is taken for dead
STALE_S = 120.0
LEASE_DIR = ".koala-lease"


class OutputBusy(KoalaError):
    """Another run holds the output's lease."""


@dataclass
class Lease:
    """A held lease: where, its number and what it says; renewed by a thread until released."""

    output: str
    number: int
    record: dict
    holds: int = 1
    stop: threading.Event = field(default_factory=threading.Event)
    lost: bool = False

    @property
    def uri(self) -> str:
        return _lease_uri(self.output, self.number)

    def renew(self) -> None:
        """Write the lease again with a fresh ``seen`` time, unless a later one has replaced
        it (this run was taken for dead): then it is lost."""
        if _latest(self.output)[0] != self.number:
            self.lost = True
            return
        self.record["seen"] = time.time()
        storage.atomic_write_bytes(self.uri, json.dumps(self.record).encode())

    def release(self) -> None:
        """Give one hold back; the last one stops the renewals and removes the lease."""
        self.holds -= 1
        if self.holds > 0:
            return
        self.stop.set()
        _HELD.pop(_key(self.output), None)
        if not self.lost:
            storage.remove(self.uri)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_HELD: dict[str, Lease] = {}
_LOCK = threading.Lock()


def _key(output: str) -> str:
    return output.rstrip("/")


def _lease_uri(output: str, number: int) -> str:
    return storage.join(output, LEASE_DIR, f"lease-{number:08d}.json")


def _latest(output: str) -> tuple[int, dict | None]:
    """The highest lease number in ``output`` and its record (0, None: none yet)."""
    files = storage.list_files(storage.join(output, LEASE_DIR), "lease-*.json")
    if not files:
        return 0, None
    last = files[-1]
    number = int(posixpath.basename(last)[len("lease-") : -len(".json")])
    try:
        return number, json.loads(storage.read_bytes(last))
    except (FileNotFoundError, ValueError):  # released (or being written) as we looked
        return number, None


def is_stale(record: dict, now: float | None = None) -> bool:
    """Whether a lease's holder is gone: a process of this host that no longer runs, or a
    lease not renewed for :data:`STALE_S`."""
    now = time.time() if now is None else now
    if record.get("host") == socket.gethostname():
        try:
            os.kill(int(record["pid"]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    return now - float(record.get("seen", 0)) > STALE_S


def describe(record: dict, now: float | None = None) -> str:
    """``koala colorize (pid 812 on archive-01, started 07:02:11 UTC, last seen 4 s ago)``."""
    now = time.time() if now is None else now
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.get("started", 0)))
    ago = max(0, round(now - float(record.get("seen", 0))))
    return (
        f"{record.get('command', 'a Koala run')} (pid {record.get('pid')} on "
        f"{record.get('host')}, started {started}, last seen {ago} s ago)"
    )


def take(output: str, command: str) -> Lease:
    """Hold ``output`` for this run (again, when this process holds it already); raise
    :class:`OutputBusy` naming the holder when another run holds it."""
    with _LOCK:
        held = _HELD.get(_key(output))
        if held is not None and not held.lost:
            held.holds += 1
            return held
        number, record = _latest(output)
        if record is not None and not is_stale(record):
            raise _busy(output, record)
        now = time.time()
        mine = {
            "command": command,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": uuid.uuid4().hex,
            "started": now,
            "seen": now,
        }
        uri = _lease_uri(output, number + 1)
        if not storage.create_exclusive(uri, json.dumps(mine).encode()):
            _, theirs = _latest(output)
            if theirs is None or theirs.get("token") != mine["token"]:  # a retried put of ours
                raise _busy(output, theirs or {"command": "another Koala run"})
        if number:
            storage.remove(_lease_uri(output, number))  # the stale one this run replaced
        lease = Lease(output, number + 1, mine)
        _HELD[_key(output)] = lease
    threading.Thread(target=_renewals, args=(lease,), daemon=True, name="koala-lease").start()
    return lease


def release(output: str) -> None:
    """Give back one hold of this process's lease on ``output`` (none held: nothing to do)."""
    with _LOCK:
        held = _HELD.get(_key(output))
    if held is not None:
        held.release()


def _busy(output: str, record: dict) -> OutputBusy:
    return OutputBusy(
        f"output {output!r} is in use by {describe(record)}; wait for it to end or give "
        "another --output"
    )


def _renewals(lease: Lease) -> None:
    while not lease.stop.wait(RENEW_S) and not lease.lost:
        try:
            lease.renew()
        except OSError:  # storage briefly away: the next renewal tries again
            continue
