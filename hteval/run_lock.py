"""One run at a time per output folder, and a write that fails as one clear error.

A run that writes a folder (`hteval.network_analysis.analyze`, `hteval.layer_comparison.compare_layers`,
`hteval.checkpoints.analyze_checkpoints`, a `hteval.tracker.Tracker`) holds an OS lock (`fcntl.flock`) on
FOLDER/.hteval.lock while it writes, so that a second run on the same folder is refused at once instead of
interleaving rows with the first. The file holds the holder's pid, host and start time for that message. The
operating system releases the lock when its holder exits, however it exits (a kill -9 included), so a lock is
never left stale; the file itself is removed on release and means nothing when found without a holder. A run
that spreads its work over sub-folders (one per checkpoint, one per tracked step) locks each sub-folder in turn,
so the run's own children never meet its lock on the parent.

Where the file system has no locks (some FUSE and SMB mounts answer ENOLCK or EOPNOTSUPP), the run warns and
goes on without one. docs/run-safety.md says what to expect on network file systems.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from hteval.errors import OutputError
from hteval.rowfile import RowFile, write_error

logger = logging.getLogger(__name__)

LOCK_FILE = ".hteval.lock"
#: flock's answers on file systems that have no locks: the run goes on unlocked
NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})
#: errors that only a write gives (a full disk or quota, a read-only file system, a file over the size limit):
#: whatever file a run was writing, they mean the folder cannot take the output
FULL_OR_READ_ONLY = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})

# the folders this process holds: a second lock on one is refused here, without touching the file (on NFS,
# where flock is a POSIX lock owned by the process, the file system would grant it and closing it would drop
# the first); a forked child closes its copies, so that it never keeps its parent's lock alive
_held: dict[str, RunLock] = {}
_held_guard = threading.RLock()


class RunLock:
    """The lock on `folder`: acquire() takes it or raises OutputError naming the holder; release() gives it back.
    `locked` says whether the OS lock is in force: False while released, and where the file system has none."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.locked = False
        self._fd: int | None = None
        self._created = False
        self._key = ""
        self._holder: dict = {}

    def acquire(self) -> RunLock:
        self._key = os.path.realpath(self.folder)
        with _held_guard:
            if self._key in _held:
                raise OutputError(_in_use(self.folder, _held[self._key].holder, same_process=True),
                                  path=str(self.folder))
            if self.folder.exists() and not self.folder.is_dir():
                raise OutputError(f"{self.folder} is a file, not a folder; choose another --out", path=str(self.folder))
            self._created = not self.folder.exists()
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._fd, self.locked = self._lock()
                self._write_holder()
            except OSError as err:
                self.release()
                raise write_error(self.path, err) from err
            except BaseException:
                self.release()
                raise
            _held[self._key] = self
        return self

    def release(self) -> None:
        with _held_guard:
            if self._fd is not None:
                if _held.get(self._key) is self:
                    del _held[self._key]
                # removed while still locked: a run that opened it meanwhile finds it gone once it gets the
                # lock, and locks a new file instead (`_lock`)
                try:
                    self.path.unlink()
                except OSError:
                    pass
                os.close(self._fd)
                self._fd, self.locked = None, False
            if self._created:  # a run refused or stopped before writing anything leaves no empty folder
                self._created = False
                try:
                    self.folder.rmdir()
                except OSError:
                    pass

    @property
    def held(self) -> bool:
        """Whether this lock is between acquire() and release() (locked, or going on where locks are missing)."""
        return self._fd is not None

    @property
    def holder(self) -> dict:
        """pid, host and start time of this lock's holder, as written in the lock file."""
        return self._holder

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _lock(self) -> tuple[int, bool]:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputError(_in_use(self.folder, holder), path=str(self.folder)) from None
            except OSError as err:
                if err.errno not in NO_LOCKS:
                    os.close(fd)
                    raise
                logger.warning("cannot lock %s (%s): this file system has no file locks, so the run goes on "
                               "without one; make sure no other hteval run writes to %s", self.path,
                               err.strerror, self.folder)
                return fd, False
            if _same_file(fd, self.path):
                return fd, True
            os.close(fd)  # its holder removed it between our open and our lock

    def _write_holder(self) -> None:
        self._holder = {"pid": os.getpid(), "host": socket.gethostname(),
                        "started": datetime.now().astimezone().isoformat(sep=" ", timespec="seconds")}
        data = json.dumps(self._holder).encode()
        os.ftruncate(self._fd, 0)
        if os.pwrite(self._fd, data, 0) != len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))


@contextmanager
def holding(folder: str | Path | None, table: RowFile | None = None) -> Iterator[RunLock | None]:
    """The lock on `folder` for the block (None: no folder, no lock), with `writing_to(folder, table)`."""
    if folder is None:
        yield None
        return
    lock = RunLock(folder).acquire()
    try:
        with writing_to(folder, table):
            yield lock
    finally:
        lock.release()


@contextmanager
def writing_to(folder: str | Path, table: RowFile | None = None) -> Iterator[None]:
    """A write in the block that fails because the disk is full or the folder read-only becomes an OutputError
    that names the file and says how many complete rows `table` keeps."""
    try:
        yield
    except OutputError as err:
        if err.errno is None or err.rows is not None or table is None or not isinstance(err.__cause__, OSError):
            raise
        raise write_error(err.path, err.__cause__, table) from err.__cause__
    except OSError as err:
        if err.errno not in FULL_OR_READ_ONLY:
            raise
        raise write_error(err.filename or folder, err, table) from err


def _in_use(folder: Path, holder: dict, *, same_process: bool = False) -> str:
    pid = holder.get("pid")
    host = holder.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    who = f"pid {pid}{where}, started {holder.get('started', 'at an unknown time')}" if pid else "pid unknown"
    if same_process:
        return (f"{folder} is in use by another hteval run in this process ({who}: a Tracker not yet closed, or a "
                "run in another thread); close or wait for it, or choose another --out")
    return f"{folder} is in use by another hteval run ({who}); wait for it or choose another --out"


def _read_holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):  # being written at this moment
        return {}
    return holder if isinstance(holder, dict) else {}


def _same_file(fd: int, path: Path) -> bool:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (found.st_dev, found.st_ino) == (mine.st_dev, mine.st_ino)


def _close_in_child() -> None:
    global _held_guard
    _held_guard = threading.RLock()  # another thread may have held it at the fork
    for lock in _held.values():
        if lock._fd is not None:
            os.close(lock._fd)
            lock._fd, lock.locked = None, False
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)

__all__ = ["LOCK_FILE", "RunLock", "holding", "writing_to"]
